using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Warren.Runtime.MicroVm.Qmp;

/// <summary>
/// A small client of the QEMU Machine Protocol (QEMU's "QMP Specification", docs/interop/qmp-spec): one JSON object per
/// line over the VM's unix socket; after the greeting, <c>qmp_capabilities</c> leaves negotiation mode, then each
/// command gets <c>{"return": …}</c> or <c>{"error": {"class", "desc"}}</c>, with asynchronous <c>{"event": …}</c> lines
/// in between (skipped). QEMU runs device emulation for an untrusted guest, so its lines are bounded too.
/// </summary>
internal sealed class QmpClient : IAsyncDisposable
{
    /// <summary>Longest line read; QEMU's answers to the commands used here are a few hundred bytes.</summary>
    private const int MaxLineBytes = 1024 * 1024;

    /// <summary>Most answers of an earlier session skipped before the one awaited (one per cancelled command at most).</summary>
    private const int MaxStaleLines = 16;

    /// <summary>Command ids, unique in this process (random start: a restarted daemon does not reuse its predecessor's).</summary>
    private static long s_nextId = Random.Shared.NextInt64(1L << 40);

    private readonly NetworkStream _stream;
    private readonly byte[] _buffer = new byte[64 * 1024];
    private readonly MemoryStream _line = new();
    private int _start, _end;

    private QmpClient(Socket socket)
    {
        _stream = new NetworkStream(socket, ownsSocket: true);
    }

    public static async Task<QmpClient> ConnectAsync(string socketPath, CancellationToken ct)
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            await socket.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), ct).ConfigureAwait(false);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
        var client = new QmpClient(socket);
        try
        {
            // The greeting opens every session, but a command whose client went away before its answer (a
            // cancelled call) can still be answered onto the next connection: such lines come first and are skipped.
            int stale = 0;
            while ((await client.ReadObjectAsync(ct).ConfigureAwait(false))["QMP"] == null)
                if (++stale > MaxStaleLines) throw new QmpException("GreetingMissing", "the QMP socket did not greet");
            await client.ExecuteAsync("qmp_capabilities", null, ct).ConfigureAwait(false);
            return client;
        }
        catch
        {
            await client.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Runs one command; returns its "return" value, or throws <see cref="QmpException"/> with QEMU's error.</summary>
    public async Task<JsonNode?> ExecuteAsync(string command, JsonObject? arguments, CancellationToken ct)
    {
        // QMP echoes a command's "id" in its answer: an answer carrying another id belongs to an earlier session's
        // command (see ConnectAsync) and is skipped rather than taken for this one's.
        long id = Interlocked.Increment(ref s_nextId);
        var request = new JsonObject { ["execute"] = command, ["id"] = id };
        if (arguments != null) request["arguments"] = arguments;
        await _stream.WriteAsync(Encoding.UTF8.GetBytes(request.ToJsonString() + "\n"), ct).ConfigureAwait(false);
        int stale = 0;
        while (true)
        {
            var answer = await ReadObjectAsync(ct).ConfigureAwait(false);
            if (answer["event"] != null) continue;
            if (answer["id"] is JsonValue answerId && !(answerId.TryGetValue(out long echoed) && echoed == id))
            {
                if (++stale > MaxStaleLines) throw new QmpException("BadAnswer", "QMP answers for other commands only");
                continue;
            }
            if (answer.TryGetPropertyValue("return", out var value)) return value;
            if (answer["error"] is JsonObject error)
                throw new QmpException(error["class"]?.GetValue<string>() ?? "GenericError", error["desc"]?.GetValue<string>() ?? "unknown error");
            throw new QmpException("BadAnswer", "QMP answer with neither return nor error");
        }
    }

    private async Task<JsonObject> ReadObjectAsync(CancellationToken ct)
    {
        _line.SetLength(0);
        while (true)
        {
            if (_start == _end)
            {
                _start = 0;
                _end = await _stream.ReadAsync(_buffer, ct).ConfigureAwait(false);
                if (_end == 0) throw new IOException("QMP socket closed");
            }
            int newline = Array.IndexOf(_buffer, (byte)'\n', _start, _end - _start);
            int stop = newline < 0 ? _end : newline;
            _line.Write(_buffer, _start, stop - _start);
            if (_line.Length > MaxLineBytes) throw new QmpException("LineTooLong", $"QMP line over {MaxLineBytes} bytes");
            _start = newline < 0 ? _end : newline + 1;
            if (newline < 0) continue;
            try
            {
                return JsonNode.Parse(_line.GetBuffer().AsSpan(0, (int)_line.Length)) as JsonObject
                       ?? throw new QmpException("BadAnswer", "QMP line is not an object");
            }
            catch (JsonException e)
            {
                throw new QmpException("BadAnswer", $"QMP line is not JSON: {e.Message}");
            }
        }
    }

    public ValueTask DisposeAsync() => _stream.DisposeAsync();
}

/// <summary>An error answer from QEMU (its error class and description), or a QMP stream we cannot read.</summary>
internal sealed class QmpException(string errorClass, string description) : Exception($"QMP {errorClass}: {description}")
{
    public string ErrorClass { get; } = errorClass;
}
