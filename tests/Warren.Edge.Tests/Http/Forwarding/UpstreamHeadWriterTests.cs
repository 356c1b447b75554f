using System.Net;
using System.Text;
using CsCheck;
using Microsoft.AspNetCore.Http;
using Warren.Edge.Http.Forwarding;

namespace Warren.Edge.Tests.Http.Forwarding;

/// <summary>
/// One writer of the VM's request head: for the same anonymous GET, the lane (from the client's bytes) and the full
/// path (from Kestrel's parse) send the VM the same request line and the same fields.
/// </summary>
public sealed class UpstreamHeadWriterTests
{
    private static readonly string[] Names =
        ["Accept", "accept-language", "User-Agent", "X-Forwarded-For", "x-forwarded-for", "X-Forwarded-Proto", "X-Forwarded-Host",
         "X_Under", "X-ExeDev-Email", "Forwarded", "X-Real-IP", "TE", "Keep-Alive", "Proxy-Connection", "Trailer", "If-None-Match", "X-App"];

    private static readonly Gen<(string Name, string Value)> GenField =
        Gen.Select(Gen.Int[0, Names.Length - 1].Select(i => Names[i]), Gen.Char["abcXYZ0129 ,;=./-"].Array[1, 16].Select(c => new string(c).Trim()).Where(v => v.Length > 0));

    [Fact]
    public void Property_TheLaneAndTheFullPath_WriteTheSameHead()
    {
        int compared = 0;
        GenField.Array[0, 10].Sample(fields =>
        {
            var text = new StringBuilder("GET /p?q=1 HTTP/1.1\r\nHost: pub.box.localhost\r\n");
            foreach (var (name, value) in fields)
                text.Append(name).Append(": ").Append(value).Append("\r\n");
            text.Append("\r\n");
            var head = Encoding.ASCII.GetBytes(text.ToString());
            var parsed = new Http1RequestHead();
            if (!Http1LaneRules.Inspect(head, parsed, out var request))
                return; // not the lane's: the full path alone writes it
            using var lane = new ByteBuffer(1024, 64 * 1024);
            Assert.True(Http1LaneRules.WriteUpstreamHead(head, parsed, head.AsSpan(request.HostStart, request.HostLength), "192.0.2.7"u8, lane));

            var context = new DefaultHttpContext();
            context.Request.Method = "GET";
            context.Request.Scheme = "https";
            context.Request.Path = "/p";
            context.Request.QueryString = new QueryString("?q=1");
            context.Request.Host = new HostString("pub.box.localhost");
            context.Connection.RemoteIpAddress = IPAddress.Parse("192.0.2.7");
            foreach (var (name, value) in fields)
                context.Request.Headers.Append(name, value);
            using var full = new ByteBuffer(1024, 64 * 1024);
            Assert.True(Http1Forwarder.TryWriteRequestHead(context, state: null, full, out _, out _, out string? error), error);

            var laneLines = Encoding.ASCII.GetString(lane.WrittenSpan).Split("\r\n");
            var fullLines = Encoding.ASCII.GetString(full.WrittenSpan).Split("\r\n");
            Assert.Equal(fullLines[0], laneLines[0]);
            Assert.Equal(fullLines.Order(StringComparer.OrdinalIgnoreCase), laneLines.Order(StringComparer.OrdinalIgnoreCase));
            Interlocked.Increment(ref compared);
        }, iter: 1000);
        Assert.True(compared > 500, $"only {compared} heads were the lane's");
    }
}
