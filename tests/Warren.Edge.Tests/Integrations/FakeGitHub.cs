using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace Warren.Edge.Tests.Integrations;

/// <summary>
/// A local stand-in for GitHub over HTTPS (<see cref="HostName"/>, a throwaway CA): git's smart HTTP protocol served
/// by Git's own CGI program, <c>git http-backend</c> (Git's documentation: git-http-backend), for the bare
/// repositories under <see cref="Root"/> (<c>OWNER/REPO.git</c>), and the one REST route the tests use,
/// <c>GET /api/repos/OWNER/REPO</c> (so the API base is <c>https://HOST:PORT/api</c>, like GitHub Enterprise's
/// <c>/api/v3</c>). Like GitHub, it wants the token as Basic <c>x-access-token:TOKEN</c> for git and as Bearer for
/// the API (401 otherwise), and it records the Authorization of every request.
/// </summary>
public sealed class FakeGitHub : IAsyncDisposable
{
    public const string HostName = "github.integ-fake.test";
    private static readonly TimeSpan CgiTimeout = TimeSpan.FromSeconds(60);
    private const long MaxBodyBytes = 128 * 1024 * 1024; // above an integration API call's 32 MiB: pushes may be larger

    private WebApplication _app = null!;

    public sealed record Received(string Method, string PathAndQuery, string? Authorization, int Status);

    public required string Root { get; init; }
    public required string Token { get; init; }
    public ConcurrentQueue<Received> Requests { get; } = new();
    public int Port { get; private set; }
    public string CaPemPath { get; private set; } = "";
    public string WebUrl => $"https://{HostName}:{Port}";
    public string ApiUrl => WebUrl + "/api";

    public static async Task<FakeGitHub> StartAsync(string directory, string token)
    {
        var fake = new FakeGitHub { Root = Path.Combine(directory, "repos"), Token = token };
        Directory.CreateDirectory(fake.Root);
        (var leaf, fake.CaPemPath) = await TestCertificateAuthority.IssueAsync(HostName, directory);
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Limits.MaxRequestBodySize = MaxBodyBytes;
            k.Listen(IPAddress.Loopback, 0, l => l.UseHttps(leaf));
        });
        fake._app = builder.Build();
        fake._app.Run(fake.HandleAsync);
        await fake._app.StartAsync();
        fake.Port = new Uri(fake._app.Urls.First()).Port;
        return fake;
    }

    /// <summary>A bare repository OWNER/REPO.git with one commit on main holding README.md = <paramref name="readme"/>.</summary>
    public async Task CreateRepositoryAsync(string owner, string name, string readme)
    {
        string bare = Path.Combine(Root, owner, name + ".git");
        string work = Directory.CreateTempSubdirectory("warren-fake-github-work-").FullName;
        try
        {
            await GitAsync(Root, "init", "--bare", "-q", "-b", "main", bare);
            await GitAsync(bare, "config", "http.receivepack", "true");
            await GitAsync(work, "init", "-q", "-b", "main");
            await File.WriteAllTextAsync(Path.Combine(work, "README.md"), readme);
            await GitAsync(work, "add", "README.md");
            await GitAsync(work, "-c", "user.name=Fake", "-c", "user.email=fake@example.com", "commit", "-q", "-m", "initial");
            await GitAsync(work, "push", "-q", bare, "main");
        }
        finally { Directory.Delete(work, recursive: true); }
    }

    /// <summary>The subject lines of OWNER/REPO's main branch, newest first.</summary>
    public async Task<string> LogAsync(string owner, string name)
        => await GitAsync(Path.Combine(Root, owner, name + ".git"), "log", "--format=%s", "main");

    private static async Task<string> GitAsync(string directory, params string[] args)
    {
        var psi = new ProcessStartInfo("git") { WorkingDirectory = directory, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["GIT_CONFIG_NOSYSTEM"] = "1";
        psi.Environment["HOME"] = directory;
        using var p = Process.Start(psi)!;
        string stdout = await p.StandardOutput.ReadToEndAsync();
        string stderr = await p.StandardError.ReadToEndAsync();
        await p.WaitForExitAsync();
        if (p.ExitCode != 0) throw new InvalidOperationException($"git {string.Join(' ', args)}: {stderr}");
        return stdout;
    }

    private async Task HandleAsync(HttpContext context)
    {
        var request = context.Request;
        string raw = context.Features.Get<Microsoft.AspNetCore.Http.Features.IHttpRequestFeature>()!.RawTarget;
        string? authorization = request.Headers.Authorization.Count > 0 ? request.Headers.Authorization.ToString() : null;
        string path = request.Path.Value ?? "/";
        if (path.StartsWith("/api/", StringComparison.Ordinal))
            await ApiAsync(context, path["/api".Length..], authorization);
        else
            await GitAsync(context, path, authorization);
        Requests.Enqueue(new Received(request.Method, raw, authorization, context.Response.StatusCode));
    }

    private async Task ApiAsync(HttpContext context, string path, string? authorization)
    {
        context.Response.ContentType = "application/json";
        if (authorization != "Bearer " + Token)
        {
            context.Response.StatusCode = 401;
            await context.Response.WriteAsync("{\"message\":\"Bad credentials\"}");
            return;
        }
        var parts = path.Split('/', StringSplitOptions.RemoveEmptyEntries);
        if (parts.Length == 3 && parts[0] == "repos" && Directory.Exists(Path.Combine(Root, parts[1], parts[2] + ".git")))
        {
            await context.Response.WriteAsync(JsonSerializer.Serialize(new { full_name = parts[1] + "/" + parts[2], @private = true }));
            return;
        }
        context.Response.StatusCode = 404;
        await context.Response.WriteAsync("{\"message\":\"Not Found\"}");
    }

    /// <summary>One CGI run of <c>git http-backend</c> (RFC 3875): the request's meta-variables in, its headers and body out.</summary>
    private async Task GitAsync(HttpContext context, string path, string? authorization)
    {
        string expected = "Basic " + Convert.ToBase64String(Encoding.UTF8.GetBytes("x-access-token:" + Token));
        if (authorization != expected)
        {
            context.Response.StatusCode = 401;
            context.Response.Headers.WWWAuthenticate = "Basic realm=\"GitHub\"";
            return;
        }
        var request = context.Request;
        using var body = new MemoryStream();
        await request.Body.CopyToAsync(body);
        var psi = new ProcessStartInfo("git", "http-backend")
        {
            RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        psi.Environment["GIT_PROJECT_ROOT"] = Root;
        psi.Environment["GIT_HTTP_EXPORT_ALL"] = "1";
        psi.Environment["GIT_CONFIG_NOSYSTEM"] = "1";
        psi.Environment["REMOTE_USER"] = "x-access-token";
        psi.Environment["REMOTE_ADDR"] = context.Connection.RemoteIpAddress?.ToString() ?? "127.0.0.1";
        psi.Environment["REQUEST_METHOD"] = request.Method;
        psi.Environment["PATH_INFO"] = path;
        psi.Environment["QUERY_STRING"] = request.QueryString.HasValue ? request.QueryString.Value![1..] : "";
        psi.Environment["CONTENT_TYPE"] = request.ContentType ?? "";
        psi.Environment["CONTENT_LENGTH"] = body.Length.ToString(System.Globalization.CultureInfo.InvariantCulture);
        if (request.Headers.ContentEncoding.Count > 0) psi.Environment["HTTP_CONTENT_ENCODING"] = request.Headers.ContentEncoding.ToString();
        if (request.Headers["Git-Protocol"].Count > 0) psi.Environment["GIT_PROTOCOL"] = request.Headers["Git-Protocol"].ToString();
        using var cgi = Process.Start(psi)!;
        using var deadline = new CancellationTokenSource(CgiTimeout);
        var feed = Task.Run(async () =>
        {
            body.Position = 0;
            await body.CopyToAsync(cgi.StandardInput.BaseStream, deadline.Token);
            cgi.StandardInput.Close();
        });
        var errors = cgi.StandardError.ReadToEndAsync(deadline.Token);
        using var output = new MemoryStream();
        await cgi.StandardOutput.BaseStream.CopyToAsync(output, deadline.Token);
        await feed;
        await cgi.WaitForExitAsync(deadline.Token);
        await errors;

        // CGI response: header lines up to an empty line, "Status: NNN reason" among them (RFC 3875 §6.3).
        byte[] bytes = output.ToArray();
        int end = IndexOf(bytes, "\r\n\r\n"u8, out int separator);
        if (end < 0) end = IndexOf(bytes, "\n\n"u8, out separator);
        if (end < 0) { context.Response.StatusCode = 502; return; }
        context.Response.StatusCode = 200;
        foreach (var line in Encoding.ASCII.GetString(bytes, 0, end).Split('\n'))
        {
            int colon = line.IndexOf(':');
            if (colon <= 0) continue;
            string name = line[..colon].Trim(), value = line[(colon + 1)..].Trim();
            if (name.Equals("Status", StringComparison.OrdinalIgnoreCase)) context.Response.StatusCode = int.Parse(value.Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture);
            else context.Response.Headers.Append(name, value);
        }
        await context.Response.Body.WriteAsync(bytes.AsMemory(end + separator));
    }

    private static int IndexOf(byte[] haystack, ReadOnlySpan<byte> needle, out int length)
    {
        length = needle.Length;
        return haystack.AsSpan().IndexOf(needle);
    }

    public async ValueTask DisposeAsync()
    {
        if (_app is not null)
        {
            try { await _app.StopAsync(); } catch (Exception) { }
            await _app.DisposeAsync();
        }
    }
}
