using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using Warren.Platform.Runtime;
using Warren.Platform.Tests.TestSupport;

namespace Warren.Platform.Tests.Mail;

/// <summary>
/// A runtime double whose <see cref="ExecAsync"/> runs the command with the host's real <c>/bin/sh</c>, HOME set to a
/// per-VM temp directory: the Maildir scripts run for real, without a container. Everything else is the fake's.
/// </summary>
internal sealed class LocalShellRuntime(FakeVmRuntime inner, string root) : IVmRuntime
{
    public ConcurrentBag<(string VmId, string? User, IReadOnlyList<string> Command)> Execs { get; } = new();

    /// <summary>Exec fails as for a stopped VM while true.</summary>
    public bool Unavailable { get; set; }

    public string HomeOf(string vmId) => Directory.CreateDirectory(Path.Combine(root, vmId)).FullName;

    public async Task<IVmProcess> ExecAsync(string vmId, ExecSpec spec, CancellationToken ct)
    {
        if (Unavailable) throw new IOException("VM is not running");
        Execs.Add((vmId, spec.User, spec.Command));
        var psi = new ProcessStartInfo(spec.Command[0])
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in spec.Command.Skip(1)) psi.ArgumentList.Add(a);
        psi.Environment["HOME"] = HomeOf(vmId);
        await Task.Yield();
        return new LocalProcess(Process.Start(psi)!);
    }

    private sealed class LocalProcess(Process process) : IVmProcess
    {
        public Stream StandardInput => process.StandardInput.BaseStream;
        public Stream StandardOutput => process.StandardOutput.BaseStream;
        public Stream? StandardError => process.StandardError.BaseStream;
        public Task CloseStandardInputAsync()
        {
            try { process.StandardInput.Close(); } catch (IOException) { }
            return Task.CompletedTask;
        }
        public Task ResizeAsync(int columns, int rows, CancellationToken ct) => Task.CompletedTask;
        public Task SignalAsync(string signal, CancellationToken ct) => Task.CompletedTask;
        public Task<ExitResult> Completion => process.WaitForExitAsync().ContinueWith(_ => new ExitResult(process.ExitCode, null), TaskScheduler.Default);
        public ValueTask DisposeAsync()
        {
            process.Dispose();
            return ValueTask.CompletedTask;
        }
    }

    public string Name => "local-shell";
    public Task<ImageInfo> PrepareImageAsync(string image, RegistryCredential? auth, CancellationToken ct) => inner.PrepareImageAsync(image, auth, ct);
    public Task CreateAsync(VmSpec spec, CancellationToken ct) => inner.CreateAsync(spec, ct);
    public Task StartAsync(string vmId, CancellationToken ct) => inner.StartAsync(vmId, ct);
    public Task StopAsync(string vmId, CancellationToken ct) => inner.StopAsync(vmId, ct);
    public Task RestartAsync(string vmId, CancellationToken ct) => inner.RestartAsync(vmId, ct);
    public Task RemoveAsync(string vmId, CancellationToken ct) => inner.RemoveAsync(vmId, ct);
    public Task<RuntimeVmInfo?> InspectAsync(string vmId, CancellationToken ct) => inner.InspectAsync(vmId, ct);
    public Task<IReadOnlyList<RuntimeVmInfo>> ListAsync(CancellationToken ct) => inner.ListAsync(ct);
    public Task<Stream> ConnectAsync(string vmId, string host, int port, CancellationToken ct) => inner.ConnectAsync(vmId, host, port, ct);
    public Task<IPAddress?> GetAddressAsync(string vmId, CancellationToken ct) => inner.GetAddressAsync(vmId, ct);
    public Task CopyAsync(string sourceVmId, VmSpec target, CancellationToken ct) => inner.CopyAsync(sourceVmId, target, ct);
    public Task RenameAsync(string vmId, string newName, CancellationToken ct) => inner.RenameAsync(vmId, newName, ct);
    public Task<ResizeOutcome> ResizeAsync(string vmId, VmResources resources, CancellationToken ct) => inner.ResizeAsync(vmId, resources, ct);
    public Task<VmStatsSample?> SampleStatsAsync(string vmId, CancellationToken ct) => inner.SampleStatsAsync(vmId, ct);
}
