using System.Security.Cryptography;
using Org.BouncyCastle.Crypto.Prng;
using Org.BouncyCastle.Security;

namespace Warren.Ssh.Crypto;

/// <summary>
/// Source of randomness for the transport: packet padding, KEXINIT cookies and
/// ephemeral key-exchange secrets. Injectable so tests can replay a handshake
/// byte for byte; production code uses <see cref="SshRandom.Default"/>.
/// </summary>
public interface ISshRandom
{
    /// <summary>Fills <paramref name="destination"/> with random bytes.</summary>
    void Fill(Span<byte> destination);
}

/// <summary>Randomness sources.</summary>
public static class SshRandom
{
    /// <summary>The operating system CSPRNG (<see cref="RandomNumberGenerator"/>).</summary>
    public static ISshRandom Default { get; } = new SystemRandom();

    private sealed class SystemRandom : ISshRandom
    {
        public void Fill(Span<byte> destination) => RandomNumberGenerator.Fill(destination);
    }

    /// <summary>A BouncyCastle <see cref="SecureRandom"/> that draws from <paramref name="random"/>.</summary>
    internal static SecureRandom ToSecureRandom(ISshRandom random) => new(new Adapter(random), 0);

    private sealed class Adapter(ISshRandom random) : IRandomGenerator
    {
        // Seed material is ignored: the wrapped source is already a complete generator.
        public void AddSeedMaterial(byte[] seed) { }
        public void AddSeedMaterial(ReadOnlySpan<byte> seed) { }
        public void AddSeedMaterial(long seed) { }
        public void NextBytes(byte[] bytes) => random.Fill(bytes);
        public void NextBytes(byte[] bytes, int start, int len) => random.Fill(bytes.AsSpan(start, len));
        public void NextBytes(Span<byte> bytes) => random.Fill(bytes);
    }
}
