using System.Collections.Concurrent;
using Warren.Ssh.Keys;

namespace Warren.Ssh.Tests.Keys;

/// <summary>
/// One generated key per type, shared by tests that only read it (RSA generation is slow on
/// a shared CI box). RSA keys here are 2048 bits; never dispose these.
/// </summary>
internal static class TestKeys
{
    private static readonly ConcurrentDictionary<string, Lazy<SshPrivateKey>> s_keys = new();

    public static SshPrivateKey Get(string keyType)
        => s_keys.GetOrAdd(keyType, t => new Lazy<SshPrivateKey>(() => SshPrivateKey.Generate(t, t == RsaPublicKey.Name ? RsaPublicKey.MinModulusBits : null))).Value;
}
