namespace Warren.Platform.Interactive;

/// <summary>
/// Shell-integration scripts that some terminals send as the exec command of every SSH session instead of asking
/// for a shell. Warp does (its "warpify" bootstrap begins <c>export TERM_PROGRAM=WarpTerminal; …</c> and sets
/// <c>WARP_SESSION_ID</c>); on the control host there is no shell to run it in, so such a session is the person
/// opening a terminal and gets what <c>ssh HOST</c> gets: the REPL, or the sign-up dialogue for an unknown key.
/// exe.dev's SSH server makes the same call on the same two markers.
/// </summary>
public static class TerminalBootstrap
{
    /// <summary>Text that only a terminal's own bootstrap puts in an exec request (Warp's documented variables).</summary>
    private static readonly string[] Markers = ["TERM_PROGRAM=WarpTerminal", "WARP_SESSION_ID="];

    /// <summary>Whether an exec request's command is a terminal's shell-init preamble rather than a command.</summary>
    public static bool IsBootstrap(string command)
    {
        foreach (var marker in Markers)
            if (command.Contains(marker, StringComparison.Ordinal)) return true;
        return false;
    }
}
