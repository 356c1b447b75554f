using Microsoft.Extensions.Configuration;

namespace Warren;

/// <summary>
/// <c>Warren:InlineSocketIo</c> (default true): socket completions run on the socket engine's own threads instead
/// of being queued to the thread pool, and the HTTPS front door handles requests there — the event-loop shape
/// nginx has. <c>Warren:SocketEngineThreads</c> (default: half the cores, at least one) is how many such threads
/// poll the sockets.
/// </summary>
/// <remarks>
/// Measured on the 2-core bench machine (bench/http/vm.sh, docs/PERFORMANCE.md): thread-pool model 10.9–13.0k
/// proxied requests/s; inline with two engine threads 13.8–15.5k; inline with one 17.2–18.2k — the engine thread
/// shares the machine with the VMs and the kernel's network work it causes, and two of them on two cores cost
/// more CPU per request (49 µs against 66) than they add.
/// The runtime reads both environment variables once, when the first socket is used, so they are set here before
/// anything opens one; an explicit environment setting wins. Code that may block or run long leaves those
/// threads itself: the SSH transport continues every read and write on the thread pool, and the HTTP front door
/// does so before database work, token checks and /exec.
/// </remarks>
internal static class InlineSocketIo
{
    private const string InlineVariable = "DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS";
    private const string EngineCountVariable = "DOTNET_SYSTEM_NET_SOCKETS_THREAD_COUNT";

    public static bool IsEnabled(IConfiguration configuration) => configuration.GetValue("Warren:InlineSocketIo", true);

    public static void ApplyBeforeFirstSocket(IConfiguration configuration)
    {
        if (!IsEnabled(configuration))
            return;
        if (Environment.GetEnvironmentVariable(InlineVariable) is null)
            Environment.SetEnvironmentVariable(InlineVariable, "1");
        int engines = configuration.GetValue("Warren:SocketEngineThreads", Math.Max(1, Environment.ProcessorCount / 2));
        if (Environment.GetEnvironmentVariable(EngineCountVariable) is null && engines > 0)
            Environment.SetEnvironmentVariable(EngineCountVariable, engines.ToString(System.Globalization.CultureInfo.InvariantCulture));
    }
}
