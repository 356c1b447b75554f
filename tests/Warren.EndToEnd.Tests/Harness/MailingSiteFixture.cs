using Xunit;

namespace Warren.EndToEnd.Tests.Harness;

/// <summary>
/// A daemon that mails through a loopback SMTP sink, with one busybox website VM made by <see cref="OwnerEmail"/>
/// (<see cref="WebSupport.CreateWebVmAsync"/>). Subclasses name the site and add configuration.
/// </summary>
public abstract class MailingSiteFixture : DaemonFixture, IAsyncLifetime
{
    public SmtpSink Mail { get; } = new();
    public SshUser Owner { get; private set; } = null!;
    public string SlotIp { get; private set; } = null!;

    protected abstract string SiteName { get; }
    protected abstract string SiteContent { get; }
    protected abstract string OwnerEmail { get; }

    /// <summary>Configuration added to the SMTP relay settings.</summary>
    protected virtual Dictionary<string, string> ExtraConfig => new();

    protected sealed override Dictionary<string, string> Config => new(ExtraConfig)
    {
        ["Warren:Smtp:Host"] = "127.0.0.1",
        ["Warren:Smtp:Port"] = Mail.Port.ToString(),
        ["Warren:Smtp:Security"] = "None",
        ["Warren:Smtp:From"] = "warren@localhost",
    };

    public new async Task InitializeAsync()
    {
        await base.InitializeAsync();
        Owner = await Daemon.CreateUserAsync(OwnerEmail);
        SlotIp = await WebSupport.CreateWebVmAsync(Daemon, Owner, SiteName, SiteContent);
    }

    public new async Task DisposeAsync()
    {
        await base.DisposeAsync();
        await Mail.DisposeAsync();
    }
}
