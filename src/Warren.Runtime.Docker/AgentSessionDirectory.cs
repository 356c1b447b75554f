using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using Microsoft.Win32.SafeHandles;
using Warren.Runtime.Agent;

namespace Warren.Runtime.Docker;

/// <summary>
/// The host side of <c>&lt;AgentSocketDirectory&gt;/&lt;vmId&gt;/</c> (docs/AGENT-PROTOCOL.md, "Where it lives"): the
/// directory and its token, and connecting to the agent's socket.
/// <para>
/// The token file is bind-mounted read-only at <c>/.warren/token</c>; the socket lives in the VM's run volume (a
/// size-limited tmpfs), whose host mountpoint the runtime passes to <see cref="TryConnectAsync(string, string, CancellationToken)"/>.
/// VMs created before the run volume bind-mount this whole directory read-write at <c>/.warren/run</c> and serve
/// <c>agent.sock</c> in it (<see cref="SocketPath"/>). Either way root inside the VM can replace <c>agent.sock</c>
/// (and, in the old layout, <c>token</c>) with anything, e.g. a symlink to a host file or a host socket, which the
/// daemon (root on the host) would otherwise follow. So neither is opened by path: the token is opened with
/// O_NOFOLLOW|O_NONBLOCK and must be a 64-byte file, and the socket is opened with O_PATH|O_NOFOLLOW and connected to
/// through <c>/proc/self/fd/N</c>, which names that very inode (a symlink there is refused like a stale socket).
/// </para>
/// </summary>
internal sealed partial class AgentSessionDirectory
{
    public const string SocketName = "agent.sock";
    public const string TokenName = "token";
    /// <summary>sun_path is 108 bytes with its terminating NUL; the protocol uses the socket only when the path fits.</summary>
    public const int MaxSocketPathBytes = 107;

    /// <summary>Only the daemon's user enters a VM's directory; the token is the daemon's secret.</summary>
    private const UnixFileMode DirectoryMode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;
    private const UnixFileMode TokenMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
    private const int TokenRandomBytes = AgentProtocol.TokenBytes / 2;

    public AgentSessionDirectory(string root)
    {
        if (!Path.IsPathFullyQualified(root)) throw new ArgumentException($"agent socket directory must be an absolute path: {root}", nameof(root));
        Root = Path.TrimEndingDirectorySeparator(root);
    }

    public string Root { get; }

    public string VmDirectory(string vmId) => Path.Combine(Root, vmId);
    /// <summary>The socket in the VM's directory: where VMs created before the run volume serve it.</summary>
    public string SocketPath(string vmId) => Path.Combine(Root, vmId, SocketName);
    /// <summary>The token file, bind-mounted read-only into the VM (and, in the old layout, inside the mounted directory).</summary>
    public string TokenPath(string vmId) => Path.Combine(Root, vmId, TokenName);

    /// <summary>
    /// Creates the VM's directory (0700) and its token (0600) unless a valid token is there already: a second
    /// create racing the first, or a VM recreated by rename, must keep the token the agent may have read.
    /// </summary>
    public void Prepare(string vmId)
    {
        DockerVmRuntime.ValidateVmId(vmId);
        // Unix sockets, modes and O_PATH: the session socket is a Linux host feature.
        if (OperatingSystem.IsWindows()) throw new PlatformNotSupportedException("agent session sockets need a Unix host");
        if (!Directory.Exists(Root)) Directory.CreateDirectory(Root, DirectoryMode);
        string directory = VmDirectory(vmId);
        Directory.CreateDirectory(directory, DirectoryMode);
        File.SetUnixFileMode(directory, DirectoryMode);
        // A socket left by a VM of the old layout (directory mounted at /.warren/run) would be tried before the run
        // volume's; the VM being created here serves in its run volume. File.Delete unlinks the entry, never a target.
        File.Delete(SocketPath(vmId));

        Span<byte> token = stackalloc byte[AgentProtocol.TokenBytes];
        try
        {
            if (TryReadToken(vmId, token)) return;
            // Missing or damaged: replace the entry itself (File.Delete removes a symlink, never its target).
            string path = TokenPath(vmId);
            File.Delete(path);
            Span<byte> random = stackalloc byte[TokenRandomBytes];
            RandomNumberGenerator.Fill(random);
            EncodeHex(random, token);
            CryptographicOperations.ZeroMemory(random);
            // CreateNew is O_CREAT|O_EXCL: it never follows a symlink planted in between.
            using var file = new FileStream(path, new FileStreamOptions
            {
                Mode = FileMode.CreateNew,
                Access = FileAccess.Write,
                Share = FileShare.None,
                UnixCreateMode = TokenMode,
            });
            file.Write(token);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(token);
        }
    }

    /// <summary>Removes the VM's directory (token, stale socket, anything the guest left there). Idempotent.</summary>
    public void Delete(string vmId)
    {
        DockerVmRuntime.ValidateVmId(vmId);
        try
        {
            // Recursive delete unlinks symlinks rather than descending into them.
            Directory.Delete(VmDirectory(vmId), recursive: true);
        }
        catch (DirectoryNotFoundException) { }
    }

    /// <summary>
    /// Reads the VM's token into <paramref name="token"/> (64 bytes). False when there is none or it is not a
    /// 64-byte regular file of lowercase hex (missing directory: a VM created before the socket directory was configured).
    /// </summary>
    public bool TryReadToken(string vmId, Span<byte> token)
    {
        if (token.Length != AgentProtocol.TokenBytes) throw new ArgumentException("token buffer must be 64 bytes", nameof(token));
        // O_NONBLOCK: a FIFO planted in place of the token must not block the open.
        int fd = Native.Open(TokenPath(vmId), Native.O_RDONLY | Native.O_NOFOLLOW | Native.O_NONBLOCK | Native.O_CLOEXEC);
        if (fd < 0) return false;
        using var handle = new SafeFileHandle((IntPtr)fd, ownsHandle: true);
        try
        {
            // A device, FIFO or /proc file reports another size; only the regular file we wrote is 64 bytes.
            if (RandomAccess.GetLength(handle) != AgentProtocol.TokenBytes) return false;
            // One byte more than needed tells a file that grew after the size check.
            Span<byte> read = stackalloc byte[AgentProtocol.TokenBytes + 1];
            try
            {
                int n = RandomAccess.Read(handle, read, 0);
                if (n != AgentProtocol.TokenBytes || !IsLowerHex(read[..n])) return false;
                read[..n].CopyTo(token);
                return true;
            }
            finally
            {
                CryptographicOperations.ZeroMemory(read);
            }
        }
        catch (IOException)
        {
            return false;
        }
        catch (Exception e) when (e is UnauthorizedAccessException or NotSupportedException)
        {
            // NotSupported: a FIFO or socket (unseekable) in place of the token.
            return false;
        }
    }

    /// <summary>
    /// Connects to the VM's agent socket. A null socket, meaning "use Docker exec", comes with the reason: the path
    /// is too long for sun_path, there is no socket (ENOENT), nothing listens on it (ECONNREFUSED: agent not up yet,
    /// a stale socket of a stopped VM, or not a socket at all), or the daemon may not connect (EACCES: it runs as
    /// another user than the VM's root, so it could never use the socket; Docker exec still works).
    /// </summary>
    /// <para><c>Absent</c> is true when there is no socket at the path at all (or the path is too long), as opposed to one
    /// that refuses: the runtime then looks for the socket in the VM's run volume.</para>
    public Task<(Socket? Socket, string? Unusable, bool Absent)> TryConnectAsync(string vmId, CancellationToken ct) =>
        TryConnectAsync(vmId, SocketPath(vmId), ct);

    /// <summary>Connects to the agent socket at <paramref name="path"/> (the VM's run volume), as <see cref="TryConnectAsync(string, CancellationToken)"/>.</summary>
    public async Task<(Socket? Socket, string? Unusable, bool Absent)> TryConnectAsync(string vmId, string path, CancellationToken ct)
    {
        if (!Path.IsPathFullyQualified(path)) return (null, $"the socket path is not absolute: {path}", true);
        if (Encoding.UTF8.GetByteCount(path) > MaxSocketPathBytes)
            return (null, $"the socket path is longer than sun_path allows ({MaxSocketPathBytes} bytes)", true);
        int fd = Native.Open(path, Native.O_PATH | Native.O_NOFOLLOW | Native.O_CLOEXEC);
        if (fd < 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            if (errno is Native.ENOENT or Native.ENOTDIR) return (null, "no session socket (agent not started yet)", true);
            throw new DockerRuntimeException(DockerRuntimeErrors.AgentSessionFailed,
                $"cannot open the session socket of VM {vmId}: {Marshal.GetPInvokeErrorMessage(errno)}");
        }
        using var pinned = new SafeFileHandle((IntPtr)fd, ownsHandle: true);
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            await socket.ConnectAsync(new UnixDomainSocketEndPoint(FormattableString.Invariant($"/proc/self/fd/{fd}")), ct).ConfigureAwait(false);
            return (socket, null, false);
        }
        catch (SocketException e) when (e.SocketErrorCode is SocketError.ConnectionRefused or SocketError.AddressNotAvailable)
        {
            // AddressNotAvailable is .NET's name for ENOENT on connect().
            socket.Dispose();
            return (null, "nothing listens on the session socket (agent not started yet, or VM stopped)", false);
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.AccessDenied)
        {
            socket.Dispose();
            return (null, "permission denied on the session socket (the daemon is not root)", false);
        }
        catch (SocketException e)
        {
            socket.Dispose();
            throw new DockerRuntimeException(DockerRuntimeErrors.AgentSessionFailed, $"cannot connect to the session socket of VM {vmId}: {e.Message}", e);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    private static void EncodeHex(ReadOnlySpan<byte> bytes, Span<byte> hex)
    {
        ReadOnlySpan<byte> digits = "0123456789abcdef"u8;
        for (int i = 0; i < bytes.Length; i++)
        {
            hex[2 * i] = digits[bytes[i] >> 4];
            hex[2 * i + 1] = digits[bytes[i] & 0xF];
        }
    }

    private static bool IsLowerHex(ReadOnlySpan<byte> text)
    {
        foreach (byte b in text)
            if (b is not ((>= (byte)'0' and <= (byte)'9') or (>= (byte)'a' and <= (byte)'f'))) return false;
        return true;
    }

    /// <summary>open(2) with the flags .NET's file APIs do not expose (O_PATH, O_NOFOLLOW).</summary>
    private static partial class Native
    {
        public const int O_RDONLY = 0, O_NONBLOCK = 0x800, O_CLOEXEC = 0x80000, O_PATH = 0x200000;
        /// <summary>0400000 in asm-generic; arm, arm64 and powerpc define it as 0100000.</summary>
        public static readonly int O_NOFOLLOW = RuntimeInformation.ProcessArchitecture
            is Architecture.Arm or Architecture.Arm64 or Architecture.Armv6 or Architecture.Ppc64le ? 0x8000 : 0x20000;
        public const int ENOENT = 2, ENOTDIR = 20;

        /// <summary>open(2) without O_CREAT: the variadic mode argument is not read.</summary>
        [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
        public static partial int Open(string path, int flags);
    }
}
