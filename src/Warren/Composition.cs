using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using Warren.Edge.Http;
using Warren.Edge.Limits;
using Warren.Edge.Ssh;
using Warren.Platform;
using Warren.Platform.Addressing;
using Warren.Platform.Commands;
using Warren.Platform.Interactive;
using Warren.Platform.Runtime;
using Warren.Platform.Storage;
using Warren.Platform.Tokens;
using Warren.Runtime.Docker;
using Warren.Runtime.HostNetwork;
using Warren.Ssh.Auth;
using Warren.Ssh.Keys;
using Warren.Ssh.Server;

namespace Warren;

/// <summary>The object graph of a Warren process: which implementation serves each port.</summary>
public static class Composition
{
    /// <summary>Platform services, the command set and tokens: what both `serve` and the offline CLI need.</summary>
    public static IServiceCollection AddWarrenCore(this IServiceCollection services, IConfiguration configuration)
    {
        var smtp = new Warren.Edge.Smtp.SmtpRelayOptions();
        configuration.GetSection(Warren.Edge.Smtp.SmtpRelayOptions.SectionName).Bind(smtp);
        if (smtp.Enabled)
        {
            services.AddSingleton(smtp);
            services.TryAddSingleton<IEmailSender, Warren.Edge.Smtp.SmtpRelayEmailSender>();
        }
        services.AddSingleton(Exe1Store.Migration);
        services.AddWarrenPlatform(configuration);
        Warren.Platform.Integrations.IntegrationServiceCollectionExtensions.AddWarrenIntegrations(services, configuration);
        services.TryAddSingleton<Exe1Store>();
        services.TryAddSingleton<TokenAuthenticator>();
        services.TryAddSingleton<ApiKeyService>();
        services.TryAddSingleton(sp => new CommandServices(
            sp.GetRequiredService<PlatformOptions>(),
            sp.GetRequiredService<Warren.Platform.Accounts.AccountService>(),
            sp.GetRequiredService<Warren.Platform.Vms.VmService>(),
            sp.GetRequiredService<Warren.Platform.Sharing.ShareService>(),
            sp.GetRequiredService<Warren.Platform.Stats.StatsStore>(),
            sp.GetRequiredService<PlatformIndex>(),
            sp.GetRequiredService<SshRouteTable>(),
            sp.GetRequiredService<ApiKeyService>(),
            sp.GetRequiredService<TimeProvider>(),
            sp.GetService<ILoginLinkIssuer>(),
            sp.GetService<IEmailSender>(),
            sp.GetService<Warren.Platform.Audit.AuditLog>(),
            sp.GetService<Warren.Platform.Mail.ReceiveEmailService>(),
            sp.GetService<Warren.Platform.Integrations.IntegrationService>()));
        services.TryAddSingleton<CommandDispatcher>();
        services.TryAddSingleton(sp => new CommandCompleter(sp.GetRequiredService<PlatformIndex>()));
        services.TryAddSingleton<InteractiveShell>();
        services.TryAddSingleton(sp => new SignupDialogue(
            sp.GetRequiredService<Warren.Platform.Accounts.AccountService>(),
            sp.GetRequiredService<PlatformOptions>(),
            sp.GetRequiredService<TimeProvider>(),
            sp.GetService<IEmailSender>(),
            sp.GetRequiredService<Warren.Platform.Accounts.EmailVerifications>()));
        services.TryAddSingleton<Warren.Platform.Accounts.EmailVerifications>();
        return services;
    }

    /// <summary>
    /// The runtime <c>Warren:Runtime</c> names: <c>docker</c> (default) or <c>microvm</c> (QEMU microVMs,
    /// <c>Warren:MicroVm</c>; images still come from the engine configured by <c>Warren:Docker</c>).
    /// </summary>
    public static IServiceCollection AddWarrenRuntime(this IServiceCollection services, IConfiguration configuration)
    {
        string runtime = RuntimeName(configuration);
        return runtime switch
        {
            "docker" => services.AddWarrenDockerRuntime(configuration),
            "microvm" => services.AddWarrenMicroVmRuntime(configuration),
            _ => throw new PlatformException(PlatformErrorCodes.InvalidArgument, $"Warren:Runtime must be docker or microvm, not \"{runtime}\""),
        };
    }

    /// <summary>The runtime <c>Warren:Runtime</c> names, <c>docker</c> when unset.</summary>
    public static string RuntimeName(IConfiguration configuration) => configuration["Warren:Runtime"] ?? "docker";

    /// <summary>The microVM runtime: VMs under <c>&lt;data&gt;/microvm</c> unless <c>Warren:MicroVm:DataDirectory</c> says otherwise.</summary>
    public static IServiceCollection AddWarrenMicroVmRuntime(this IServiceCollection services, IConfiguration configuration)
    {
        services.TryAddSingleton(sp =>
        {
            var o = new Warren.Runtime.MicroVm.MicroVmRuntimeOptions();
            configuration.GetSection("Warren:MicroVm").Bind(o);
            var docker = new DockerRuntimeOptions();
            configuration.GetSection("Warren:Docker").Bind(docker);
            // Taps are fenced by the same packet-filter table (name from the instance id) and pool as containers.
            configuration.GetSection(HostNetworkOptions.SectionName).Bind(docker.VmNetwork);
            if (sp.GetService<Warren.Edge.Metadata.MetadataSockets>() is { } metadata)
            {
                docker.VmNetwork.MetadataListenPort = metadata.MetadataPort;
                docker.VmNetwork.VmDnsListenPort = metadata.DnsPort;
            }
            if (string.IsNullOrEmpty(configuration["Warren:Docker:Instance"]))
                docker.Instance = InstanceId.LoadOrCreate(sp.GetRequiredService<PlatformOptions>().DataDirectory);
            o.Docker = docker;
            o.DataDirectory = Path.GetFullPath(string.IsNullOrEmpty(o.DataDirectory)
                ? Path.Combine(sp.GetRequiredService<PlatformOptions>().DataDirectory, "microvm")
                : o.DataDirectory);
            return o;
        });
        services.TryAddSingleton(sp => new Warren.Runtime.MicroVm.MicroVmRuntime(
            sp.GetRequiredService<Warren.Runtime.MicroVm.MicroVmRuntimeOptions>(),
            sp.GetRequiredService<ILoggerFactory>().CreateLogger<Warren.Runtime.MicroVm.MicroVmRuntime>()));
        services.TryAddSingleton<IVmRuntime>(sp => sp.GetRequiredService<Warren.Runtime.MicroVm.MicroVmRuntime>());
        services.TryAddSingleton<IVmHostFence>(sp => sp.GetRequiredService<Warren.Runtime.MicroVm.MicroVmRuntime>());
        return services;
    }

    /// <summary>The Docker runtime.</summary>
    public static IServiceCollection AddWarrenDockerRuntime(this IServiceCollection services, IConfiguration configuration)
    {
        services.TryAddSingleton(sp =>
        {
            var o = new DockerRuntimeOptions();
            configuration.GetSection("Warren:Docker").Bind(o);
            configuration.GetSection(HostNetworkOptions.SectionName).Bind(o.VmNetwork);
            // The metadata service's and VM resolver's ports, bound already, go into the packet filter's redirect.
            if (sp.GetService<Warren.Edge.Metadata.MetadataSockets>() is { } metadata)
            {
                o.VmNetwork.MetadataListenPort = metadata.MetadataPort;
                o.VmNetwork.VmDnsListenPort = metadata.DnsPort;
            }
            // Containers are labelled with an instance id so that reconciliation only ever touches
            // this installation's VMs, never another daemon's on the same engine.
            if (string.IsNullOrEmpty(configuration["Warren:Docker:Instance"]))
                o.Instance = InstanceId.LoadOrCreate(sp.GetRequiredService<PlatformOptions>().DataDirectory);
            // Session sockets (docs/AGENT-PROTOCOL.md) live under the data directory unless configured; the engine
            // bind-mounts from there, so the path must be absolute.
            o.AgentSocketDirectory = Path.GetFullPath(string.IsNullOrEmpty(o.AgentSocketDirectory)
                ? Path.Combine(sp.GetRequiredService<PlatformOptions>().DataDirectory, "run")
                : o.AgentSocketDirectory);
            // VM disk images (enforced --disk) live beside the rest of the installation's data.
            o.DiskDirectory = Path.GetFullPath(string.IsNullOrEmpty(o.DiskDirectory)
                ? Path.Combine(sp.GetRequiredService<PlatformOptions>().DataDirectory, "disks")
                : o.DiskDirectory);
            return o;
        });
        services.TryAddSingleton<DockerVmRuntime>();
        services.TryAddSingleton<IVmRuntime>(sp => sp.GetRequiredService<DockerVmRuntime>());
        services.TryAddSingleton<IVmHostFence>(sp => sp.GetRequiredService<DockerVmRuntime>());
        return services;
    }

    /// <summary>The SSH front door: host keys from the data directory, one server, the listeners.</summary>
    public static IServiceCollection AddWarrenSshFrontDoor(this IServiceCollection services, IConfiguration configuration)
    {
        services.TryAddSingleton(sp =>
        {
            var o = new SshFrontDoorOptions();
            configuration.GetSection(SshFrontDoorOptions.SectionName).Bind(o);
            return o;
        });
        services.TryAddSingleton(sp => new VmSessionRelay(sp.GetRequiredService<IVmRuntime>(), sp.GetRequiredService<ILoggerFactory>().CreateLogger("Warren.Edge.Ssh.Vm")));
        services.TryAddSingleton<LoginUserResolver>();
        services.TryAddSingleton(sp => new ControlPlaneSession(
            sp.GetRequiredService<CommandDispatcher>(),
            sp.GetRequiredService<InteractiveShell>(),
            sp.GetRequiredService<SignupDialogue>(),
            sp.GetRequiredService<Warren.Platform.Accounts.AccountService>(),
            sp.GetRequiredService<SshRouteTable>(),
            sp.GetRequiredService<PlatformOptions>(),
            sp.GetRequiredService<VmSessionRelay>(),
            sp.GetRequiredService<LoginUserResolver>(),
            sp.GetRequiredService<ILoggerFactory>().CreateLogger("Warren.Edge.Ssh.Control")));
        services.TryAddSingleton(sp =>
        {
            var o = sp.GetRequiredService<SshFrontDoorOptions>();
            var limiter = new KeyedTokenBucket(sp.GetRequiredService<TimeProvider>(), o.FailedAuthBurstPerSource, o.FailedAuthsPerSecondPerSource, overdraft: 0);
            return ActivatorUtilities.CreateInstance<WarrenSshApplication>(sp, limiter);
        });
        services.TryAddSingleton(sp =>
        {
            var platform = sp.GetRequiredService<PlatformOptions>();
            var hostKeys = SshHostKeyStore.LoadOrCreate(Path.Combine(Path.GetFullPath(platform.DataDirectory), "ssh"));
            var frontDoor = sp.GetRequiredService<SshFrontDoorOptions>();
            var time = sp.GetRequiredService<TimeProvider>();
            var transport = new Warren.Ssh.Transport.SshTransportServerOptions { TimeProvider = time, HostKeys = hostKeys };
            Warren.Ssh.Crypto.SshAlgorithmProfiles.Apply(transport, frontDoor.AlgorithmProfile);
            return new SshServer(new SshServerOptions
            {
                HostKeys = hostKeys,
                Transport = transport,
                TimeProvider = time,
                MaxUnauthenticatedConnectionsPerSource = frontDoor.MaxUnauthenticatedConnectionsPerSource,
                MaxUnauthenticatedConnections = frontDoor.MaxUnauthenticatedConnections,
                // keyboard-interactive never authenticates: it tells a client without keys how to make one.
                AuthenticationMethods = SshAuthMethodSet.PublicKey | SshAuthMethodSet.KeyboardInteractive,
            },
                sp.GetRequiredService<WarrenSshApplication>());
        });
        services.AddSingleton<SshFrontDoor>();
        services.AddHostedService(sp => sp.GetRequiredService<SshFrontDoor>());
        return services;
    }
}
