using System.Diagnostics;
using System.Text;
using Warren.Ssh.Client;
using Warren.Ssh.Keys;
using Warren.Ssh.Tests.Keys;
using Xunit;

namespace Warren.Ssh.Tests.Interop;

/// <summary>
/// Our SshClient against the real OpenSSH server, run as <c>sshd -i</c> (inetd
/// mode) over a subprocess's stdin/stdout, so no port or root-owned daemon is needed.
/// </summary>
[Collection("interop")]
public sealed class SshClientAgainstSshdTests
{
    private const string Sshd = "/usr/sbin/sshd";

    private sealed class SshdInetd : IAsyncDisposable
    {
        private readonly SshKeygen _keys = new();
        public Process Process { get; }
        public SshPrivateKey UserKey { get; }
        public SshPublicKey HostKey { get; }

        public SshdInetd(string userKeyType = "ssh-ed25519", int? bits = null)
        {
            if (!File.Exists(Sshd)) throw new Xunit.Sdk.XunitException($"{Sshd} (openssh-server) is required for this interop test.");
            Directory.CreateDirectory("/run/sshd"); // privilege separation directory sshd insists on
            _keys.RunOk("-q", "-t", "ed25519", "-N", "", "-f", _keys.PathOf("host_ed25519"));
            SshPublicKey.TryParseOpenSsh(File.ReadAllText(_keys.PathOf("host_ed25519.pub")).Trim(), out var hostKey, out _);
            HostKey = hostKey!;
            UserKey = SshPrivateKey.Generate(userKeyType, bits);
            File.WriteAllText(_keys.PathOf("authorized_keys"), UserKey.PublicKey.ToOpenSshString("warren-test") + "\n");
            var config = $"""
                HostKey {_keys.PathOf("host_ed25519")}
                AuthorizedKeysFile {_keys.PathOf("authorized_keys")}
                PermitRootLogin yes
                StrictModes no
                UsePAM no
                PasswordAuthentication no
                KbdInteractiveAuthentication no
                PubkeyAuthentication yes
                PidFile none
                LogLevel ERROR
                """;
            File.WriteAllText(_keys.PathOf("sshd_config"), config);
            Process = ExternalProcess.Start(Sshd, ["-i", "-f", _keys.PathOf("sshd_config"), "-E", _keys.PathOf("sshd.log")]);
        }

        public Stream Stream => new ProcessDuplexStream(Process);

        public string Log => File.Exists(_keys.PathOf("sshd.log")) ? File.ReadAllText(_keys.PathOf("sshd.log")) : "";

        public async ValueTask DisposeAsync()
        {
            try { if (!Process.HasExited) Process.Kill(); } catch (InvalidOperationException) { }
            await Process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(30));
            Process.Dispose();
            _keys.Dispose();
        }
    }

    private static SshClientOptions Options(SshdInetd sshd) => new()
    {
        User = Environment.UserName,
        Keys = [sshd.UserKey],
        HostKeyValidator = k => ValueTask.FromResult(k.Equals(sshd.HostKey)),
    };

    private static async Task<string> ReadAllTextAsync(Warren.Ssh.Connection.SshChannel ch)
    {
        var ms = new MemoryStream();
        var buf = new byte[8192];
        for (int i = 0; i < 100_000; i++)
        {
            int n = await ch.ReadAsync(buf).AsTask().WaitAsync(TimeSpan.FromSeconds(60));
            if (n == 0) break;
            ms.Write(buf, 0, n);
        }
        return Encoding.UTF8.GetString(ms.ToArray());
    }

    [Theory]
    [InlineData("ssh-ed25519", null)]
    [InlineData("ecdsa-sha2-nistp256", null)]
    [InlineData("ssh-rsa", 2048)]
    public async Task Exec_EchoHi_ReturnsOutputAndExitStatus(string userKeyType, int? bits)
    {
        await using var sshd = new SshdInetd(userKeyType, bits);
        await using var client = await SshClient.ConnectAsync(sshd.Stream, Options(sshd)).WaitAsync(TimeSpan.FromSeconds(60));
        var ch = await client.ExecAsync("echo hi").WaitAsync(TimeSpan.FromSeconds(60));
        Assert.Equal("hi\n", await ReadAllTextAsync(ch));
        var exit = await ch.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(60));
        Assert.True(exit.ExitStatus == 0, sshd.Log);

        var failing = await client.ExecAsync("exit 7").WaitAsync(TimeSpan.FromSeconds(60));
        Assert.Equal(7u, (await failing.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(60))).ExitStatus);
    }

    [Fact]
    public async Task Exec_Cat_RoundTripsStdin()
    {
        await using var sshd = new SshdInetd();
        await using var client = await SshClient.ConnectAsync(sshd.Stream, Options(sshd)).WaitAsync(TimeSpan.FromSeconds(60));
        var ch = await client.ExecAsync("cat").WaitAsync(TimeSpan.FromSeconds(60));
        var data = new byte[3 * 1024 * 1024];
        new Random(7).NextBytes(data);
        var reader = Task.Run(async () =>
        {
            var ms = new MemoryStream();
            var buf = new byte[65536];
            int n;
            while ((n = await ch.ReadAsync(buf)) > 0) ms.Write(buf, 0, n);
            return ms.ToArray();
        });
        await ch.WriteAsync(data).AsTask().WaitAsync(TimeSpan.FromSeconds(120));
        await ch.SendEofAsync();
        var back = await reader.WaitAsync(TimeSpan.FromSeconds(120));
        Assert.Equal(data, back);
        Assert.Equal(0u, (await ch.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(60))).ExitStatus);
    }

    [Fact]
    public async Task WrongKey_FailsAuthentication()
    {
        await using var sshd = new SshdInetd();
        var options = new SshClientOptions
        {
            User = Environment.UserName,
            Keys = [Ed25519PrivateKey.Generate()],
            HostKeyValidator = k => ValueTask.FromResult(k.Equals(sshd.HostKey)),
        };
        await Assert.ThrowsAsync<Warren.Ssh.Auth.SshAuthenticationException>(() => SshClient.ConnectAsync(sshd.Stream, options).WaitAsync(TimeSpan.FromSeconds(60)));
    }
}

/// <summary>A process's stdout (read) and stdin (write) as one duplex stream.</summary>
internal sealed class ProcessDuplexStream(Process process) : Stream
{
    private readonly Stream _in = process.StandardOutput.BaseStream;
    private readonly Stream _out = process.StandardInput.BaseStream;

    public override bool CanRead => true;
    public override bool CanWrite => true;
    public override bool CanSeek => false;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
    public override int Read(byte[] buffer, int offset, int count) => _in.Read(buffer, offset, count);
    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) => _in.ReadAsync(buffer, cancellationToken);
    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) => _in.ReadAsync(buffer, offset, count, cancellationToken);
    public override void Write(byte[] buffer, int offset, int count) { _out.Write(buffer, offset, count); _out.Flush(); }
    public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        await _out.WriteAsync(buffer, cancellationToken);
        await _out.FlushAsync(cancellationToken);
    }
    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) => WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();
    public override void Flush() => _out.Flush();
    public override Task FlushAsync(CancellationToken cancellationToken) => _out.FlushAsync(cancellationToken);
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            try { _out.Dispose(); } catch (IOException) { }
            _in.Dispose();
        }
        base.Dispose(disposing);
    }
}
