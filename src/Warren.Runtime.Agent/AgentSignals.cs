namespace Warren.Runtime.Agent;

/// <summary>
/// The signals SSH can name (RFC 4254 §6.10: "signal" requests and "exit-signal"), with their Linux numbers: the
/// one table every runtime uses to send a signal through the agent and to report how a process ended.
/// </summary>
internal static class AgentSignals
{
    /// <summary>SSH signal names (RFC 4254 §6.10) and Linux numbers.</summary>
    internal static readonly IReadOnlyDictionary<string, int> Numbers = new Dictionary<string, int>
    {
        ["HUP"] = 1, ["INT"] = 2, ["QUIT"] = 3, ["ILL"] = 4, ["ABRT"] = 6, ["FPE"] = 8, ["KILL"] = 9,
        ["USR1"] = 10, ["SEGV"] = 11, ["USR2"] = 12, ["PIPE"] = 13, ["ALRM"] = 14, ["TERM"] = 15,
    };

    /// <summary>The SSH name of a Linux signal number, or null when RFC 4254 has none for it.</summary>
    internal static string? Name(int number)
    {
        foreach (var (name, value) in Numbers)
            if (value == number) return name;
        return null;
    }

    /// <summary>"TERM", "SIGTERM", "term" → ("TERM", 15); an unknown name throws <see cref="ArgumentException"/>.</summary>
    internal static (string Name, int Number) Parse(string signal)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(signal);
        string name = (signal.StartsWith("SIG", StringComparison.OrdinalIgnoreCase) ? signal[3..] : signal).ToUpperInvariant();
        return Numbers.TryGetValue(name, out int number) ? (name, number) : throw new ArgumentException($"unknown signal {signal}", nameof(signal));
    }
}
