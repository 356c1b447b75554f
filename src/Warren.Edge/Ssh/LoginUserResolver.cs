using System.Collections.Concurrent;
using System.Text.RegularExpressions;
using Warren.Platform.Runtime;

namespace Warren.Edge.Ssh;

/// <summary>
/// Picks the user a session runs as inside a VM: the SSH user name when such a user exists
/// in the VM, else the VM's default user (issue 5). Existence is asked of the VM once and cached.
/// </summary>
public sealed partial class LoginUserResolver(IVmRuntime runtime)
{
    /// <summary>How long a "user exists" answer is reused; users are rarely added.</summary>
    private static readonly TimeSpan CacheLifetime = TimeSpan.FromMinutes(5);

    /// <summary>Entries kept before the cache is cleared wholesale (bounds memory under name-guessing).</summary>
    private const int MaxCacheEntries = 10_000;

    private readonly ConcurrentDictionary<(string VmId, string User), (bool Exists, DateTime At)> _cache = new();

    [GeneratedRegex("^[a-z_][a-z0-9_-]{0,31}$")]
    private static partial Regex PosixUserName();

    public async Task<string> ResolveAsync(string vmId, string? sshUser, string defaultUser, CancellationToken ct)
    {
        if (string.IsNullOrEmpty(sshUser) || sshUser == defaultUser || !PosixUserName().IsMatch(sshUser)) return defaultUser;
        if (_cache.TryGetValue((vmId, sshUser), out var hit) && DateTime.UtcNow - hit.At < CacheLifetime)
            return hit.Exists ? sshUser : defaultUser;
        bool exists = false;
        try
        {
            await using var p = await runtime.ExecAsync(vmId, new ExecSpec(["id", "-u", sshUser], User: "root"), ct).ConfigureAwait(false);
            await p.CloseStandardInputAsync().ConfigureAwait(false);
            var drain = p.StandardOutput.CopyToAsync(Stream.Null, ct);
            var exit = await p.Completion.ConfigureAwait(false);
            await drain.ConfigureAwait(false);
            exists = exit.ExitCode == 0;
        }
        catch (Exception e) when (e is not OperationCanceledException) { exists = false; }
        if (_cache.Count > MaxCacheEntries) _cache.Clear();
        _cache[(vmId, sshUser)] = (exists, DateTime.UtcNow);
        return exists ? sshUser : defaultUser;
    }
}
