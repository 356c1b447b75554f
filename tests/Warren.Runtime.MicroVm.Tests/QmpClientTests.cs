using System.Net.Sockets;
using System.Text;
using Warren.Runtime.MicroVm.Qmp;
using Xunit;

namespace Warren.Runtime.MicroVm.Tests;

/// <summary>The QMP client against a scripted server on a unix socket (QEMU's answers as its QMP specification shows them).</summary>
public sealed class QmpClientTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("wqmp-").FullName;
    private string SocketPath => Path.Combine(_directory, "qmp.sock");

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    /// <summary>Serves one client: the greeting, then for each command line read the next scripted answer (a list of lines).</summary>
    private Task ServeAsync(params string[][] answers)
    {
        var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        listener.Bind(new UnixDomainSocketEndPoint(SocketPath));
        listener.Listen(1);
        return Task.Run(async () =>
        {
            using (listener)
            using (var connection = await listener.AcceptAsync())
            await using (var stream = new NetworkStream(connection))
            {
                var reader = new StreamReader(stream);
                await stream.WriteAsync(Encoding.UTF8.GetBytes("{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n"));
                foreach (var answer in answers)
                {
                    if (await reader.ReadLineAsync() == null) return;
                    foreach (var line in answer) await stream.WriteAsync(Encoding.UTF8.GetBytes(line + "\r\n"));
                }
                await reader.ReadLineAsync();
            }
        });
    }

    private static CancellationToken Bound() => new CancellationTokenSource(TimeSpan.FromSeconds(30)).Token;

    [Fact]
    public async Task Commands_SkipEvents_AndReportErrors()
    {
        var server = ServeAsync(
            ["{\"return\": {}}"],
            ["{\"event\": \"RESUME\", \"timestamp\": {\"seconds\": 1, \"microseconds\": 2}}", "{\"return\": {\"status\": \"running\", \"running\": true}}"],
            ["{\"error\": {\"class\": \"DeviceNotFound\", \"desc\": \"Device 'nope' not found\"}}"]);
        await using (var qmp = await QmpClient.ConnectAsync(SocketPath, Bound()))
        {
            var status = await qmp.ExecuteAsync("query-status", null, Bound());
            Assert.Equal("running", status!["status"]!.GetValue<string>());
            var e = await Assert.ThrowsAsync<QmpException>(() => qmp.ExecuteAsync("block_resize", new() { ["device"] = "nope", ["size"] = 1 }, Bound()));
            Assert.Equal("DeviceNotFound", e.ErrorClass);
        }
        await server.WaitAsync(Bound());
    }

    [Fact]
    public async Task AnswersThatAreNotQmp_AreErrors_NotCrashes()
    {
        var server = ServeAsync(["{\"return\": {}}"], ["not json at all"], ["[1, 2]"], [new string('x', 2 * 1024 * 1024)]);
        await using var qmp = await QmpClient.ConnectAsync(SocketPath, Bound());
        Assert.Equal("BadAnswer", (await Assert.ThrowsAsync<QmpException>(() => qmp.ExecuteAsync("a", null, Bound()))).ErrorClass);
        Assert.Equal("BadAnswer", (await Assert.ThrowsAsync<QmpException>(() => qmp.ExecuteAsync("b", null, Bound()))).ErrorClass);
        Assert.Equal("LineTooLong", (await Assert.ThrowsAsync<QmpException>(() => qmp.ExecuteAsync("c", null, Bound()))).ErrorClass);
        _ = server;
    }

    /// <summary>
    /// A command cancelled before its answer can be answered onto the next session: those lines (before the greeting,
    /// or carrying another command's id) are skipped, never taken for this session's answers.
    /// </summary>
    [Fact]
    public async Task AnswersOfAnEarlierSession_AreSkipped()
    {
        var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        listener.Bind(new UnixDomainSocketEndPoint(SocketPath));
        listener.Listen(1);
        var server = Task.Run(async () =>
        {
            using (listener)
            using (var connection = await listener.AcceptAsync())
            await using (var stream = new NetworkStream(connection))
            {
                var reader = new StreamReader(stream);
                await stream.WriteAsync(Encoding.UTF8.GetBytes("{\"return\": {}, \"id\": 7}\r\n{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n"));
                for (int i = 0; i < 2; i++)
                {
                    string line = (await reader.ReadLineAsync())!;
                    string id = System.Text.Json.Nodes.JsonNode.Parse(line)!["id"]!.ToJsonString();
                    await stream.WriteAsync(Encoding.UTF8.GetBytes("{\"return\": {\"stale\": true}, \"id\": 7}\r\n"));
                    await stream.WriteAsync(Encoding.UTF8.GetBytes("{\"return\": {\"mine\": " + id + "}, \"id\": " + id + "}\r\n"));
                }
                await reader.ReadLineAsync();
            }
        });
        await using (var qmp = await QmpClient.ConnectAsync(SocketPath, Bound()))
        {
            var answer = await qmp.ExecuteAsync("query-status", null, Bound());
            Assert.NotNull(answer!["mine"]);
            Assert.Null(answer["stale"]);
        }
        await server.WaitAsync(Bound());
    }
}
