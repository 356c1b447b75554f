using System.Globalization;
using System.Net;
using Docker.DotNet;
using Docker.DotNet.Models;
using Warren.Platform.Runtime;

namespace Warren.Runtime.Docker;

public sealed partial class DockerVmRuntime
{
    // ------------------------------------------------------------------ images

    /// <summary>
    /// Resolves a user's image reference to exactly that image: the reference must parse as a named reference
    /// (<see cref="ImageReference"/>), runtime snapshots are not images, and whatever the engine
    /// answers for the name is checked to carry that name or digest. The engine itself falls back to an image-id
    /// prefix search for a name it does not know (Docker's daemon/images GetImage), which would hand out any
    /// image on the host (another account's snapshot) for a reference like "b"; the check makes that impossible.
    /// A reference that names a registry host, or any reference with a credential, is pulled every time
    /// (<see cref="DockerRuntimeOptions.AlwaysPullRegistryImages"/>): a cached image is then still only handed to
    /// callers the registry lets pull it.
    /// </summary>
    public async Task<ImageInfo> PrepareImageAsync(string image, RegistryCredential? auth, CancellationToken ct)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(image);
        if (!ImageReference.TryParse(image, out var reference) || IsSnapshot(reference))
            throw new DockerRuntimeException(DockerRuntimeErrors.ImageNotFound, ImageMessages.NotFound(image));
        bool pull = auth != null || (_options.AlwaysPullRegistryImages && reference.HasExplicitDomain);
        // The engine answers a pull by digest from its store when it holds that image, without asking the
        // registry; the registry must still say yes to this caller.
        if (pull && reference.Digest != null) await ConfirmWithRegistryAsync(image, reference, auth, ct);
        ImageInspectResponse? local = pull ? null : await TryInspectImageAsync(reference, ct);
        if (local == null)
        {
            await PullAsync(image, reference, auth, ct);
            local = await TryInspectImageAsync(reference, ct)
                ?? throw new DockerRuntimeException(DockerRuntimeErrors.ImageNotFound, ImageMessages.NotFound(image));
        }
        return ToImageInfo(image, reference, local);
    }

    /// <summary>Warren's own commits (<see cref="SnapshotRepository"/>): addressed through VM records, never by users.</summary>
    private static bool IsSnapshot(ImageReference reference)
        => reference.Domain == ImageReference.DefaultDomain
           && reference.Path.StartsWith(SnapshotRepository(""), StringComparison.Ordinal);

    /// <summary>How long the registry may take to answer a manifest check.</summary>
    private static readonly TimeSpan RegistryCheckTimeout = TimeSpan.FromMinutes(2);
    /// <summary>Largest engine answer to a manifest check read (a descriptor and platforms: a few KiB).</summary>
    private const int MaxRegistryCheckAnswerBytes = 1 << 20;

    /// <summary>
    /// Asks the registry, through the engine, for <paramref name="reference"/>'s manifest with the caller's credential
    /// (Docker Engine API <c>GET /distribution/{name}/json</c>, which always goes to the registry), and checks that it
    /// is the digest asked for. Refusal, absence and a different digest throw like a failed pull.
    /// </summary>
    private async Task ConfirmWithRegistryAsync(string image, ImageReference reference, RegistryCredential? auth, CancellationToken ct)
    {
        using var http = EngineHttpClient();
        using var request = new HttpRequestMessage(HttpMethod.Get, "/distribution/" + reference.Canonical + "/json");
        // As for pulls: the credential rides in this one request's X-Registry-Auth header and nowhere else.
        if (auth != null)
            request.Headers.Add("X-Registry-Auth", EncodeRegistryAuth(RegistryAuthConfig(reference, auth)));
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(RegistryCheckTimeout);
        HttpResponseMessage response;
        try
        {
            response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, timeout.Token);
        }
        catch (HttpRequestException e)
        {
            throw new DockerRuntimeException(DockerRuntimeErrors.EngineUnavailable, $"container engine unavailable: {e.Message}", e);
        }
        using (response)
        {
            var body = await ReadBoundedAsync(response.Content, MaxRegistryCheckAnswerBytes, timeout.Token);
            if (!response.IsSuccessStatusCode) throw PullFailure(image, response.StatusCode, body, null);
            string? digest = null;
            try
            {
                using var json = System.Text.Json.JsonDocument.Parse(body);
                if (json.RootElement.TryGetProperty("Descriptor", out var d) && d.TryGetProperty("digest", out var v)) digest = v.GetString();
            }
            catch (System.Text.Json.JsonException) { }
            if (!string.Equals(digest, reference.Digest, StringComparison.OrdinalIgnoreCase))
                throw new DockerRuntimeException(DockerRuntimeErrors.ImageNotFound, ImageMessages.NotFound(image));
        }
    }

    /// <summary>A client for one raw Engine API request (Docker.DotNet has no distribution endpoint), over the same endpoint.</summary>
    private HttpClient EngineHttpClient()
    {
        var endpoint = _options.Endpoint ?? DefaultEndpoint();
        if (endpoint.Scheme == "unix")
        {
            string socket = endpoint.LocalPath;
            var handler = new SocketsHttpHandler
            {
                ConnectCallback = async (_, ct) =>
                {
                    var s = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.Unix, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Unspecified);
                    try
                    {
                        await s.ConnectAsync(new System.Net.Sockets.UnixDomainSocketEndPoint(socket), ct);
                        return new System.Net.Sockets.NetworkStream(s, ownsSocket: true);
                    }
                    catch
                    {
                        s.Dispose();
                        throw;
                    }
                },
            };
            return new HttpClient(handler) { BaseAddress = new Uri("http://docker.engine") };
        }
        return new HttpClient { BaseAddress = new UriBuilder(endpoint) { Scheme = "http" }.Uri };
    }

    /// <summary>X-Registry-Auth: base64url of the JSON auth config (Docker Engine API, "Authentication").</summary>
    private static string EncodeRegistryAuth(AuthConfig config)
    {
        var json = System.Text.Json.JsonSerializer.SerializeToUtf8Bytes(new Dictionary<string, string?>
        {
            ["username"] = config.Username,
            ["password"] = config.Password,
            ["serveraddress"] = config.ServerAddress,
        });
        return Convert.ToBase64String(json).Replace('+', '-').Replace('/', '_');
    }

    private static async Task<string> ReadBoundedAsync(HttpContent content, int maxBytes, CancellationToken ct)
    {
        await using var stream = await content.ReadAsStreamAsync(ct);
        var buffer = new byte[maxBytes];
        int total = 0, n;
        while (total < maxBytes && (n = await stream.ReadAsync(buffer.AsMemory(total), ct)) > 0) total += n;
        return System.Text.Encoding.UTF8.GetString(buffer, 0, total);
    }

    private static AuthConfig RegistryAuthConfig(ImageReference reference, RegistryCredential auth) => new()
    {
        Username = auth.Username,
        Password = auth.Secret,
        ServerAddress = reference.Domain,
    };

    private async Task PullAsync(string image, ImageReference reference, RegistryCredential? auth, CancellationToken ct)
    {
        // The credential goes into the X-Registry-Auth header of this one request and nowhere else:
        // not into logs, exception messages or labels.
        var authConfig = auth == null ? new AuthConfig() : RegistryAuthConfig(reference, auth);
        string? streamError = null;
        var progress = new SyncProgress<JSONMessage>(m =>
        {
            if (!string.IsNullOrEmpty(m.ErrorMessage)) streamError = m.ErrorMessage;
            else if (m.Error != null && !string.IsNullOrEmpty(m.Error.Message)) streamError = m.Error.Message;
        });
        LogPulling(image, auth != null);
        try
        {
            await _client.Images.CreateImageAsync(
                new ImagesCreateParameters { FromImage = reference.Repository, Tag = reference.Digest ?? reference.Tag ?? ImageReference.DefaultTag },
                authConfig, progress, ct);
        }
        catch (DockerApiException e)
        {
            throw PullFailure(image, e.StatusCode, e.ResponseBody, e);
        }
        catch (HttpRequestException e)
        {
            throw new DockerRuntimeException(DockerRuntimeErrors.EngineUnavailable, $"container engine unavailable: {e.Message}", e);
        }
        if (streamError != null) throw PullFailure(image, HttpStatusCode.OK, streamError, null);
    }

    private static DockerRuntimeException PullFailure(string image, HttpStatusCode status, string? body, Exception? inner)
    {
        string detail = body ?? "";
        bool unauthorized = status is HttpStatusCode.Unauthorized or HttpStatusCode.Forbidden
            || detail.Contains("unauthorized", StringComparison.OrdinalIgnoreCase)
            || detail.Contains("authentication required", StringComparison.OrdinalIgnoreCase)
            || detail.Contains("no basic auth credentials", StringComparison.OrdinalIgnoreCase)
            || detail.Contains("denied", StringComparison.OrdinalIgnoreCase);
        return unauthorized
            ? new DockerRuntimeException(DockerRuntimeErrors.ImageUnauthorized, ImageMessages.Unauthorized(image), inner)
            : new DockerRuntimeException(DockerRuntimeErrors.ImageNotFound, ImageMessages.NotFound(image), inner);
    }

    /// <summary>
    /// The local image with exactly this name (or repository and digest), or null. Asks by the fully qualified
    /// name, and accepts the answer only when one of its tags or digests is that reference: never an id prefix.
    /// </summary>
    private async Task<ImageInspectResponse?> TryInspectImageAsync(ImageReference reference, CancellationToken ct)
    {
        ImageInspectResponse image;
        try
        {
            image = await _client.Images.InspectImageAsync(reference.Canonical, ct);
        }
        catch (DockerImageNotFoundException)
        {
            return null;
        }
        catch (DockerApiException e) when (e.StatusCode is HttpStatusCode.NotFound or HttpStatusCode.BadRequest)
        {
            return null;
        }
        return Carries(image, reference) ? image : null;
    }

    /// <summary>Whether the engine's image has <paramref name="reference"/> among its tags (or, with a digest, its repository digests).</summary>
    internal static bool Carries(ImageInspectResponse image, ImageReference reference)
    {
        if (reference.Digest is { } digest)
            return RepositoryDigest(image, reference) == digest;
        foreach (var tag in image.RepoTags ?? [])
            if (ImageReference.TryParse(tag, out var t) && t.SameAs(reference)) return true;
        return false;
    }

    /// <summary>The manifest digest the image was pulled by in the reference's repository, or null (built locally).</summary>
    private static string? RepositoryDigest(ImageInspectResponse image, ImageReference reference)
    {
        foreach (var repoDigest in image.RepoDigests ?? [])
            if (ImageReference.TryParse(repoDigest, out var d) && d.Digest is not null && d.Repository == reference.Repository)
                return d.Digest;
        return null;
    }

    internal static ImageInfo ToImageInfo(string reference, ImageReference parsed, ImageInspectResponse image)
    {
        var config = image.Config;
        var ports = new List<int>();
        if (config?.ExposedPorts != null)
        {
            foreach (var key in config.ExposedPorts.Keys)
            {
                // Keys are "80/tcp", "53/udp", or a bare "8080" (tcp).
                var parts = key.Split('/');
                if ((parts.Length == 1 || parts[1].Equals("tcp", StringComparison.OrdinalIgnoreCase))
                    && int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out int port) && port is > 0 and < 65536)
                    ports.Add(port);
            }
        }
        ports.Sort();
        // The manifest digest of this repository (what "repo@digest" names), else the image id of a local build.
        string digest = RepositoryDigest(image, parsed) ?? image.ID;
        return new ImageInfo(
            reference,
            digest,
            ports,
            string.IsNullOrEmpty(config?.User) ? null : config.User,
            config?.Entrypoint?.ToList() ?? [],
            config?.Cmd?.ToList() ?? [],
            config?.Env?.ToList() ?? []);
    }
}
