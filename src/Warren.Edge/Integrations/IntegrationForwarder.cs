using System.Buffers;
using System.Net.Http.Headers;
using System.Text;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Warren.Edge.Http;
using Warren.Edge.Http.Forwarding;
using Warren.Edge.Metadata;
using Warren.Platform;
using Warren.Platform.Integrations;
using Warren.Platform.Vms;

namespace Warren.Edge.Integrations;

/// <summary>
/// Sends one VM request on to an http-proxy integration's target, or a github integration's repository on GitHub
/// (<see cref="GitHubRoute"/>), with the integration's secrets added on the way out (exe.dev's docs: http-proxy,
/// vm-to-vm, github).
/// </summary>
/// <remarks>
/// Steps: 1. the upstream URL — the target's origin and path prefix followed by the request's path and query exactly
/// as sent; for a peer, the target VM's own address and port with Host <c>VM.&lt;vm-domain&gt;</c>; 2. request headers —
/// hop-by-hop fields, Host, X-Forwarded-*, any client <c>X-Exedev-*</c> (<see cref="ForwardedHeaderRules"/>) and
/// Proxy-Authorization dropped; when the integration injects credentials the caller's Authorization is dropped too
/// and each injected header replaces a caller's of the same name; a peer call gets <c>X-Exedev-Source-Vm</c>, the
/// caller as identified by its network path; 3. the body, at most <see cref="IntegrationLimits.MaxRequestBodyBytes"/> (a github integration's git transfer: <see cref="IntegrationOptions.GitMaxTransferBytes"/>)
/// (413 past it); 4. the answer streamed back, hop-by-hop fields dropped, at most
/// <see cref="IntegrationLimits.MaxResponseBodyBytes"/>. Any failure to reach the target is 502
/// <c>upstream request failed</c> with nothing about the target in it.
/// A peer's managed key is presented to the target's token check and access stage (<see cref="PeerAccessCheck"/>)
/// and, like a token consumed by the HTTPS proxy, not passed on to the target VM, which sees the identity headers the
/// front door would add instead.
/// </remarks>
public sealed partial class IntegrationForwarder
{
    public const string SourceVmHeader = "X-Exedev-Source-Vm";
    public const string UpstreamFailed = "upstream request failed";
    // The front door's identity headers (exe.dev's docs: login with exe).
    private const string UserIdHeader = "X-ExeDev-UserID";
    private const string EmailHeader = "X-ExeDev-Email";
    private const string TokenCtxHeader = "X-ExeDev-Token-Ctx";

    private static readonly UriCreationOptions s_asSent = new() { DangerousDisablePathAndQueryCanonicalization = true };

    private readonly IntegrationService _integrations;
    private readonly VmService _vms;
    private readonly IWebUpstreamLocator _upstream;
    private readonly IntegrationHttpClients _clients;
    private readonly IntegrationOptions _options;
    private readonly PlatformOptions _platform;
    private readonly PeerAccessCheck _peerAccess;
    private readonly ILogger _log;

    public IntegrationForwarder(IntegrationService integrations, VmService vms, IWebUpstreamLocator upstream, IntegrationHttpClients clients,
        IntegrationOptions options, PlatformOptions platform, PeerAccessCheck peerAccess, ILogger<IntegrationForwarder>? log = null)
    {
        _peerAccess = peerAccess;
        _integrations = integrations;
        _vms = vms;
        _upstream = upstream;
        _clients = clients;
        _options = options;
        _platform = platform;
        _log = (ILogger?)log ?? NullLogger.Instance;
    }

    public async Task ForwardAsync(HttpContext context, MetadataCaller caller, VmRecord callerVm, Integration integration, CancellationToken ct)
    {
        var request = context.Request;

        // :: Step 1 — where to.
        string pathAndQuery = RequestTarget(context);
        Uri upstreamUri;
        string? hostHeader = null;
        HttpClient client;
        PeerAccess peerAccess = default;
        string? githubToken = null;
        GitHubService githubService = default;
        var secrets = _integrations.OpenSecrets(integration);
        if (integration.IsPeer)
        {
            var peer = integration.PeerVmId is { } id ? await _vms.GetByIdAsync(id, ct).ConfigureAwait(false) : null;
            var address = peer is null || peer.AccountId != integration.AccountId ? null : await _upstream.GetAddressAsync(peer.Id, ct).ConfigureAwait(false);
            if (peer is null || address is null)
            {
                await IntegrationRequestHandler.WriteErrorAsync(context, StatusCodes.Status502BadGateway, UpstreamFailed, ct).ConfigureAwait(false);
                return;
            }
            // The managed key, presented to the target's token check and access stage, must admit the call.
            peerAccess = await _peerAccess.AuthorizeAsync(secrets.PeerToken, peer.Name, ct).ConfigureAwait(false);
            if (!peerAccess.Allowed)
            {
                await IntegrationRequestHandler.WriteErrorAsync(context, StatusCodes.Status403Forbidden, peerAccess.Error!, ct).ConfigureAwait(false);
                return;
            }
            upstreamUri = new Uri($"http://{(address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? $"[{address}]" : address.ToString())}:{peer.ProxyPort}{pathAndQuery}", s_asSent);
            hostHeader = $"{peer.Name}.{_platform.VmDomain}";
            client = _clients.Peer;
        }
        else if (integration.Type == IntegrationType.GitHub)
        {
            var repository = integration.Repository;
            var route = repository is null ? null : GitHubRoute.Map(pathAndQuery, repository);
            if (route is not { } r)
            {
                await IntegrationRequestHandler.WriteErrorAsync(context, StatusCodes.Status403Forbidden,
                    $"this integration reaches only {repository}: git over HTTP and /repos/{repository}", ct).ConfigureAwait(false);
                return;
            }
            githubToken = await _integrations.OpenGitHubTokenAsync(integration.AccountId, ct).ConfigureAwait(false);
            if (githubToken is null)
            {
                await IntegrationRequestHandler.WriteErrorAsync(context, StatusCodes.Status403Forbidden,
                    "GitHub is not set up for this account: integrations setup github --token TOKEN", ct).ConfigureAwait(false);
                return;
            }
            githubService = r.Service;
            var origin = new Uri(r.Service == GitHubService.Git ? _options.GitHubUrl : _options.GitHubApiUrl);
            upstreamUri = new Uri(origin.GetLeftPart(UriPartial.Authority) + origin.AbsolutePath.TrimEnd('/') + r.PathAndQuery, s_asSent);
            client = _clients.External;
        }
        else
        {
            var target = new Uri(integration.Target!);
            string prefix = target.AbsolutePath.TrimEnd('/');
            // As sent: System.Uri would otherwise unescape percent-encoded unreserved characters (RFC 3986 §6.2.2.2).
            upstreamUri = new Uri(target.GetLeftPart(UriPartial.Authority) + prefix + pathAndQuery, s_asSent);
            client = _clients.External;
        }

        // Git's transfers (a clone's pack, a push) are larger and longer than API calls: GitHub's own push limit.
        bool gitTransfer = githubToken is not null && githubService == GitHubService.Git;
        long maxRequestBody = gitTransfer ? _options.GitMaxTransferBytes : IntegrationLimits.MaxRequestBodyBytes;
        long maxResponseBody = gitTransfer ? _options.GitMaxTransferBytes : IntegrationLimits.MaxResponseBodyBytes;
        if (request.ContentLength > maxRequestBody)
        {
            await IntegrationRequestHandler.WriteErrorAsync(context, StatusCodes.Status413PayloadTooLarge, "request body too large", ct).ConfigureAwait(false);
            return;
        }
        if (context.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } max)
            max.MaxRequestBodySize = maxRequestBody;

        // :: Step 2 — headers.
        bool injectsAuth = integration.IsPeer || githubToken is not null || secrets.Bearer is not null || secrets.BasicPassword is not null || integration.BasicUser is not null
            || secrets.Headers.Keys.Any(k => k.Equals("Authorization", StringComparison.OrdinalIgnoreCase));
        using var message = new HttpRequestMessage(new HttpMethod(request.Method), upstreamUri) { Version = new Version(1, 1) };
        bool hasBody = request.ContentLength > 0 || request.Headers.TransferEncoding.Count > 0;
        if (hasBody) message.Content = new StreamContent(request.Body, 64 * 1024);
        foreach (var header in request.Headers)
        {
            string name = header.Key;
            if (name.Equals("Cookie", StringComparison.OrdinalIgnoreCase))
            {
                message.Headers.TryAddWithoutValidation(name, header.Value.ToArray());
                continue;
            }
            if (ForwardedHeaderRules.IsReplacedRequestHeader(name, injectsAuth)
                || name.Equals("Proxy-Authorization", StringComparison.OrdinalIgnoreCase)
                || ForwardedHeaderRules.IsNamedBy(request.Headers.Connection, name)
                || secrets.Headers.ContainsKey(name))
                continue;
            if (IsContentHeader(name))
            {
                if (message.Content is not null) message.Content.Headers.TryAddWithoutValidation(name, header.Value.ToArray());
                continue;
            }
            message.Headers.TryAddWithoutValidation(name, header.Value.ToArray());
        }
        if (request.ContentLength is { } length && message.Content is not null) message.Content.Headers.ContentLength = length;
        if (hostHeader is not null) message.Headers.Host = hostHeader;
        foreach (var (name, value) in secrets.Headers)
        {
            if (IsContentHeader(name)) message.Content?.Headers.TryAddWithoutValidation(name, value);
            else message.Headers.TryAddWithoutValidation(name, value);
        }
        if (secrets.Bearer is { } bearer) message.Headers.Authorization = new AuthenticationHeaderValue("Bearer", bearer);
        if (integration.BasicUser is { } user)
            message.Headers.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes($"{user}:{secrets.BasicPassword}")));
        if (githubToken is not null)
        {
            // GitHub's docs (authenticating with a token): git over HTTPS takes it as the Basic password of
            // "x-access-token", the REST API as a Bearer token.
            message.Headers.Authorization = githubService == GitHubService.Git
                ? new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes("x-access-token:" + githubToken)))
                : new AuthenticationHeaderValue("Bearer", githubToken);
        }
        if (integration.IsPeer)
        {
            message.Headers.TryAddWithoutValidation(SourceVmHeader, caller.VmName);
            // What the target's front door adds for a request its token admitted (exe.dev's docs: login with exe).
            message.Headers.TryAddWithoutValidation(UserIdHeader, peerAccess.User!.UserId);
            message.Headers.TryAddWithoutValidation(EmailHeader, peerAccess.User.Email);
            if (peerAccess.TokenCtx is { } ctx) message.Headers.TryAddWithoutValidation(TokenCtxHeader, ctx);
        }

        // :: Step 3 — send, bounded in time.
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(ct);
        deadline.CancelAfter(gitTransfer ? _options.GitTransferTimeout : _options.UpstreamTimeout);
        HttpResponseMessage response;
        try
        {
            response = await client.SendAsync(message, HttpCompletionOption.ResponseHeadersRead, deadline.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is HttpRequestException or OperationCanceledException or IOException or Microsoft.AspNetCore.Http.BadHttpRequestException
                                  && !ct.IsCancellationRequested)
        {
            if (e is Microsoft.AspNetCore.Http.BadHttpRequestException { StatusCode: StatusCodes.Status413PayloadTooLarge })
            {
                await IntegrationRequestHandler.WriteErrorAsync(context, StatusCodes.Status413PayloadTooLarge, "request body too large", ct).ConfigureAwait(false);
                return;
            }
            // The integration's name only: the target, its address and the secrets stay out of logs.
            Log.UpstreamFailed(_log, integration.Name, caller.VmName, e.GetType().Name);
            await IntegrationRequestHandler.WriteErrorAsync(context, StatusCodes.Status502BadGateway, UpstreamFailed, ct).ConfigureAwait(false);
            return;
        }

        // :: Step 4 — the answer.
        using (response)
        {
            context.Response.StatusCode = (int)response.StatusCode;
            CopyResponseHeaders(response.Headers, context.Response.Headers, response.Headers.Connection);
            CopyResponseHeaders(response.Content.Headers, context.Response.Headers, response.Headers.Connection);
            if (HttpMethods.IsHead(request.Method)) return;
            try
            {
                await using var body = await response.Content.ReadAsStreamAsync(deadline.Token).ConfigureAwait(false);
                await CopyBoundedAsync(body, context.Response.Body, maxResponseBody, deadline.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is HttpRequestException or OperationCanceledException or IOException or InvalidDataException && !ct.IsCancellationRequested)
            {
                // Headers are gone already: cut the connection so the VM sees a truncated answer, not a short one.
                Log.UpstreamFailed(_log, integration.Name, caller.VmName, e.GetType().Name);
                context.Abort();
            }
        }
    }

    /// <summary>The request's path and query as the VM sent them (undecoded), for the target unchanged.</summary>
    private static string RequestTarget(HttpContext context)
    {
        string? raw = context.Features.Get<IHttpRequestFeature>()?.RawTarget;
        if (raw is { Length: > 0 } && raw[0] == '/') return raw;
        return (context.Request.PathBase + context.Request.Path).ToUriComponent() + context.Request.QueryString.ToUriComponent();
    }

    private static bool IsContentHeader(string name)
        => name.StartsWith("Content-", StringComparison.OrdinalIgnoreCase) || name.Equals("Expires", StringComparison.OrdinalIgnoreCase)
           || name.Equals("Last-Modified", StringComparison.OrdinalIgnoreCase) || name.Equals("Allow", StringComparison.OrdinalIgnoreCase);

    private static void CopyResponseHeaders(HttpHeaders from, IHeaderDictionary to, HttpHeaderValueCollection<string> connection)
    {
        foreach (var (name, values) in from.NonValidated)
        {
            if (IsHopByHop(name) || connection.Contains(name, StringComparer.OrdinalIgnoreCase)) continue;
            to.Append(name, values.ToArray());
        }
    }

    private static bool IsHopByHop(string name)
    {
        if (name.Length > 32) return false;
        Span<byte> bytes = stackalloc byte[name.Length];
        return Encoding.ASCII.GetBytes(name, bytes) == name.Length && ForwardedHeaderRules.IsHopByHopResponseHeader(bytes)
               && !name.Equals("Content-Length", StringComparison.OrdinalIgnoreCase);
    }

    private static async Task CopyBoundedAsync(Stream from, Stream to, long max, CancellationToken ct)
    {
        byte[] buffer = ArrayPool<byte>.Shared.Rent(64 * 1024);
        try
        {
            long total = 0;
            int n;
            while ((n = await from.ReadAsync(buffer, ct).ConfigureAwait(false)) > 0)
            {
                total += n;
                if (total > max) throw new InvalidDataException("response body over the limit");
                await to.WriteAsync(buffer.AsMemory(0, n), ct).ConfigureAwait(false);
            }
        }
        finally { ArrayPool<byte>.Shared.Return(buffer); }
    }

    /// <summary>Integration events: 46xx, next to EdgeEventIds' blocks (DNS 41xx, HTTP 42xx, TLS 43xx).</summary>
    private static partial class Log
    {
        [LoggerMessage(EventId = 4601, Level = LogLevel.Warning, Message = "Integration {Integration} from VM {Vm}: upstream request failed ({Error})")]
        public static partial void UpstreamFailed(ILogger logger, string integration, string vm, string error);
    }
}
