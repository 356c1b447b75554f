using Microsoft.Extensions.Configuration;

namespace Warren;

/// <summary>
/// Configuration sources, later ones winning: appsettings.json beside the binary, ./warren.json,
/// WARREN_* environment variables, then command-line overrides (<c>--Warren:SshPort=2222</c>).
/// </summary>
public static class WarrenConfiguration
{
    /// <summary>Environment variables with their own documented names; the rest map WARREN_A__B → Warren:A:B.</summary>
    private static readonly Dictionary<string, string> s_namedVariables = new(StringComparer.OrdinalIgnoreCase)
    {
        ["WARREN_DATA"] = "Warren:DataDirectory",
        ["WARREN_CONTROL_HOST"] = "Warren:ControlHost",
        ["WARREN_VM_DOMAIN"] = "Warren:VmDomain",
    };

    /// <summary>Variables read by other parts directly (not configuration keys).</summary>
    private static readonly HashSet<string> s_ignored = new(StringComparer.OrdinalIgnoreCase) { "WARREN_AGENT_PATH", "WARREN_TEST_FILTER" };

    /// <summary>
    /// <c>new</c>'s image without <c>--image</c> under <c>Warren:Runtime=microvm</c> when <c>Warren:DefaultImage</c> is unset:
    /// Docker Engine and Compose v2 with a sudo-capable login user (scripts/build-images.sh), so exe.dev's
    /// "docker compose in the VM" deployments work in a fresh VM. The Docker runtime keeps warren/default:1: a
    /// container cannot run an engine for its tenant.
    /// </summary>
    public const string MicroVmDefaultImage = "warren/dind:1";

    public static IConfigurationRoot Build(string[] args)
    {
        var configuration = Sources(new ConfigurationBuilder(), args).Build();
        if (configuration["Warren:Runtime"] != "microvm" || configuration["Warren:DefaultImage"] != null) return configuration;
        // Lowest precedence: any source that names an image wins over this default.
        var withDefault = new ConfigurationBuilder()
            .AddInMemoryCollection([new("Warren:DefaultImage", MicroVmDefaultImage)]);
        return Sources(withDefault, args).Build();
    }

    private static IConfigurationBuilder Sources(IConfigurationBuilder builder, string[] args) => builder
        .AddJsonFile(Path.Combine(AppContext.BaseDirectory, "appsettings.json"), optional: true)
        .AddJsonFile(Path.Combine(Directory.GetCurrentDirectory(), "warren.json"), optional: true)
        .AddInMemoryCollection(FromEnvironment())
        .AddCommandLine(args);

    internal static IEnumerable<KeyValuePair<string, string?>> FromEnvironment()
    {
        foreach (System.Collections.DictionaryEntry e in Environment.GetEnvironmentVariables())
        {
            var name = (string)e.Key;
            if (!name.StartsWith("WARREN_", StringComparison.OrdinalIgnoreCase) || s_ignored.Contains(name)) continue;
            var key = s_namedVariables.TryGetValue(name, out var mapped) ? mapped : "Warren:" + name["WARREN_".Length..].Replace("__", ":");
            yield return new(key, (string?)e.Value);
        }
    }
}
