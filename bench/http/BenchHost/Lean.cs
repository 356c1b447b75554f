using System.Buffers;
using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text;

static class Lean
{
    static readonly ConcurrentBag<Socket> Idle = new();
    public static async Task Handle(HttpContext ctx, int port)
    {
        if (!Idle.TryTake(out var s))
        {
            s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            await s.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port));
        }
        var buf = ArrayPool<byte>.Shared.Rent(16384);
        try
        {
            var req = ctx.Request;
            var sb = new StringBuilder(256);
            sb.Append(req.Method).Append(' ').Append(req.Path.Value).Append(req.QueryString.Value).Append(" HTTP/1.1\r\n");
            foreach (var h in req.Headers) sb.Append(h.Key).Append(": ").Append(h.Value.ToString()).Append("\r\n");
            sb.Append("X-Forwarded-For: ").Append(ctx.Connection.RemoteIpAddress).Append("\r\nX-Forwarded-Proto: https\r\n\r\n");
            int n = Encoding.ASCII.GetBytes(sb.ToString(), buf);
            await s.SendAsync(buf.AsMemory(0, n));
            int have = 0;
            int headEnd;
            while (true)
            {
                int r = await s.ReceiveAsync(buf.AsMemory(have));
                if (r == 0) throw new IOException("eof");
                have += r;
                headEnd = buf.AsSpan(0, have).IndexOf("\r\n\r\n"u8);
                if (headEnd >= 0) break;
            }
            var head = Encoding.ASCII.GetString(buf, 0, headEnd);
            var lines = head.Split("\r\n");
            ctx.Response.StatusCode = int.Parse(lines[0].AsSpan(9, 3));
            long len = 0;
            foreach (var l in lines.AsSpan(1))
            {
                int c = l.IndexOf(':');
                var k = l[..c]; var v = l[(c + 1)..].Trim();
                if (k.Equals("Content-Length", StringComparison.OrdinalIgnoreCase)) { len = long.Parse(v); ctx.Response.ContentLength = len; }
                else if (k.Equals("Connection", StringComparison.OrdinalIgnoreCase) || k.Equals("Keep-Alive", StringComparison.OrdinalIgnoreCase)) { }
                else ctx.Response.Headers.Append(k, v);
            }
            int bodyHave = have - headEnd - 4;
            var w = ctx.Response.BodyWriter;
            if (bodyHave > 0) await w.WriteAsync(buf.AsMemory(headEnd + 4, bodyHave));
            long left = len - bodyHave;
            while (left > 0)
            {
                int r = await s.ReceiveAsync(buf.AsMemory(0, (int)Math.Min(buf.Length, left)));
                if (r == 0) throw new IOException("eof");
                await w.WriteAsync(buf.AsMemory(0, r));
                left -= r;
            }
            Idle.Add(s);
        }
        finally { ArrayPool<byte>.Shared.Return(buf); }
    }
}
