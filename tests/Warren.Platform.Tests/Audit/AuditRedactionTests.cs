using CsCheck;
using Warren.Platform.Audit;
using Warren.Platform.Commands;
using Warren.Platform.Tests.Commands;
using Xunit;

namespace Warren.Platform.Tests.Audit;

/// <summary>
/// The audit log masks secrets by reading the arguments as the command parser does, so every spelling the parser
/// accepts is masked (the text match that came before it missed <c>-registry-auth</c> with one dash).
/// </summary>
public sealed class AuditRedactionTests : IDisposable
{
    private const int PropertyIterations = 2000;
    private const string Secret = "ghp_S3CRET-value";
    private readonly CommandHarness _h = new();
    public void Dispose() => _h.Dispose();

    public static TheoryData<string[]> SecretSpellings => new()
    {
        new[] { "--registry-auth=me:" + Secret },
        new[] { "-registry-auth=me:" + Secret },
        new[] { "--registry-auth", "me:" + Secret },
        new[] { "-registry-auth", "me:" + Secret },
        new[] { "--env=TOKEN=" + Secret },
        new[] { "-env", "TOKEN=" + Secret },
        new[] { "--setup-script", "export TOKEN=" + Secret },
        new[] { "-setup-script=export TOKEN=" + Secret },
    };

    [Theory]
    [MemberData(nameof(SecretSpellings))]
    public async Task New_EverySpellingOfASecretFlag_IsMaskedInTheAuditLog(string[] secretArgs)
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        string[] argv = ["new", "--name=web", "--image", "warren/busybox:1", .. secretArgs, "--json"];
        var r = await _h.RunAsync(a, k, argv);
        Assert.True(r.Exit == 0, r.Stdout + r.Stderr);
        var entry = Assert.Single(await _h.P.Audit.TailAsync(10, a.Id));
        Assert.Equal("new", entry.Command);
        Assert.DoesNotContain(entry.Arguments, x => x.Contains(Secret, StringComparison.Ordinal));
        Assert.Contains(entry.Arguments, x => x.EndsWith(AuditRedaction.Mask, StringComparison.Ordinal));
        // What is no secret stays readable.
        Assert.Contains("--name=web", entry.Arguments);
        Assert.Contains("warren/busybox:1", entry.Arguments);
    }

    [Theory]
    [InlineData("-registry-auth=me:" + Secret)]
    [InlineData("--registry-autth=me:" + Secret)] // a mistyped flag: a usage error, and still no secret in the log
    public async Task FailedCommands_AreMaskedToo(string flag)
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        await _h.RunAsync(a, k, "new", "--name=Bad_Name", flag);
        await _h.RunAsync(a, k, "nwe", flag, "--registry-auth", Secret);
        var entries = await _h.P.Audit.TailAsync(10, a.Id);
        Assert.Equal(2, entries.Count);
        Assert.All(entries, e => Assert.DoesNotContain(e.Arguments, x => x.Contains(Secret, StringComparison.Ordinal)));
    }

    [Fact]
    public async Task SecretPositionals_AreMasked()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        await _h.RunAsync(a, k, "share", "remove-link", "web", Secret);
        await _h.RunAsync(a, k, "exe0-to-exe1", Secret);
        var entries = await _h.P.Audit.TailAsync(10, a.Id);
        Assert.Equal(["share remove-link", "exe0-to-exe1"], entries.Select(e => e.Command));
        Assert.Equal(["share", "remove-link", "web", AuditRedaction.Mask], entries[0].Arguments);
        Assert.Equal(["exe0-to-exe1", AuditRedaction.Mask], entries[1].Arguments);
    }

    [Fact]
    public void Redact_ArgumentsWithoutTheCommandWords_AreReadWithThatCommandsFlags()
    {
        Assert.Equal(["--name=web", "-registry-auth=***", "-registry-auth", "***", "--tag", "web"],
            AuditRedaction.Redact("new", ["--name=web", "-registry-auth=me:x", "-registry-auth", "me:x", "--tag", "web"]));
        // An unknown command: every flag value is masked, positionals are kept.
        Assert.Equal(["frob", "--x=***", "-y", "***", "z"], AuditRedaction.Redact("(unknown)", ["frob", "--x=1", "-y", "2", "--", "z"]).Where(s => s != "--"));
    }

    [Fact]
    public void Redact_NoSpellingOfASecretFlagLeaks_WhateverSurroundsIt()
    {
        var plain = Gen.OneOf(Gen.Const("--name=web"), Gen.Const("web"), Gen.Const("--json"), Gen.Const("-tag"), Gen.Const("x"),
            Gen.Const("--cpu"), Gen.Const("2"), Gen.Const("--"), Gen.Const("-"));
        var flag = Gen.OneOf(Gen.Const("registry-auth"), Gen.Const("env"), Gen.Const("setup-script"));
        var spelled = Gen.Select(flag, Gen.Bool, Gen.Bool).Select((f, twoDashes, inline) =>
        {
            string name = (twoDashes ? "--" : "-") + f;
            return inline ? new[] { name + "=" + Secret } : new[] { name, Secret };
        });
        Gen.Select(plain.Array[0, 5], spelled, plain.Array[0, 5]).Sample((before, secret, after) =>
        {
            // Flags end at "--": a secret after it is a positional of new, which has none that are secret.
            if (before.Contains("--")) return;
            string[] argv = ["new", .. before, .. secret, .. after];
            var redacted = AuditRedaction.Redact("new", argv);
            Assert.Equal(argv.Length, redacted.Count);
            Assert.DoesNotContain(redacted, x => x.Contains(Secret, StringComparison.Ordinal));
        }, iter: PropertyIterations, threads: 1);
    }
}
