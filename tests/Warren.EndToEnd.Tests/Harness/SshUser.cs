namespace Warren.EndToEnd.Tests.Harness;

/// <summary>A person with an ed25519 key made by the real ssh-keygen, driving the real OpenSSH client.</summary>
public sealed class SshUser
{
    public string Email { get; }
    public string KeyPath { get; }
    public string PublicKey => File.ReadAllText(KeyPath + ".pub").Trim();
    private readonly WarrenDaemon _daemon;

    private SshUser(WarrenDaemon daemon, string email, string keyPath)
    {
        _daemon = daemon;
        Email = email;
        KeyPath = keyPath;
    }

    public static async Task<SshUser> CreateKeyAsync(WarrenDaemon daemon, string email, string keyType = "ed25519")
    {
        var dir = Directory.CreateTempSubdirectory("warren-e2e-key-").FullName;
        var path = Path.Combine(dir, "id_" + keyType);
        var r = await ProcessRunner.RunAsync("ssh-keygen", ["-q", "-t", keyType, "-N", "", "-C", email, "-f", path]);
        if (r.ExitCode != 0) throw new InvalidOperationException(r.ToString());
        return new SshUser(daemon, email, path);
    }

    /// <summary>Common options: our key only, no agent, no known_hosts pollution, no prompts.</summary>
    public List<string> SshOptions(int port) =>
    [
        "-F", "/dev/null",
        "-i", KeyPath, "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
        "-o", "BatchMode=yes", "-o", "ConnectTimeout=20", "-p", port.ToString(),
    ];

    /// <summary>ssh to the control host: <c>ssh warren.localhost ARGS</c>.</summary>
    public Task<ProcessResult> ControlAsync(string command, string? stdin = null, TimeSpan? timeout = null)
    {
        var args = SshOptions(_daemon.SshPort);
        args.Add(_daemon.ControlAddress);
        args.Add(command);
        return ProcessRunner.RunAsync("ssh", args, stdin, timeout);
    }

    /// <summary>ssh straight to a slot address (what DNS gives for NAME.box.localhost).</summary>
    public Task<ProcessResult> VmAsync(string address, string command, string? stdin = null, IEnumerable<string>? extra = null, string? user = null,
        TimeSpan? timeout = null)
    {
        var args = SshOptions(_daemon.SshPort);
        if (extra is not null) args.AddRange(extra);
        args.Add(user is null ? address : $"{user}@{address}");
        args.Add(command);
        return ProcessRunner.RunAsync("ssh", args, stdin, timeout);
    }
}
