using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Logging.Abstractions;
using Warren.Edge.Http;
using Warren.Edge.Http.EventLoop;
using Warren.Edge.Tls;
using Warren.Edge.Tests.Support;

namespace Warren.Edge.Tests.Http.EventLoop;

/// <summary>The event loops' own lifetime: descriptors are closed once, by whoever gets there first.</summary>
public sealed class NativeHttpsFrontDoorTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("warren-native-").FullName;

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    [Fact]
    public void StopThenDispose_ClosesEachListenerOnce_LeavingReusedDescriptorsAlone()
    {
        Assert.True(NativeHttpsFrontDoor.IsSupported, "the native transport needs Linux and OpenSSL 3");
        var options = new HttpFrontDoorOptions { HttpsEndpoints = new() { new IPEndPoint(IPAddress.Loopback, 0) } };
        using var certificates = TlsCertificateProvider.Create(new TlsOptions
        {
            DataDirectory = _dir,
            VmDomain = options.VmDomain,
            ControlHost = options.ControlHost,
        });
        var native = new NativeHttpsFrontDoor(options, certificates, () => throw new InvalidOperationException("no requests here"),
            new HandOffConnectionListenerFactory(), new KestrelServerLimits(), new SourceConnectionLimit(0, NullLogger.Instance), NullLogger.Instance);
        native.Bind(loops: 2);
        int port = native.BoundEndPoints[0].Port;
        native.Start();
        using (var probe = new TcpClient())
            probe.Connect(IPAddress.Loopback, port); // it listens
        native.Stop(TimeSpan.FromSeconds(1)); // the loops close their listening sockets as they stop

        // New descriptors take the lowest free numbers: the listeners' old ones among them.
        var reused = Enumerable.Range(0, 8).Select(_ => new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp)).ToList();
        try
        {
            native.Dispose(); // must not close those numbers a second time
            foreach (var socket in reused)
            {
                socket.Bind(new IPEndPoint(IPAddress.Loopback, 0)); // fails with EBADF on a descriptor closed under it
                Assert.NotEqual(0, ((IPEndPoint)socket.LocalEndPoint!).Port);
            }
        }
        finally
        {
            foreach (var socket in reused)
                socket.Dispose();
        }
        using var after = new TcpClient();
        Assert.ThrowsAny<SocketException>(() => after.Connect(IPAddress.Loopback, port));
    }

    [Fact]
    public void ADescriptorDisposedTwice_IsClosedOnce_LeavingItsReusedNumberAlone()
    {
        Assert.True(NativeHttpsFrontDoor.IsSupported, "the native transport needs Linux and OpenSSL 3");
        var first = LinuxSockets.CreateEventFd();
        first.Dispose();
        // The lowest free number: very likely the one just closed.
        var reused = Enumerable.Range(0, 8).Select(_ => new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp)).ToList();
        try
        {
            first.Dispose();
            foreach (var socket in reused)
            {
                socket.Bind(new IPEndPoint(IPAddress.Loopback, 0)); // fails with EBADF on a descriptor closed under it
                Assert.NotEqual(0, ((IPEndPoint)socket.LocalEndPoint!).Port);
            }
        }
        finally
        {
            foreach (var socket in reused)
                socket.Dispose();
        }
        Assert.Throws<ObjectDisposedException>(() => LinuxSockets.Peek(first));
    }

    [Fact]
    public void TheLoopsClock_IsTheInjectedTimeProvider()
    {
        var options = new HttpFrontDoorOptions { HttpsEndpoints = new() { new IPEndPoint(IPAddress.Loopback, 0) } };
        using var certificates = TlsCertificateProvider.Create(new TlsOptions
        {
            DataDirectory = _dir,
            VmDomain = options.VmDomain,
            ControlHost = options.ControlHost,
        });
        var clock = new ManualTimeProvider();
        using var native = new NativeHttpsFrontDoor(options, certificates, () => throw new InvalidOperationException("no requests here"),
            new HandOffConnectionListenerFactory(), new KestrelServerLimits(), new SourceConnectionLimit(0, NullLogger.Instance), NullLogger.Instance, clock);
        long before = native.NowMs;
        clock.Advance(TimeSpan.FromSeconds(90));
        Assert.Equal(before + 90_000, native.NowMs);
    }
}
