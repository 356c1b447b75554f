using System.Runtime.CompilerServices;

namespace Warren.Threading;

/// <summary>
/// <c>await SocketThread.Leave();</c> continues on the thread pool when the caller runs on a socket engine thread,
/// and is a no-op (no allocation, no hop) on the thread pool.
/// </summary>
/// <remarks>
/// With inline socket completions (DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS, which <c>warren serve</c> turns on)
/// the code after an awaited socket operation runs on the thread that polls every socket; key exchange, database
/// calls and whole commands must not hold it. This is an awaitable rather than an async helper on purpose: the
/// caller's own continuation is what gets queued, so it cannot race back onto the socket thread (an async helper's
/// task may complete before the caller's await looks at it, and the caller then simply carries on where it was).
/// </remarks>
public readonly struct SocketThread : ICriticalNotifyCompletion
{
    public static SocketThread Leave() => default;

    public SocketThread GetAwaiter() => this;

    /// <summary>Socket engine threads are dedicated threads, never thread-pool ones.</summary>
    public bool IsCompleted => Thread.CurrentThread.IsThreadPoolThread;

    public void GetResult()
    {
    }

    public void OnCompleted(Action continuation) =>
        ThreadPool.QueueUserWorkItem(static c => c(), continuation, preferLocal: false);

    public void UnsafeOnCompleted(Action continuation) =>
        ThreadPool.UnsafeQueueUserWorkItem(static c => c(), continuation, preferLocal: false);
}
