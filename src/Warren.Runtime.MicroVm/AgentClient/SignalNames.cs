namespace Warren.Runtime.Docker;

/// <summary>
/// The signal-name lookups the shared agent client (linked from Warren.Runtime.Docker) calls on <c>DockerVmProcess</c>,
/// whose Docker-exec half this runtime does not have: RFC 4254 §6.10's names with their Linux numbers.
/// </summary>
internal static class DockerVmProcess
{
    private static readonly IReadOnlyDictionary<string, int> s_signalNames = new Dictionary<string, int>
    {
        ["HUP"] = 1, ["INT"] = 2, ["QUIT"] = 3, ["ILL"] = 4, ["ABRT"] = 6, ["FPE"] = 8, ["KILL"] = 9,
        ["USR1"] = 10, ["SEGV"] = 11, ["USR2"] = 12, ["PIPE"] = 13, ["ALRM"] = 14, ["TERM"] = 15,
    };

    /// <summary>The SSH name of a Linux signal number, or null when RFC 4254 has none for it.</summary>
    internal static string? SignalName(int number)
    {
        foreach (var (name, value) in s_signalNames)
            if (value == number) return name;
        return null;
    }

    /// <summary>"TERM", "SIGTERM", "term" → ("TERM", 15); an unknown name throws <see cref="ArgumentException"/>.</summary>
    internal static (string Name, int Number) ParseSignal(string signal)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(signal);
        string name = (signal.StartsWith("SIG", StringComparison.OrdinalIgnoreCase) ? signal[3..] : signal).ToUpperInvariant();
        return s_signalNames.TryGetValue(name, out int number) ? (name, number) : throw new ArgumentException($"unknown signal {signal}", nameof(signal));
    }
}
