using System.Collections.Concurrent;
using System.Net;
using Warren.Edge.Http;

namespace Warren.Edge.Tests.Http;

internal static class People
{
    public static readonly WebUser Owner = new("u-owner", "owner@example.com");
    public static readonly WebUser Friend = new("u-friend", "friend@example.com");
    public static readonly WebUser Stranger = new("u-stranger", "stranger@example.com");
}

internal sealed class FakeDirectory : IWebSiteDirectory
{
    public ConcurrentDictionary<string, WebSite> Sites { get; } = new();
    public ValueTask<WebSite?> FindAsync(string vmName, CancellationToken ct) =>
        ValueTask.FromResult(Sites.TryGetValue(vmName, out var s) ? s : null);
}

internal sealed class FakeAccess : IWebAccessService
{
    public ConcurrentDictionary<(string VmId, string UserId), bool> Shares { get; } = new();
    public ConcurrentDictionary<(string VmId, string Token), bool> ShareLinks { get; } = new();

    public ValueTask<bool> HasAccessAsync(WebSite site, WebUser user, CancellationToken ct) =>
        ValueTask.FromResult(Shares.ContainsKey((site.VmId, user.UserId)));

    public ValueTask<bool> RedeemShareLinkAsync(WebSite site, WebUser user, string shareToken, CancellationToken ct)
    {
        if (!ShareLinks.ContainsKey((site.VmId, shareToken)))
            return ValueTask.FromResult(false);
        Shares[(site.VmId, user.UserId)] = true;
        return ValueTask.FromResult(true);
    }
}

internal sealed class FakeLocator : IWebUpstreamLocator
{
    public ConcurrentDictionary<string, IPAddress> Addresses { get; } = new();

    /// <summary>VMs whose address is answered only after this long (as the real locator does when its cache expires).</summary>
    public ConcurrentDictionary<string, TimeSpan> Delays { get; } = new();

    public ValueTask<IPAddress?> GetAddressAsync(string vmId, CancellationToken ct)
    {
        if (Delays.TryGetValue(vmId, out var delay))
            return LaterAsync(vmId, delay, ct);
        return ValueTask.FromResult(Addresses.TryGetValue(vmId, out var a) ? a : null);
    }

    private async ValueTask<IPAddress?> LaterAsync(string vmId, TimeSpan delay, CancellationToken ct)
    {
        await Task.Delay(delay, ct);
        return Addresses.TryGetValue(vmId, out var a) ? a : null;
    }
}

/// <summary>Tokens are "name@namespace" keys in a table; anything else is invalid. Records what it was asked.</summary>
internal sealed class FakeTokens : IWebTokenValidator
{
    public ConcurrentDictionary<(string Token, string Namespace), TokenValidation> Table { get; } = new();
    public ConcurrentQueue<string> SeenNamespaces { get; } = new();

    public ValueTask<TokenValidation> ValidateAsync(string token, string @namespace, CancellationToken ct)
    {
        SeenNamespaces.Enqueue(@namespace);
        return ValueTask.FromResult(Table.TryGetValue((token, @namespace), out var v) ? v : TokenValidation.Invalid("invalid token"));
    }
}

/// <summary>
/// A command runner over a tiny lexer: whitespace splitting, an unbalanced double quote is a syntax
/// error. Commands: <c>ls</c> (200), <c>whoami</c> (200), <c>fail</c> (exit 1), <c>sleep</c> (waits for cancellation).
/// </summary>
internal sealed class FakeRunner : IExecCommandRunner
{
    public static readonly string[] Known = { "ls", "whoami", "fail", "sleep", "new" };

    public bool TrySplit(string commandLine, out IReadOnlyList<string> argv)
    {
        argv = Array.Empty<string>();
        if (commandLine.Count(c => c == '"') % 2 != 0)
            return false;
        argv = commandLine.Replace("\"", "").Split(' ', StringSplitOptions.RemoveEmptyEntries);
        return true;
    }

    public string? Resolve(IReadOnlyList<string> argv) => Known.Contains(argv[0]) ? argv[0] : null;

    public bool IsAllowed(IReadOnlyCollection<string> allowedCommands, IReadOnlyList<string> argv) =>
        Resolve(argv) is { } path && allowedCommands.Contains(path);

    /// <summary><c>sleep</c> runs that saw their cancellation token fire (the /exec time limit cancels, never abandons).</summary>
    public int CancelledSleeps => Volatile.Read(ref _cancelledSleeps);
    private int _cancelledSleeps;

    public async Task<ExecOutcome> RunAsync(ExecInvocation invocation, CancellationToken ct)
    {
        switch (invocation.CanonicalCommand)
        {
            case "sleep":
                try
                {
                    await Task.Delay(Timeout.Infinite, ct);
                }
                catch (OperationCanceledException)
                {
                    Interlocked.Increment(ref _cancelledSleeps);
                    throw;
                }
                return new ExecOutcome(1, "{}");
            case "fail":
                return new ExecOutcome(1, "{\"error\":\"it failed\"}\n\n");
            case "whoami":
                return new ExecOutcome(0, $"{{\"email\":\"{invocation.Principal.User.Email}\"}}");
            default:
                return new ExecOutcome(0, "  {\"vms\":[]}  ");
        }
    }
}

/// <summary>Records access requests; <see cref="FailFor"/> makes delivery fail for one requester.</summary>
internal sealed class FakeAccessRequests : IAccessRequestSender
{
    public ConcurrentQueue<(WebSite Site, WebUser Requester, string? Message)> Sent { get; } = new();
    public ConcurrentDictionary<string, bool> FailFor { get; } = new();

    public ValueTask SendAccessRequestAsync(WebSite site, WebUser requester, string? message, CancellationToken ct)
    {
        if (FailFor.ContainsKey(requester.UserId))
            throw new IOException("relay down");
        Sent.Enqueue((site, requester, message));
        return ValueTask.CompletedTask;
    }

    public IReadOnlyList<(WebSite Site, WebUser Requester, string? Message)> For(WebUser requester) =>
        Sent.Where(s => s.Requester.UserId == requester.UserId).ToList();
}

/// <summary>Dashboards by user id; an unknown user has an empty one.</summary>
internal sealed class FakeDashboard : IWebDashboardSource
{
    public ConcurrentDictionary<string, WebDashboard> ByUser { get; } = new();

    public ValueTask<WebDashboard> GetDashboardAsync(WebUser user, CancellationToken ct) =>
        ValueTask.FromResult(ByUser.TryGetValue(user.UserId, out var d) ? d : new WebDashboard([], []));
}
