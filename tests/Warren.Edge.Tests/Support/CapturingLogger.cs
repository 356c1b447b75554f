using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace Warren.Edge.Tests.Support;

/// <summary>A logger that keeps every entry (level, event id, formatted message) for a test to inspect.</summary>
internal sealed class CapturingLogger : ILogger
{
    public ConcurrentQueue<(LogLevel Level, int Id, string Message)> Entries { get; } = new();
    public int Errors => Entries.Count(e => e.Level >= LogLevel.Error);

    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
        Entries.Enqueue((logLevel, eventId.Id, formatter(state, exception)));
}
