using Warren.Threading;
using Xunit;

namespace Warren.Ssh.Tests.Threading;

public class SocketThreadTests
{
    [Fact]
    public async Task OnADedicatedThread_TheContinuationRunsOnTheThreadPool()
    {
        var done = new TaskCompletionSource<(bool Before, bool After)>(TaskCreationOptions.RunContinuationsAsynchronously);
        // A dedicated thread stands in for a socket engine thread: it is not a thread-pool thread.
        var thread = new Thread(() =>
        {
            bool before = Thread.CurrentThread.IsThreadPoolThread;
            _ = ContinueAsync(before);
        }) { IsBackground = true };
        thread.Start();
        var (wasPool, isPool) = await done.Task.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.False(wasPool);
        Assert.True(isPool);

        async Task ContinueAsync(bool before)
        {
            await SocketThread.Leave();
            done.SetResult((before, Thread.CurrentThread.IsThreadPoolThread));
        }
    }

    [Fact]
    public async Task OnTheThreadPool_ItDoesNotHop()
    {
        await Task.Run(async () =>
        {
            int before = Environment.CurrentManagedThreadId;
            var awaiter = SocketThread.Leave().GetAwaiter();
            Assert.True(awaiter.IsCompleted);
            await SocketThread.Leave();
            Assert.Equal(before, Environment.CurrentManagedThreadId);
        });
    }
}
