using Warren.Platform.Audit;
using Warren.Platform.Tests.TestSupport;
using Xunit;

namespace Warren.Platform.Tests.Audit;

public sealed class AuditLogTests : IDisposable
{
    private readonly TestPlatform _p = new();
    public void Dispose() => _p.Dispose();

    [Fact]
    public async Task Append_RedactsSecrets_AndTailReturnsOldestFirst()
    {
        const string secret = "ghp_topsecret";
        await _p.Audit.AppendAsync(new AuditEntry(_p.Time.GetUtcNow(), "acct_1", "SHA256:x", "127.0.0.1:5000", "new",
            ["--name=web", $"--registry-auth=me:{secret}", "--registry-auth", $"me:{secret}", "exe1.ABCDEF"], "ok", null, TimeSpan.FromMilliseconds(12)));
        await _p.Audit.AppendAsync(new AuditEntry(_p.Time.GetUtcNow(), "acct_2", null, null, "ls", [], "error", "vm_not_found", null));

        var all = await _p.Audit.TailAsync(10);
        Assert.Equal(["new", "ls"], all.Select(e => e.Command));
        Assert.Equal(["--name=web", "--registry-auth=***", "--registry-auth", "***", "***"], all[0].Arguments);
        Assert.Equal(TimeSpan.FromMilliseconds(12), all[0].Duration);
        Assert.Equal("vm_not_found", Assert.Single(await _p.Audit.TailAsync(10, "acct_2")).ErrorCode);
        Assert.Single(await _p.Audit.TailAsync(1));

        _p.Db.Dispose();
        var bytes = string.Concat(Directory.GetFiles(_p.Directory_).Select(File.ReadAllText));
        Assert.DoesNotContain(secret, bytes);
    }
}
