using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Warren;
using Warren.Platform;
using Warren.Platform.Accounts;
using Warren.Platform.Runtime;
using Warren.Ssh.Keys;

return await WarrenCli.RunAsync(args);

namespace Warren
{
    /// <summary>`warren serve | user add | user list | help`.</summary>
    public static class WarrenCli
    {
        private const string Usage = """
            usage: warren <command> [--Warren:Key=Value ...]

              serve                                   run every front door in the foreground
              user add --email EMAIL --ssh-key-file F create an account offline (F: an OpenSSH public key file)
              user list                               list accounts
              help                                    this text

            Configuration: appsettings.json, ./warren.json, WARREN_* variables (WARREN_DATA=dir,
            WARREN_SshPort=2222 …), then --Warren:Key=Value overrides.
            """;

        public static async Task<int> RunAsync(string[] args)
        {
            if (args.Length == 0 || args[0] is "help" or "-h" or "--help") { Console.WriteLine(Usage); return args.Length == 0 ? 2 : 0; }
            try
            {
                return args[0] switch
                {
                    "serve" => await ServeAsync(args[1..]),
                    "user" when args.Length > 1 && args[1] == "add" => await UserAddAsync(args[2..]),
                    "user" when args.Length > 1 && args[1] == "list" => await UserListAsync(args[2..]),
                    _ => Fail($"unknown command \"{string.Join(' ', args.Take(2))}\"\n\n{Usage}"),
                };
            }
            catch (Microsoft.Extensions.Options.OptionsValidationException e)
            {
                return Fail("configuration: " + string.Join("; ", e.Failures));
            }
            catch (PlatformException e)
            {
                return Fail(e.Message);
            }
            catch (Warren.Runtime.Docker.DockerRuntimeException e)
            {
                return Fail($"{e.Message} (is dockerd running? ./run.sh starts it)");
            }
            catch (Warren.Runtime.MicroVm.MicroVmException e)
            {
                return Fail(e.Message);
            }
        }

        private static int Fail(string message)
        {
            Console.Error.WriteLine("warren: " + message);
            return 1;
        }

        /// <summary>Splits `--flag value` / `--flag=value` pairs this CLI knows from configuration overrides.</summary>
        private static (Dictionary<string, string> Flags, string[] Config) SplitFlags(string[] args, params string[] known)
        {
            var flags = new Dictionary<string, string>(StringComparer.Ordinal);
            var config = new List<string>();
            for (int i = 0; i < args.Length; i++)
            {
                var a = args[i];
                var name = a.Split('=', 2)[0];
                if (known.Contains(name))
                {
                    if (a.Contains('=')) flags[name] = a[(name.Length + 1)..];
                    else if (i + 1 < args.Length) flags[name] = args[++i];
                    else throw new PlatformException("usage", $"{name} needs a value");
                }
                else config.Add(a);
            }
            return (flags, config.ToArray());
        }

        private static ServiceProvider BuildOffline(string[] configArgs)
        {
            var configuration = WarrenConfiguration.Build(configArgs);
            var services = new ServiceCollection();
            services.AddLogging();
            services.AddSingleton<IConfiguration>(configuration);
            services.AddWarrenCore(configuration);
            return services.BuildServiceProvider();
        }

        private static async Task<int> UserAddAsync(string[] args)
        {
            var (flags, config) = SplitFlags(args, "--email", "--ssh-key-file");
            if (!flags.TryGetValue("--email", out var email) || !flags.TryGetValue("--ssh-key-file", out var keyFile))
                return Fail("usage: warren user add --email EMAIL --ssh-key-file FILE");
            if (!File.Exists(keyFile)) return Fail($"no such file: {keyFile}");
            var line = File.ReadLines(keyFile).FirstOrDefault(l => !string.IsNullOrWhiteSpace(l) && !l.TrimStart().StartsWith('#'));
            if (line is null || !SshPublicKey.TryParseOpenSsh(line.Trim(), out var key, out _) || key is null)
                return Fail($"{keyFile} does not hold an OpenSSH public key");
            await using var sp = BuildOffline(config);
            var accounts = sp.GetRequiredService<AccountService>();
            var existing = await accounts.FindByEmailAsync(email);
            // The operator vouches for the address: it counts as verified (an existing account's too, which is how an
            // operator verifies an account from before verification existed: its own key again is fine).
            if (existing is not null)
            {
                var holder = await accounts.FindByKeyFingerprintAsync(key.Fingerprint);
                if (holder is not null && holder.Id != existing.Id) return Fail($"key {key.Fingerprint} belongs to another account");
                if (holder is null)
                {
                    await accounts.AddKeyAsync(existing.Id, key);
                    Console.WriteLine($"added key {key.Fingerprint} to {existing.Email}");
                }
                if (!existing.EmailVerified && await accounts.MarkEmailVerifiedAsync(existing.Id, existing.Email))
                    Console.WriteLine($"{existing.Email} is verified");
                return 0;
            }
            var account = await accounts.CreateAsync(email, key, emailVerified: true);
            Console.WriteLine($"created {account.Email} ({account.Id}) with key {key.Fingerprint}");
            return 0;
        }

        private static async Task<int> UserListAsync(string[] args)
        {
            await using var sp = BuildOffline(args);
            var accounts = sp.GetRequiredService<AccountService>();
            foreach (var a in await accounts.ListAccountsAsync())
            {
                var keys = await accounts.ListKeysAsync(a.Id);
                Console.WriteLine($"{a.Email}\t{a.Id}\t{keys.Count} key(s)\t{a.CreatedAt:O}");
            }
            return 0;
        }

        private static async Task<int> ServeAsync(string[] args)
        {
            var configuration = WarrenConfiguration.Build(args);
            // Refused before any listener opens (AutoVerify on a reachable install, say), with every problem listed.
            var platform = new PlatformOptions();
            configuration.GetSection(PlatformOptions.SectionName).Bind(platform);
            if (platform.Validate() is { Count: > 0 } problems)
                return Fail("refusing to start:\n  " + string.Join("\n  ", problems));
            InlineSocketIo.ApplyBeforeFirstSocket(configuration);
            var builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = [], ContentRootPath = AppContext.BaseDirectory });
            builder.Configuration.Sources.Clear();
            builder.Configuration.AddConfiguration(configuration);
            builder.Logging.AddSimpleConsole(o => { o.SingleLine = true; o.TimestampFormat = "HH:mm:ss "; });

            // One failing background loop (stats sampling, say) must not take the front doors down.
            builder.Services.Configure<HostOptions>(o => o.BackgroundServiceExceptionBehavior = BackgroundServiceExceptionBehavior.Ignore);
            // Each runtime prepares its host side (packet filter, networks, disks or QEMU processes) before reconciliation.
            builder.Services.AddHostedService<VmHostPreparation>();
            builder.Services.AddHostedService<StartupReconciler>();
            builder.Services.AddHostedService<VmRunStateWatcher>();
            builder.Services.AddWarrenCore(configuration);
            builder.Services.AddWarrenRuntime(configuration);
            builder.Services.AddWarrenSshFrontDoor(configuration);
            builder.AddWarrenWebAndDns(configuration);
            builder.Services.AddWarrenInboundMail(configuration);
            builder.Services.AddWarrenMetadata(configuration);

            var app = builder.Build();
            app.UseWarrenWeb();
            var options = app.Services.GetRequiredService<PlatformOptions>();
            await app.StartAsync();
            PrintBanner(options, configuration, app);
            await app.WaitForShutdownAsync();
            return 0;
        }

        private static void PrintBanner(PlatformOptions o, IConfiguration configuration, WebApplication app)
        {
            var slots = string.Join(", ", o.EffectiveSlots.Select(s => $"{s.Name}={s.LocalIp}"));
            Console.WriteLine($"""

                Warren is running.
                  control plane   ssh -p {o.SshPort} {o.ControlLocalIp}   (host {o.ControlHost})
                  VM addresses    {slots} on port {o.SshPort}
                  DNS             {o.ControlLocalIp}:{configuration["Warren:DnsPort"] ?? "5353"} for {o.VmDomain}
                  HTTPS           https://{o.ControlHost}:{o.HttpsPort}/  and  https://NAME.{o.VmDomain}:{o.HttpsPort}/
                  SMTP            {(MailComposition.SmtpPort(configuration) > 0 ? $"{o.ControlLocalIp}:{MailComposition.SmtpPort(configuration)} (MX {MailComposition.MailExchangeHost(configuration, o)}) for anything@NAME.{o.VmDomain}" : "off")}
                  data            {Path.GetFullPath(o.DataDirectory)}
                  sign-up         {SignupMode(o, configuration)}
                  runtime         {RuntimeMode(app.Services.GetRequiredService<IVmRuntime>())}
                First account:    ./warren user add --email you@example.com --ssh-key-file ~/.ssh/id_ed25519.pub
                Then:             ssh -p {o.SshPort} {o.ControlLocalIp} new --name=web
                """);
        }

        /// <summary>Which runtime runs VMs and what that means, for the banner (Warren:Runtime).</summary>
        private static string RuntimeMode(IVmRuntime runtime) => runtime switch
        {
            Warren.Runtime.MicroVm.MicroVmRuntime m =>
                $"microvm: QEMU microVMs with {(m.UsesKvm ? "KVM" : "TCG (no usable KVM: slow, for development and CI)")}; "
                + (m.UsesTap ? $"tap networking, isolation {(m.IsolationEnforced ? "enforced" : "OFF")}"
                    : "QEMU user networking: DEVELOPMENT ONLY, VMs are not fenced off from this host's loopback services"),
            _ => "docker: VMs are containers on the engine (Warren:Runtime=microvm for QEMU microVMs)",
        };

        /// <summary>How a new key gets an account, for the banner: AutoVerify must never go unnoticed.</summary>
        private static string SignupMode(PlatformOptions o, IConfiguration configuration)
        {
            if (o.Signup.AutoVerify)
                return "AUTO-VERIFY (dev, loopback only): a typed address counts as verified, no code is mailed";
            return string.IsNullOrWhiteSpace(configuration["Warren:Smtp:Host"])
                ? "off: no mail relay (Warren:Smtp) to send codes; add accounts with ./warren user add"
                : "a verification code is mailed to the address";
        }
    }
}
