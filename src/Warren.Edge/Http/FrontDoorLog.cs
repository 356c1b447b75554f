using Microsoft.Extensions.Logging;

namespace Warren.Edge.Http;

/// <summary>The HTTPS front door's log events, shared by its stages (event ids in <see cref="EdgeEventIds"/>).</summary>
internal static class FrontDoorLog
{
    private static readonly Action<ILogger, string, int, string, string?, Exception?> s_forwardFailed = LoggerMessage.Define<string, int, string, string?>(
        LogLevel.Information, EdgeEventIds.HttpForwardFailed, "Forwarding to VM {Vm} port {Port} failed: {Error} {Detail}");
    private static readonly Action<ILogger, Exception?> s_directoryFailed = LoggerMessage.Define(
        LogLevel.Error, EdgeEventIds.HttpDirectoryFailed, "A platform lookup failed during an HTTP request");
    private static readonly Action<ILogger, string, string, Exception?> s_loginOk = LoggerMessage.Define<string, string>(
        LogLevel.Information, EdgeEventIds.HttpLoginSucceeded, "User {UserId} logged in on {Host}");
    private static readonly Action<ILogger, string, Exception?> s_loginRejected = LoggerMessage.Define<string>(
        LogLevel.Information, EdgeEventIds.HttpLoginRejected, "Rejected a login link on {Host}");
    private static readonly Action<ILogger, string, string, Exception?> s_accessRequested = LoggerMessage.Define<string, string>(
        LogLevel.Information, EdgeEventIds.HttpAccessRequested, "User {UserId} asked the owner of {Vm} for access");
    private static readonly Action<ILogger, string, string, Exception?> s_accessRequestFailed = LoggerMessage.Define<string, string>(
        LogLevel.Error, EdgeEventIds.HttpAccessRequestFailed, "Could not deliver user {UserId}'s access request for {Vm}");

    public static void ForwardFailed(ILogger l, string outcome, string vm, int port, string? detail) => s_forwardFailed(l, vm, port, outcome, detail, null);
    public static void DirectoryFailed(ILogger l, Exception ex) => s_directoryFailed(l, ex);
    public static void LoginSucceeded(ILogger l, string user, string host) => s_loginOk(l, user, host, null);
    public static void LoginRejected(ILogger l, string host) => s_loginRejected(l, host, null);
    public static void AccessRequested(ILogger l, string user, string vm) => s_accessRequested(l, user, vm, null);
    public static void AccessRequestFailed(ILogger l, string user, string vm, Exception ex) => s_accessRequestFailed(l, user, vm, ex);
}
