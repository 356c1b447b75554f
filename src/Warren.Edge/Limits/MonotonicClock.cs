namespace Warren.Edge.Limits;

/// <summary>Milliseconds on an injected <see cref="TimeProvider"/>'s monotonic timestamp, for deadlines and ages.</summary>
internal static class MonotonicClock
{
    /// <summary>
    /// The timestamp in milliseconds, split into whole seconds and the rest so that it does not overflow
    /// (a nanosecond timestamp times 1000 would, after about 106 days of uptime).
    /// </summary>
    public static long Milliseconds(this TimeProvider time)
    {
        long timestamp = time.GetTimestamp();
        long frequency = time.TimestampFrequency;
        return timestamp / frequency * 1000 + timestamp % frequency * 1000 / frequency;
    }
}
