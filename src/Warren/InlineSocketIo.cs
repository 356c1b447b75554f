using Microsoft.Extensions.Configuration;

namespace Warren;

/// <summary>
/// <c>Warren:InlineSocketIo</c> (default true): socket completions run on the socket engine's own threads instead
/// of being queued to the thread pool, and the HTTPS front door handles requests there — the event-loop shape
/// nginx has. <c>Warren:SocketEngineThreads</c> (default: one per core, nginx's <c>worker_processes auto</c>) is
/// how many such threads poll the sockets.
/// </summary>
/// <remarks>
/// Measured on the 2-core bench machine (bench/http/vm.sh, docs/PERFORMANCE.md). Before the connection-level
/// forwarder, one engine beat two (17.2–18.2k proxied requests/s against 13.8–15.5k: two engines cost 66 µs of CPU
/// per request against 49). With it, one engine reaches 0.93 of nginx's rate at 42 µs per request and two reach
/// nginx's rate (0.99–1.0) at 49 µs per request: the second thread uses the CPU the first leaves idle while it waits.
/// On a host where the VMs need every cycle, <c>Warren:SocketEngineThreads=1</c> per two cores spends less per request.
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
        int engines = configuration.GetValue("Warren:SocketEngineThreads", Environment.ProcessorCount);
        if (Environment.GetEnvironmentVariable(EngineCountVariable) is null && engines > 0)
            Environment.SetEnvironmentVariable(EngineCountVariable, engines.ToString(System.Globalization.CultureInfo.InvariantCulture));
    }
}
