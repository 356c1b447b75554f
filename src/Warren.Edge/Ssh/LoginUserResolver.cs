using System.Collections.Concurrent;
using System.Text.RegularExpressions;
using Warren.Platform.Runtime;

namespace Warren.Edge.Ssh;

/// <summary>
/// Picks the user a session runs as inside a VM, so that any SSH user name lands somewhere sensible (`ssh vm`
/// sends the local user's name, which the VM rarely has):
/// <list type="number">
/// <item>the SSH user name, when such a user exists in the VM (<c>root@</c> included);</item>
/// <item>else the VM's default user (the image's USER, else the installation's default login user) when it exists
///   in the VM, or is numeric (a uid needs no passwd entry), or cannot be checked;</item>
/// <item>else root, the one user every image has, rather than a session that fails to start.</item>
/// </list>
/// Existence is asked of the VM (<c>id -u NAME</c>, as root) and cached.
/// </summary>
public sealed partial class LoginUserResolver(IVmRuntime runtime)
{
    /// <summary>How long a "user exists" answer is reused; users are rarely added.</summary>
    private static readonly TimeSpan CacheLifetime = TimeSpan.FromMinutes(5);

    /// <summary>Entries kept before the cache is cleared wholesale (bounds memory under name-guessing).</summary>
    private const int MaxCacheEntries = 10_000;

    /// <summary>The user every image has, the last resort.</summary>
    public const string Root = "root";

    /// <summary>id(1)'s exit status for a user that does not exist (GNU coreutils and BusyBox).</summary>
    private const int NoSuchUserExitCode = 1;

    private enum UserExistence { Exists, Missing, Unknown }

    private readonly ConcurrentDictionary<(string VmId, string User), (bool Exists, DateTime At)> _cache = new();

    [GeneratedRegex("^[a-z_][a-z0-9_-]{0,31}$")]
    private static partial Regex PosixUserName();

    /// <summary>A uid or uid:gid, which the agent takes without a passwd entry.</summary>
    [GeneratedRegex("^[0-9]{1,10}(:[0-9]{1,10})?$")]
    private static partial Regex NumericUser();

    public async Task<string> ResolveAsync(string vmId, string? sshUser, string defaultUser, CancellationToken ct)
    {
        if (!string.IsNullOrEmpty(sshUser) && sshUser != defaultUser && PosixUserName().IsMatch(sshUser)
            && await ExistsAsync(vmId, sshUser, ct).ConfigureAwait(false) == UserExistence.Exists)
            return sshUser;
        if (defaultUser == Root || NumericUser().IsMatch(defaultUser)) return defaultUser;
        // A name that cannot be a user falls to root too: the agent would refuse it.
        if (!PosixUserName().IsMatch(defaultUser)) return Root;
        return await ExistsAsync(vmId, defaultUser, ct).ConfigureAwait(false) == UserExistence.Missing ? Root : defaultUser;
    }

    private async Task<UserExistence> ExistsAsync(string vmId, string user, CancellationToken ct)
    {
        if (_cache.TryGetValue((vmId, user), out var hit) && DateTime.UtcNow - hit.At < CacheLifetime)
            return hit.Exists ? UserExistence.Exists : UserExistence.Missing;
        int exitCode;
        try
        {
            await using var p = await runtime.ExecAsync(vmId, new ExecSpec(["id", "-u", user], User: Root), ct).ConfigureAwait(false);
            await p.CloseStandardInputAsync().ConfigureAwait(false);
            var drain = p.StandardOutput.CopyToAsync(Stream.Null, ct);
            var exit = await p.Completion.ConfigureAwait(false);
            await drain.ConfigureAwait(false);
            exitCode = exit.ExitCode ?? -1;
        }
        catch (Exception e) when (e is not OperationCanceledException) { return UserExistence.Unknown; }
        // Only id's own answers are kept: a VM without id (127) or a failed exec says nothing about the user.
        if (exitCode != 0 && exitCode != NoSuchUserExitCode) return UserExistence.Unknown;
        if (_cache.Count > MaxCacheEntries) _cache.Clear();
        _cache[(vmId, user)] = (exitCode == 0, DateTime.UtcNow);
        return exitCode == 0 ? UserExistence.Exists : UserExistence.Missing;
    }
}
