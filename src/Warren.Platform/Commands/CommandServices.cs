using Warren.Platform.Accounts;
using Warren.Platform.Addressing;
using Warren.Platform.Audit;
using Warren.Platform.Interactive;
using Warren.Platform.Mail;
using Warren.Platform.Sharing;
using Warren.Platform.Stats;
using Warren.Platform.Tokens;
using Warren.Platform.Vms;

namespace Warren.Platform.Commands;

/// <summary>What the command handlers use. Register as a singleton; optional parts may be absent.</summary>
public sealed class CommandServices
{
    public CommandServices(
        PlatformOptions options,
        AccountService accounts,
        VmService vms,
        ShareService shares,
        StatsStore stats,
        PlatformIndex index,
        SshRouteTable routes,
        ApiKeyService apiKeys,
        TimeProvider time,
        ILoginLinkIssuer? loginLinks = null,
        IEmailSender? email = null,
        AuditLog? audit = null,
        ReceiveEmailService? receiveEmail = null,
        Integrations.IntegrationService? integrations = null)
    {
        Options = options;
        Accounts = accounts;
        Vms = vms;
        Shares = shares;
        Stats = stats;
        Index = index;
        Routes = routes;
        ApiKeys = apiKeys;
        Time = time;
        LoginLinks = loginLinks;
        Email = email;
        Audit = audit;
        ReceiveEmail = receiveEmail;
        Integrations = integrations;
    }

    public PlatformOptions Options { get; }
    public AccountService Accounts { get; }
    public VmService Vms { get; }
    public ShareService Shares { get; }
    public StatsStore Stats { get; }
    public PlatformIndex Index { get; }
    public SshRouteTable Routes { get; }
    public ApiKeyService ApiKeys { get; }
    public TimeProvider Time { get; }

    /// <summary>The HTTPS front door's login links for <c>browser</c>; null when it is not running.</summary>
    public ILoginLinkIssuer? LoginLinks { get; }

    /// <summary>Outgoing mail (share invitations); null when no SMTP relay is configured.</summary>
    public IEmailSender? Email { get; }

    /// <summary>Every command run is recorded here (arguments redacted); null = not audited.</summary>
    public AuditLog? Audit { get; }

    /// <summary><c>share receive-email on|off</c> (Maildir in the VM); null without a VM runtime (the offline CLI).</summary>
    public ReceiveEmailService? ReceiveEmail { get; }

    /// <summary><c>integrations …</c> (exe.dev's docs: integrations); null when not configured.</summary>
    public Integrations.IntegrationService? Integrations { get; }
}
