namespace Warren.Edge.Metadata;

/// <summary>What a request's Host names.</summary>
public enum MetadataHostKind
{
    /// <summary>The metadata address itself (or any name that is not an integration's).</summary>
    Metadata,
    /// <summary><c>NAME.int.&lt;vm-domain&gt;</c> with a valid label.</summary>
    Integration,
    /// <summary>Below <c>int.&lt;vm-domain&gt;</c> but not one valid label: no integration has that name.</summary>
    InvalidIntegration,
}

/// <summary>
/// Reads the Host header (RFC 9110 §7.2: host and optional port) of a request to the metadata address. Names compare
/// case-insensitively and a trailing root dot is the same name (RFC 4343).
/// </summary>
public static class MetadataHostName
{
    /// <summary>RFC 1035 §2.3.4: a label is at most 63 octets.</summary>
    public const int MaxLabelLength = 63;

    public static MetadataHostKind Classify(string? host, string vmDomain, out string? integrationName)
    {
        integrationName = null;
        if (string.IsNullOrEmpty(host)) return MetadataHostKind.Metadata;
        ReadOnlySpan<char> h = host.AsSpan().Trim();
        // An IPv6 literal is never an integration; otherwise strip ":port".
        if (h.StartsWith("[")) return MetadataHostKind.Metadata;
        int colon = h.LastIndexOf(':');
        if (colon >= 0) h = h[..colon];
        if (h.EndsWith(".")) h = h[..^1];
        ReadOnlySpan<char> domain = vmDomain.AsSpan().Trim().TrimEnd('.');
        const string Infix = ".int.";
        // h = LABEL + ".int." + domain
        if (domain.IsEmpty || h.Length <= Infix.Length + domain.Length) return MetadataHostKind.Metadata;
        if (!h.EndsWith(domain, StringComparison.OrdinalIgnoreCase)) return MetadataHostKind.Metadata;
        var beforeDomain = h[..^domain.Length];
        if (!beforeDomain.EndsWith(Infix, StringComparison.OrdinalIgnoreCase)) return MetadataHostKind.Metadata;
        var label = beforeDomain[..^Infix.Length];
        if (!IsLabel(label)) return MetadataHostKind.InvalidIntegration;
        integrationName = label.ToString().ToLowerInvariant();
        return MetadataHostKind.Integration;
    }

    /// <summary>RFC 1123 §2.1 host label: letters, digits, hyphens, not starting or ending with a hyphen.</summary>
    public static bool IsLabel(ReadOnlySpan<char> label)
    {
        if (label.IsEmpty || label.Length > MaxLabelLength || label[0] == '-' || label[^1] == '-') return false;
        foreach (char c in label)
            if (!char.IsAsciiLetterOrDigit(c) && c != '-') return false;
        return true;
    }
}
