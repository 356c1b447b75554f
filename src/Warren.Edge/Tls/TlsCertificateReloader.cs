using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Warren.Edge.Tls;

/// <summary>
/// Serves renewed certificates without a restart: watches the directories of the
/// <see cref="TlsCertificateProvider"/>'s files and calls <see cref="TlsCertificateProvider.Reload"/>
/// once changes have been quiet for <see cref="TlsOptions.ReloadDebounce"/>, and again every
/// <see cref="TlsOptions.ReloadCheckInterval"/> in case no change event arrives.
/// </summary>
/// <remarks>
/// Whole directories are watched, not just the file names: renewals often swap a symlink or a
/// directory (certbot's <c>live/</c> links, Kubernetes' <c>..data</c>), whose events carry other names.
/// A reload of unchanged files costs two small reads and does nothing.
/// </remarks>
public sealed class TlsCertificateReloader : IHostedService, IDisposable
{
    private readonly TlsCertificateProvider _provider;
    private readonly TimeSpan _debounce;
    private readonly TimeSpan _checkInterval;
    private readonly bool _watchFiles;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly object _gate = new();
    private readonly List<FileSystemWatcher> _watchers = new();
    private ITimer? _debounceTimer;
    private ITimer? _checkTimer;
    private bool _stopped;

    public TlsCertificateReloader(TlsCertificateProvider provider, TlsOptions options, TimeProvider time, ILogger logger)
        : this(provider, options.ReloadDebounce, options.ReloadCheckInterval, watchFiles: true, time, logger)
    {
    }

    /// <param name="watchFiles">False: the periodic check only (tests of that backup path).</param>
    internal TlsCertificateReloader(TlsCertificateProvider provider, TimeSpan debounce, TimeSpan checkInterval, bool watchFiles, TimeProvider time, ILogger logger)
    {
        _provider = provider;
        _debounce = debounce > TimeSpan.Zero ? debounce : TimeSpan.Zero;
        _checkInterval = checkInterval;
        _watchFiles = watchFiles;
        _time = time;
        _logger = logger;
    }

    /// <summary>Reloads completed so far (for tests and diagnostics).</summary>
    public int Checks => Volatile.Read(ref _checks);
    private int _checks;

    public Task StartAsync(CancellationToken cancellationToken)
    {
        Start();
        return Task.CompletedTask;
    }

    public Task StopAsync(CancellationToken cancellationToken)
    {
        Dispose();
        return Task.CompletedTask;
    }

    public void Start()
    {
        lock (_gate)
        {
            if (_stopped || _debounceTimer is not null)
                return;
            _debounceTimer = _time.CreateTimer(_ => ReloadNow(), null, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
            if (_checkInterval > TimeSpan.Zero)
                _checkTimer = _time.CreateTimer(_ => ReloadNow(), null, _checkInterval, _checkInterval);
            if (!_watchFiles)
                return;
            foreach (var directory in _provider.SourceFiles.Select(Path.GetDirectoryName).OfType<string>().Distinct(StringComparer.Ordinal))
            {
                try
                {
                    var watcher = new FileSystemWatcher(directory)
                    {
                        IncludeSubdirectories = false,
                        NotifyFilter = NotifyFilters.FileName | NotifyFilters.DirectoryName | NotifyFilters.LastWrite
                            | NotifyFilters.Size | NotifyFilters.CreationTime,
                    };
                    watcher.Changed += (_, _) => Schedule();
                    watcher.Created += (_, _) => Schedule();
                    watcher.Deleted += (_, _) => Schedule();
                    watcher.Renamed += (_, _) => Schedule();
                    // Overflowed or broken watch: events may be lost, so look now (the periodic check stays as backup).
                    watcher.Error += (_, _) => Schedule();
                    watcher.EnableRaisingEvents = true;
                    _watchers.Add(watcher);
                }
                catch (Exception ex) when (ex is ArgumentException or IOException or PlatformNotSupportedException or UnauthorizedAccessException)
                {
                    Log.WatchFailed(_logger, directory, ex);
                }
            }
        }
    }

    /// <summary>(Re)starts the quiet period: the reload runs once events stop for the debounce time.</summary>
    private void Schedule()
    {
        lock (_gate)
        {
            if (!_stopped)
                _debounceTimer?.Change(_debounce, Timeout.InfiniteTimeSpan);
        }
    }

    private void ReloadNow()
    {
        try
        {
            _provider.Reload();
        }
        catch (Exception ex)
        {
            // Reload reports bad files itself; this is the unexpected rest. The timer thread must survive it.
            Log.ReloadCrashed(_logger, ex);
        }
        Interlocked.Increment(ref _checks);
    }

    public void Dispose()
    {
        lock (_gate)
        {
            _stopped = true;
            foreach (var watcher in _watchers)
                watcher.Dispose();
            _watchers.Clear();
            _debounceTimer?.Dispose();
            _checkTimer?.Dispose();
        }
    }

    private static class Log
    {
        private static readonly Action<ILogger, string, Exception?> s_watchFailed = LoggerMessage.Define<string>(
            LogLevel.Warning, EdgeEventIds.TlsCertificateReloadFailed,
            "Cannot watch {Directory} for certificate changes; renewed certificates are picked up by the periodic check only");
        private static readonly Action<ILogger, Exception?> s_reloadCrashed = LoggerMessage.Define(
            LogLevel.Error, EdgeEventIds.TlsCertificateReloadFailed, "Certificate reload failed; still serving the previous certificates");

        public static void WatchFailed(ILogger l, string directory, Exception ex) => s_watchFailed(l, directory, ex);
        public static void ReloadCrashed(ILogger l, Exception ex) => s_reloadCrashed(l, ex);
    }
}
