namespace Warren.Platform.Vms;

/// <summary>One async mutex per key (VM id), created on demand and dropped when nobody holds or waits on it.</summary>
internal sealed class KeyedLock
{
    private readonly Dictionary<string, (SemaphoreSlim Sem, int Users)> _locks = new(StringComparer.Ordinal);

    public async Task<IDisposable> AcquireAsync(string key, CancellationToken ct)
    {
        SemaphoreSlim sem;
        lock (_locks)
        {
            if (_locks.TryGetValue(key, out var e)) { sem = e.Sem; _locks[key] = (sem, e.Users + 1); }
            else { sem = new SemaphoreSlim(1, 1); _locks[key] = (sem, 1); }
        }
        try { await sem.WaitAsync(ct).ConfigureAwait(false); }
        catch { Release(key, acquired: false); throw; }
        return new Releaser(this, key);
    }

    private void Release(string key, bool acquired)
    {
        lock (_locks)
        {
            var (sem, users) = _locks[key];
            if (acquired) sem.Release();
            if (users == 1) { _locks.Remove(key); sem.Dispose(); }
            else _locks[key] = (sem, users - 1);
        }
    }

    private sealed class Releaser(KeyedLock owner, string key) : IDisposable
    {
        private int _done;
        public void Dispose() { if (Interlocked.Exchange(ref _done, 1) == 0) owner.Release(key, acquired: true); }
    }
}
