namespace Warren.Platform;

/// <summary>
/// Warren's platform configuration, bound from the "Warren" configuration section
/// (appsettings.json, WARREN_ environment variables, command line).
/// Defaults are the dev defaults from README.md.
/// </summary>
public sealed class PlatformOptions
{
    public const string SectionName = "Warren";

    /// <summary>Host name of the control plane: <c>ssh warren.localhost ls</c>.</summary>
    public string ControlHost { get; set; } = "warren.localhost";

    /// <summary>
    /// The region code <c>ls --json</c> gives every VM (exe.dev's <c>region</c>, e.g. "lon"): one installation is one
    /// region. Scripts written for exe.dev read it, so it is always present.
    /// </summary>
    public string Region { get; set; } = "local";

    /// <summary>The region's display name (exe.dev's <c>region_display</c>, e.g. "London, UK"); left out when empty.</summary>
    public string RegionDisplay { get; set; } = "";

    /// <summary>VM names live under this domain: <c>NAME.box.localhost</c>; slots are <c>sNNN.box.localhost</c>.</summary>
    public string VmDomain { get; set; } = "box.localhost";

    /// <summary>Holds warren.db, host keys, certificates.</summary>
    public string DataDirectory { get; set; } = "./var";

    /// <summary>
    /// The shared address pool. Empty in configuration means the dev pool
    /// (<see cref="DevelopmentSlots"/>); read <see cref="EffectiveSlots"/> rather than this list.
    /// (Configuration binding appends to a non-empty default list, so the default lives in EffectiveSlots.)
    /// </summary>
    public IReadOnlyList<AddressSlotOptions> Slots { get; set; } = Array.Empty<AddressSlotOptions>();

    /// <summary><see cref="Slots"/>, or the dev pool s001–s004 on 127.0.1.1–127.0.1.4 when none are configured.</summary>
    public IReadOnlyList<AddressSlotOptions> EffectiveSlots => Slots.Count > 0 ? Slots : DevelopmentSlots;

    public static IReadOnlyList<AddressSlotOptions> DevelopmentSlots { get; } = new[]
    {
        new AddressSlotOptions { Name = "s001", PublicIp = "127.0.1.1", LocalIp = "127.0.1.1" },
        new AddressSlotOptions { Name = "s002", PublicIp = "127.0.1.2", LocalIp = "127.0.1.2" },
        new AddressSlotOptions { Name = "s003", PublicIp = "127.0.1.3", LocalIp = "127.0.1.3" },
        new AddressSlotOptions { Name = "s004", PublicIp = "127.0.1.4", LocalIp = "127.0.1.4" },
    };

    /// <summary>Local address of the control plane's listeners (SSH, HTTP, HTTPS).</summary>
    public string ControlLocalIp { get; set; } = "127.0.0.1";

    /// <summary>Public address the control host's A record points to; defaults to <see cref="ControlLocalIp"/>.</summary>
    public string? ControlPublicIp { get; set; }

    public int SshPort { get; set; } = 2222;
    public int HttpsPort { get; set; } = 8443;
    public int HttpPort { get; set; } = 8080;

    public SignupOptions Signup { get; set; } = new();

    /// <summary>Default, minimum and maximum VM resources.</summary>
    public VmResourceOptions Resources { get; set; } = new();

    /// <summary>VMs one account may own (exe.dev: "You have reached the maximum number of VMs allowed on your plan.").</summary>
    public int MaxVmsPerAccount { get; set; } = 100;

    /// <summary>Image used when <c>new</c> has no <c>--image</c>.</summary>
    public string DefaultImage { get; set; } = "warren/default:1";

    /// <summary>Operator-provided images; read <see cref="ImageOptions.EffectiveProvided"/>.</summary>
    public ImageOptions Images { get; set; } = new();

    /// <summary>Login user inside VMs whose image names none.</summary>
    public string DefaultLoginUser { get; set; } = "warren";

    /// <summary>Every local address the daemon listens on: the control address and each slot's LocalIp.</summary>
    public IEnumerable<string> ListenAddresses => EffectiveSlots.Select(s => s.LocalIp).Prepend(ControlLocalIp);

    /// <summary>Whether only this machine can reach the daemon (every listener on a loopback address).</summary>
    public bool ListensOnLoopbackOnly
        => ListenAddresses.All(a => System.Net.IPAddress.TryParse(a, out var ip) && System.Net.IPAddress.IsLoopback(ip));

    /// <summary>Full path of the SQLite database file.</summary>
    public string DatabasePath => Path.Combine(Path.GetFullPath(DataDirectory), "warren.db");

    /// <summary>Checks the options; returns the problems (empty when valid).</summary>
    public IReadOnlyList<string> Validate()
    {
        var problems = new List<string>();
        if (string.IsNullOrWhiteSpace(ControlHost)) problems.Add("Warren:ControlHost is empty");
        if (string.IsNullOrWhiteSpace(VmDomain)) problems.Add("Warren:VmDomain is empty");
        var names = new HashSet<string>(StringComparer.Ordinal);
        var locals = new HashSet<string>(StringComparer.Ordinal);
        foreach (var s in EffectiveSlots)
        {
            if (!Addressing.AddressSlotTable.IsSlotName(s.Name)) problems.Add($"slot name \"{s.Name}\" must be s followed by three or more digits");
            if (!names.Add(s.Name)) problems.Add($"slot name \"{s.Name}\" appears twice");
            if (!System.Net.IPAddress.TryParse(s.PublicIp, out _)) problems.Add($"slot {s.Name}: PublicIp \"{s.PublicIp}\" is not an IP address");
            if (!System.Net.IPAddress.TryParse(s.LocalIp, out _)) problems.Add($"slot {s.Name}: LocalIp \"{s.LocalIp}\" is not an IP address");
            else if (!locals.Add(System.Net.IPAddress.Parse(s.LocalIp).ToString())) problems.Add($"slot {s.Name}: LocalIp {s.LocalIp} is used by two slots");
        }
        if (!System.Net.IPAddress.TryParse(ControlLocalIp, out var control)) problems.Add($"Warren:ControlLocalIp \"{ControlLocalIp}\" is not an IP address");
        else if (locals.Contains(control.ToString())) problems.Add("Warren:ControlLocalIp must differ from every slot's LocalIp");
        if (MaxVmsPerAccount < 1) problems.Add("Warren:MaxVmsPerAccount must be at least 1");
        // Refused rather than ignored: a reachable daemon that takes typed addresses as proven hands anyone the
        // shares made to anyone's address, and a warning in a log is easy to miss.
        if (Signup.AutoVerify && !ListensOnLoopbackOnly)
            problems.Add("Warren:Signup:AutoVerify=true (sign-up takes the typed address as verified) is allowed only when every listener "
                + $"is on loopback, but Warren listens on {string.Join(", ", ListenAddresses)}; set Warren:Signup:AutoVerify=false "
                + "and configure Warren:Smtp so that sign-up mails a code");
        foreach (var image in Images.EffectiveProvided.Append(DefaultImage))
            if (!Runtime.ImageReference.TryParse(image, out _)) problems.Add($"image \"{image}\" (Warren:Images:Provided or Warren:DefaultImage) is not an image reference");
        problems.AddRange(Resources.Validate());
        return problems;
    }
}

/// <summary>One shared address: {public IP in DNS, local IP the daemon listens on} (the cloud NAT mapping).</summary>
public sealed class AddressSlotOptions
{
    /// <summary>"s001" … ; the DNS name is <c>{Name}.{VmDomain}</c>.</summary>
    public string Name { get; set; } = "";
    public string PublicIp { get; set; } = "";
    public string LocalIp { get; set; } = "";
}

public sealed class SignupOptions
{
    /// <summary>
    /// Sign-up takes the typed address as verified without sending a code. Only for an installation whose every
    /// listener is on loopback (a developer's machine): the daemon refuses to start with it otherwise, since
    /// anyone could then claim anyone's address (and the shares made to it). Production default: false.
    /// </summary>
    public bool AutoVerify { get; set; }

    /// <summary>How long a verification link or code stays valid (exe.dev: 10 minutes).</summary>
    public TimeSpan VerificationTimeout { get; set; } = TimeSpan.FromMinutes(10);
}

/// <summary>Which images every account may start without a registry's say (<c>Warren:Images</c>).</summary>
public sealed class ImageOptions
{
    /// <summary>The images scripts/build-images.sh builds into the engine (they exist on no registry).</summary>
    public static IReadOnlyList<string> BuiltLocally { get; } = ["warren/default:1", "warren/busybox:1"];

    /// <summary>
    /// Operator-provided image references (<c>Warren:Images:Provided</c>): any account may start them, from the
    /// engine's store, without a pull. Empty in configuration means <see cref="BuiltLocally"/>. Every other image
    /// is pulled for the account that asks, with its credential or anonymously, each time.
    /// (Configuration binding appends to a non-empty default list, so the default lives in EffectiveProvided.)
    /// </summary>
    public IReadOnlyList<string> Provided { get; set; } = Array.Empty<string>();

    /// <summary><see cref="Provided"/>, or <see cref="BuiltLocally"/> when none are configured.</summary>
    public IReadOnlyList<string> EffectiveProvided => Provided.Count > 0 ? Provided : BuiltLocally;
}

/// <summary>VM resources: defaults for <c>new</c>, and the limits <c>new</c>, <c>cp</c> and <c>resize</c> enforce.</summary>
public sealed class VmResourceOptions
{
    public const long GiB = 1L << 30;

    /// <summary>exe.dev stage defaults: 2 CPUs, 8 GiB memory, 25 GiB disk.</summary>
    public double DefaultCpus { get; set; } = 2;
    public long DefaultMemoryBytes { get; set; } = 8 * GiB;
    public long DefaultDiskBytes { get; set; } = 25 * GiB;

    /// <summary>exe.dev minimums: 1 CPU, 2 GiB memory, 10 GiB disk.</summary>
    public double MinCpus { get; set; } = 1;
    public long MinMemoryBytes { get; set; } = 2 * GiB;
    public long MinDiskBytes { get; set; } = 10 * GiB;

    /// <summary>exe.dev's largest resize tier (XLarge): 16 CPUs, 64 GiB.</summary>
    public double MaxCpus { get; set; } = 16;
    public long MaxMemoryBytes { get; set; } = 64 * GiB;
    /// <summary>Largest disk; exe.dev's plan MaxDisk is 75 GiB, raised here for self-hosting.</summary>
    public long MaxDiskBytes { get; set; } = 250 * GiB;

    /// <summary>exe.dev: disk grows by at most 250 GB per resize.</summary>
    public long MaxDiskGrowthPerResizeBytes { get; set; } = 250 * GiB;

    public IEnumerable<string> Validate()
    {
        if (MinCpus <= 0 || MinCpus > DefaultCpus || DefaultCpus > MaxCpus) yield return "Warren:Resources cpus must satisfy 0 < MinCpus <= DefaultCpus <= MaxCpus";
        if (MinMemoryBytes <= 0 || MinMemoryBytes > DefaultMemoryBytes || DefaultMemoryBytes > MaxMemoryBytes) yield return "Warren:Resources memory must satisfy 0 < MinMemoryBytes <= DefaultMemoryBytes <= MaxMemoryBytes";
        if (MinDiskBytes <= 0 || MinDiskBytes > DefaultDiskBytes || DefaultDiskBytes > MaxDiskBytes) yield return "Warren:Resources disk must satisfy 0 < MinDiskBytes <= DefaultDiskBytes <= MaxDiskBytes";
    }
}
