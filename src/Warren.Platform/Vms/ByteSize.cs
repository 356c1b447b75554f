using System.Globalization;

namespace Warren.Platform.Vms;

/// <summary>
/// Sizes as exe.dev's parseSize reads them: a number (decimals allowed) and an optional unit
/// B, K/KB/KiB, M/MB/MiB, G/GB/GiB, T/TB/TiB (case-insensitive, all binary); a bare number is GiB.
/// </summary>
public static class ByteSize
{
    public const long KiB = 1L << 10, MiB = 1L << 20, GiB = 1L << 30, TiB = 1L << 40;

    /// <summary>Longest size text accepted (keeps decimal parsing bounded).</summary>
    public const int MaxTextLength = 32;

    public static bool TryParse(string? text, out long bytes)
    {
        bytes = 0;
        if (text is null) return false;
        var s = text.Trim();
        if (s.Length == 0 || s.Length > MaxTextLength) return false;
        int i = 0;
        while (i < s.Length && (char.IsAsciiDigit(s[i]) || s[i] == '.')) i++;
        var number = s[..i];
        var unit = s[i..].Trim().ToUpperInvariant();
        if (number.Length == 0 || number.Count(c => c == '.') > 1 || number.StartsWith('.') || number.EndsWith('.')) return false;
        long multiplier = unit switch
        {
            "" => GiB,
            "B" => 1,
            "K" or "KB" or "KIB" => KiB,
            "M" or "MB" or "MIB" => MiB,
            "G" or "GB" or "GIB" => GiB,
            "T" or "TB" or "TIB" => TiB,
            _ => 0,
        };
        if (multiplier == 0) return false;
        if (!decimal.TryParse(number, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var value)) return false;
        if (value > (decimal)long.MaxValue / multiplier) return false; // before multiplying: decimal overflows too
        decimal total = value * multiplier;
        bytes = (long)decimal.Floor(total);
        return bytes > 0;
    }

    /// <summary>The parsed size, or <c>size_invalid</c>.</summary>
    public static long Parse(string? text, string what = "size")
        => TryParse(text, out var b) ? b
           : throw new PlatformException(PlatformErrorCodes.SizeInvalid, $"invalid {what} \"{text}\": use a number with an optional unit, like 4, 4GB or 512MB");

    /// <summary>Human form as exe.dev prints it: "8 GB", "512 MB", "1.5 GB" (binary units).</summary>
    public static string Format(long bytes)
    {
        (long unit, string name) = bytes switch
        {
            >= TiB => (TiB, "TB"),
            >= GiB => (GiB, "GB"),
            >= MiB => (MiB, "MB"),
            >= KiB => (KiB, "KB"),
            _ => (1L, "B"),
        };
        var v = (double)bytes / unit;
        return (v == Math.Floor(v) ? ((long)v).ToString(CultureInfo.InvariantCulture) : v.ToString("0.#", CultureInfo.InvariantCulture)) + " " + name;
    }
}
