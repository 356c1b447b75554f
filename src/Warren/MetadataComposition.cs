using System.Net;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using Warren.Edge.Adapters;
using Warren.Edge.Dns;
using Warren.Edge.Metadata;
using Warren.Platform;
using Warren.Platform.Addressing;
using Warren.Platform.Interactive;
using Warren.Platform.Mail;
using Warren.Platform.Storage;
using Warren.Runtime.Docker;
using Warren.Runtime.HostNetwork;

namespace Warren;

/// <summary>
/// What VMs reach at 169.254.169.254: the metadata service (HTTP, port 80) with the email gateway, and the VM resolver
/// (port 53). Served with isolation on, for containers and for microVMs on taps (the packet filter's redirect is what routes VM traffic
/// there and identifies the VM); <c>Warren:Network:MetadataServed=false</c> turns both off.
/// </summary>
public static class MetadataComposition
{
    public static bool Enabled(IConfiguration configuration)
    {
        var network = new HostNetworkOptions();
        configuration.GetSection(HostNetworkOptions.SectionName).Bind(network);
        // A microVM on QEMU user networking has no tap for the redirect (and no isolation): nothing to serve it on.
        bool fenced = Composition.RuntimeName(configuration) switch
        {
            "docker" => true,
            "microvm" => !string.Equals(configuration["Warren:MicroVm:Network"], "User", StringComparison.OrdinalIgnoreCase),
            _ => false,
        };
        return fenced && network.MetadataServed && network.Isolation == IsolationMode.On;
    }

    public static IServiceCollection AddWarrenMetadata(this IServiceCollection services, IConfiguration configuration)
    {
        services.TryAddSingleton(sp => new VmEmailGateway(
            sp.GetRequiredService<WarrenDatabase>(),
            sp.GetService<IEmailSender>(),
            sp.GetService<IEmailSender>() is IReplyToEmailSender replyTo ? replyTo.SendAsync : null,
            sp.GetRequiredService<ILogger<VmEmailGateway>>()));
        if (!Enabled(configuration)) return services;

        var network = new HostNetworkOptions();
        configuration.GetSection(HostNetworkOptions.SectionName).Bind(network);
        services.TryAddSingleton(_ => new MetadataSockets(network.MetadataListenPort, network.VmDnsListenPort));
        services.TryAddSingleton(sp =>
        {
            var o = new MetadataOptions();
            configuration.GetSection(MetadataOptions.SectionName).Bind(o);
            return o;
        });
        services.TryAddSingleton<IVmHostAddressDirectory>(sp => Composition.RuntimeName(configuration) == "microvm"
            ? new HostAddressDirectory(sp.GetRequiredService<Warren.Runtime.MicroVm.MicroVmRuntime>().FindVmIdByHostAddressAsync)
            : new HostAddressDirectory(sp.GetRequiredService<DockerVmRuntime>().FindVmIdByHostAddressAsync));
        services.TryAddSingleton(sp => new MetadataCallerResolver(
            sp.GetRequiredService<IVmHostAddressDirectory>(), sp.GetRequiredService<PlatformIndex>(), sp.GetRequiredService<TimeProvider>()));
        services.TryAddSingleton(sp => new MetadataRequestHandler(
            sp.GetRequiredService<MetadataCallerResolver>(),
            sp.GetRequiredService<MetadataOptions>(),
            sp.GetRequiredService<PlatformOptions>().VmDomain,
            sp.GetRequiredService<TimeProvider>(),
            sp.GetRequiredService<VmEmailGateway>(),
            sp.GetService<IIntegrationRequestHandler>(),
            sp.GetRequiredService<ILogger<MetadataRequestHandler>>()));
        services.AddSingleton<MetadataServer>();
        services.AddHostedService(sp => sp.GetRequiredService<MetadataServer>());
        services.TryAddSingleton(sp => new VmResolver(
            sp.GetRequiredService<MetadataSockets>(),
            sp.GetRequiredService<PlatformOptions>().VmDomain,
            new DnsRelay(Upstreams(network)),
            sp.GetRequiredService<ILogger<VmResolver>>()));
        services.AddHostedService(sp => sp.GetRequiredService<VmResolver>());
        return services;
    }

    /// <summary>
    /// <c>Warren:Network:VmDnsUpstreams</c>, else the resolvers VMs used before Warren answered their DNS: the
    /// configured <c>DnsServers</c>, else the host's non-loopback nameservers. A loopback stub is skipped: it serves the
    /// host (and may know host-private names), and VMs never reached it before.
    /// </summary>
    public static IReadOnlyList<IPEndPoint> Upstreams(HostNetworkOptions network)
    {
        if (network.VmDnsUpstreams.Length > 0)
            return network.VmDnsUpstreams.Select(u => DnsRelay.TryParseUpstream(u, out var e) ? e
                : throw new PlatformException(PlatformErrorCodes.InvalidArgument, $"Warren:Network:VmDnsUpstreams: '{u}' is not IP or IP:PORT")).ToList();
        return VmFirewall.ResolveDnsServers(network.DnsServers).Select(a => new IPEndPoint(a, 53)).ToList();
    }

    /// <summary>The runtime answers which VM's network (bridge or tap) has a host address.</summary>
    private sealed class HostAddressDirectory(Func<IPAddress, CancellationToken, Task<string?>> find) : IVmHostAddressDirectory
    {
        public Task<string?> FindVmIdByHostAddressAsync(IPAddress hostAddress, CancellationToken ct) => find(hostAddress, ct);
    }
}
