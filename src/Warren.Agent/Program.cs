using Warren.Agent;

// warren-agent: the guest agent bind-mounted read-only at /.warren/agent in every VM.
// One static executable, several subcommands (see Usage).
return await AgentMain.RunAsync(args);

namespace Warren.Agent
{
    internal static class AgentMain
    {
        public const string Usage =
            "usage: warren-agent init [--setup-script PATH] [--user USER] [--] [CMD ARG...] | init --vm\n" +
            "       warren-agent exec [--pid-file PATH] [--tty-size COLSxROWS] [--] CMD ARG...\n" +
            "       warren-agent signal SIG PIDFILE\n" +
            "       warren-agent as-user USER [--] CMD ARG...\n" +
            "       warren-agent connect [--ready] HOST PORT\n" +
            "       warren-agent serve DIR\n" +
            "       warren-agent mux AGENT_SOCKET\n" +
            "       warren-agent hostname NAME\n" +
            "       warren-agent grow-fs [MOUNTPOINT...]\n" +
            "       warren-agent freeze [MOUNTPOINT...] | thaw [MOUNTPOINT...]\n" +
            "       warren-agent session-child [--tty] [--user USER] [--cwd DIR] [--nofile N] -- CMD ARG...\n" +
            "       warren-agent listen HOST PORT | listen --unix\n" +
            "       warren-agent sftp [-d START_DIR]\n" +
            "       warren-agent scp [-dprv] -t TARGET | scp [-prv] -f SOURCE...\n" +
            "       warren-agent version\n";

        /// <summary>Exit code for a usage error (sysexits.h EX_USAGE).</summary>
        public const int ExitUsage = 64;

        /// <summary>Exit code when a command cannot be executed (as POSIX shells use).</summary>
        public const int ExitCannotExecute = 126;

        /// <summary>Exit code when a command is not found (as POSIX shells use).</summary>
        public const int ExitNotFound = 127;

        public static async Task<int> RunAsync(string[] args)
        {
            // Called through a link init made for an image without these commands (PowerCommand.InstallMissingLinks).
            var invoked = PowerCommand.InvokedName();
            if (Array.IndexOf(PowerCommand.Names, invoked) >= 0) return PowerCommand.Run(invoked, args);

            if (args.Length == 0)
            {
                Console.Error.Write(Usage);
                return ExitUsage;
            }

            var rest = args.AsSpan(1).ToArray();
            try
            {
                return args[0] switch
                {
                    "init" => InitCommand.Run(rest),
                    "exec" => ExecCommands.Exec(rest),
                    "signal" => ExecCommands.Signal(rest),
                    "as-user" => ExecCommands.AsUser(rest),
                    "connect" => await ConnectCommand.RunAsync(rest),
                    "listen" => await ListenCommand.RunAsync(rest),
                    "serve" => ServeCommand.Run(rest),
                    "mux" => Vm.MuxCommand.Run(rest),
                    "hostname" => Vm.VmGuest.Hostname(rest),
                    "grow-fs" => Vm.GrowFsCommand.Run(rest),
                    "freeze" => Vm.FreezeCommand.Freeze(rest),
                    "thaw" => Vm.FreezeCommand.Thaw(rest),
                    "session-child" => SessionChildCommand.Run(rest),
                    "sftp" => Sftp.SftpMain.Run(rest),
                    "scp" => Scp.ScpMain.Run(rest),
                    "version" => Version(),
                    _ => UsageError($"unknown subcommand '{args[0]}'"),
                };
            }
            catch (AgentUsageException e)
            {
                return UsageError(e.Message);
            }
        }

        private static int Version()
        {
            Console.Out.Write("warren-agent 1\n");
            return 0;
        }

        public static int UsageError(string message)
        {
            Console.Error.Write($"warren-agent: {message}\n{Usage}");
            return ExitUsage;
        }
    }

    internal sealed class AgentUsageException(string message) : Exception(message);
}
