using System.Net;
using System.Net.Sockets;
using System.Net.WebSockets;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace Warren.Edge.Tests.Http;

/// <summary>
/// A plain-HTTP web server standing in for a VM: on a random 127.x.y.z address, a default port
/// and one alternate port in 3000–9999. It echoes what it received as JSON.
/// </summary>
internal sealed class TestUpstream : IAsyncDisposable
{
    /// <summary>Attempts at finding a free random loopback address and alternate port.</summary>
    private const int MaxBindAttempts = 20;

    private WebApplication _app = null!;
    private int _requests;

    public string Id { get; private init; } = "";
    public IPAddress Address { get; private set; } = IPAddress.Loopback;
    public int Port { get; private set; }
    public int AltPort { get; private set; }
    /// <summary>Requests that reached this upstream.</summary>
    public int Requests => Volatile.Read(ref _requests);

    public static async Task<TestUpstream> StartAsync(string id)
    {
        var random = Random.Shared;
        for (int attempt = 1; ; attempt++)
        {
            var upstream = new TestUpstream { Id = id };
            var address = new IPAddress(new byte[] { 127, (byte)random.Next(1, 255), (byte)random.Next(1, 255), (byte)random.Next(2, 255) });
            int alt = random.Next(3000, 10000);
            try
            {
                await upstream.StartOnAsync(address, alt);
                return upstream;
            }
            catch (Exception ex) when (ex is IOException or InvalidOperationException && attempt < MaxBindAttempts)
            {
                await upstream.DisposeAsync();
            }
        }
    }

    private async Task StartOnAsync(IPAddress address, int altPort)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Limits.MaxRequestBodySize = null;
            k.Listen(address, 0);
            k.Listen(address, altPort);
        });
        _app = builder.Build();
        _app.UseWebSockets();
        _app.Run(HandleAsync);
        await _app.StartAsync();
        Address = address;
        AltPort = altPort;
        var bound = _app.Urls.Select(u => new Uri(u).Port).ToArray();
        Port = bound.Single(p => p != altPort);
    }

    private async Task HandleAsync(HttpContext context)
    {
        Interlocked.Increment(ref _requests);
        var request = context.Request;
        switch (request.Path.Value)
        {
            case "/ws" when context.WebSockets.IsWebSocketRequest:
                using (var socket = await context.WebSockets.AcceptWebSocketAsync())
                {
                    var buffer = new byte[4096];
                    while (true)
                    {
                        var r = await socket.ReceiveAsync(buffer, CancellationToken.None);
                        if (r.MessageType == WebSocketMessageType.Close)
                        {
                            await socket.CloseAsync(WebSocketCloseStatus.NormalClosure, "bye", CancellationToken.None);
                            return;
                        }
                        await socket.SendAsync(buffer.AsMemory(0, r.Count), r.MessageType, r.EndOfMessage, CancellationToken.None);
                    }
                }
            case "/ws-headers" when context.WebSockets.IsWebSocketRequest:
                // The upgrade request's fields as one JSON message: what the tunnel let through.
                using (var socket = await context.WebSockets.AcceptWebSocketAsync())
                {
                    var seen = request.Headers.ToDictionary(h => h.Key.ToLowerInvariant(), h => h.Value.ToString());
                    await socket.SendAsync(JsonSerializer.SerializeToUtf8Bytes(seen), WebSocketMessageType.Text, true, CancellationToken.None);
                    await socket.CloseAsync(WebSocketCloseStatus.NormalClosure, "bye", CancellationToken.None);
                    return;
                }
            case "/upload":
                long total = 0;
                long sum = 0;
                var chunk = new byte[64 * 1024];
                int read;
                while ((read = await request.Body.ReadAsync(chunk)) > 0)
                {
                    total += read;
                    for (int i = 0; i < read; i++)
                        sum += chunk[i];
                }
                await context.Response.WriteAsync($"{total} {sum}");
                return;
            case "/setcookie":
                context.Response.Headers.Append("Set-Cookie", "a=1; Domain=box.localhost; Path=/");
                context.Response.Headers.Append("Set-Cookie", "b=2; path=/; domain=.other.example; HttpOnly");
                await context.Response.WriteAsync("cookies");
                return;
            case "/stream":
                for (int i = 0; i < 5; i++)
                {
                    await context.Response.WriteAsync($"chunk{i}\n");
                    await context.Response.Body.FlushAsync();
                }
                return;
            default:
                var headers = request.Headers.ToDictionary(h => h.Key.ToLowerInvariant(), h => h.Value.ToString());
                context.Response.ContentType = "application/json";
                await context.Response.WriteAsync(JsonSerializer.Serialize(new Dictionary<string, object>
                {
                    ["id"] = Id,
                    ["port"] = context.Connection.LocalPort,
                    ["method"] = request.Method,
                    ["path"] = request.Path.Value + request.QueryString.Value,
                    ["protocol"] = request.Protocol,
                    ["headers"] = headers,
                }));
                return;
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_app is not null)
        {
            try { await _app.StopAsync(); } catch (Exception) { }
            await _app.DisposeAsync();
        }
    }

    /// <summary>A loopback port with nothing listening (bound then released).</summary>
    public static int UnusedPort()
    {
        using var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        s.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)s.LocalEndPoint!).Port;
    }
}
