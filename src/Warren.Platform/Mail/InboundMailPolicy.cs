using Warren.Platform.Addressing;
using Warren.Platform.Vms;

namespace Warren.Platform.Mail;

/// <summary>What the SMTP front door answers to one <c>RCPT TO</c>.</summary>
public enum RecipientDecision
{
    /// <summary>A VM with receive-email on that is running: accept (250).</summary>
    Accept,

    /// <summary>The domain is not below the VM domain: we are no relay (550 5.7.1).</summary>
    NotOurDomain,

    /// <summary>
    /// No such mailbox (550 5.1.1): nested subdomain, unknown VM, a VM being deleted, or receive-email off.
    /// One decision for all of them, so a sender learns nothing beyond "not deliverable here".
    /// </summary>
    NoSuchMailbox,

    /// <summary>Receive-email is on but the VM is not running: try again later (450 4.2.1).</summary>
    VmNotRunning,
}

/// <summary>The decision and, unless refused as unknown, the VM it is about.</summary>
public readonly record struct RecipientCheck(RecipientDecision Decision, VmRecord? Vm);

/// <summary>
/// Which recipient domains Warren takes mail for: exactly <c>NAME.&lt;vm-domain&gt;</c> for a VM whose owner
/// turned receive-email on. Reads the in-memory <see cref="PlatformIndex"/>, so a check costs no I/O and
/// follows <c>share receive-email</c>, renames and deletions at once.
/// </summary>
public sealed class InboundMailPolicy
{
    private readonly PlatformIndex _index;
    private readonly string _vmDomain;

    public InboundMailPolicy(PlatformOptions options, PlatformIndex index)
    {
        _index = index;
        _vmDomain = Normalize(options.VmDomain);
    }

    /// <summary>Domain names compare case-insensitively (RFC 5321 §2.4); a trailing root dot is the same name.</summary>
    public static string Normalize(string domain) => domain.Trim().TrimEnd('.').ToLowerInvariant();

    /// <summary>The decision for a recipient domain (the part after the last <c>@</c>).</summary>
    public RecipientCheck Check(string domain)
    {
        string d = Normalize(domain);
        if (d.Length <= _vmDomain.Length + 1
            || !d.EndsWith(_vmDomain, StringComparison.Ordinal)
            || d[d.Length - _vmDomain.Length - 1] != '.')
            return new(RecipientDecision.NotOurDomain, null);
        string name = d[..(d.Length - _vmDomain.Length - 1)];
        // Only NAME.<vm-domain> has mail; x.NAME.<vm-domain> is no VM's address.
        if (name.Contains('.'))
            return new(RecipientDecision.NoSuchMailbox, null);
        var vm = _index.GetByName(name);
        if (vm is null || vm.State == VmState.Deleting || !vm.ReceiveEmail)
            return new(RecipientDecision.NoSuchMailbox, null);
        return vm.State == VmState.Running
            ? new(RecipientDecision.Accept, vm)
            : new(RecipientDecision.VmNotRunning, vm);
    }
}
