using System.Text;

namespace Warren.Ssh.Keys;

/// <summary>
/// The server's host keys on disk, in sshd's layout and format: ssh_host_ed25519_key,
/// ssh_host_ecdsa_key (nistp256) and ssh_host_rsa_key (3072 bits), each with a .pub file.
/// Missing keys are generated on first start; existing ones are reused so clients'
/// known_hosts stay valid across restarts.
/// </summary>
public static class SshHostKeyStore
{
    /// <summary>The files and key types, in the order keys are offered (sshd's default preference).</summary>
    public static IReadOnlyList<(string FileName, string KeyType, int? Bits)> Layout { get; } =
    [
        ("ssh_host_ed25519_key", Ed25519PublicKey.Name, null),
        ("ssh_host_ecdsa_key", "ecdsa-sha2-nistp256", null),
        ("ssh_host_rsa_key", RsaPublicKey.Name, RsaPrivateKey.DefaultBits),
    ];

    /// <summary>Comment written into generated host key files.</summary>
    public const string Comment = "warren host key";

    /// <summary>Private key files: owner read/write only, as sshd requires (0600).</summary>
    private const UnixFileMode PrivateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;

    /// <summary>Public key files: world-readable (0644), as ssh-keygen writes them.</summary>
    private const UnixFileMode PublicMode = PrivateMode | UnixFileMode.GroupRead | UnixFileMode.OtherRead;

    /// <summary>The directory: owner only (0700).</summary>
    private const UnixFileMode DirectoryMode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;

    /// <summary>
    /// Loads the three host keys from <paramref name="directory"/>, generating and writing
    /// any that are missing. An existing but unreadable key file is an error (never overwritten).
    /// </summary>
    /// <exception cref="FormatException">A key file exists but is not a valid unencrypted OpenSSH key of the expected type.</exception>
    public static IReadOnlyList<SshPrivateKey> LoadOrCreate(string directory)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        if (!Directory.Exists(directory))
        {
            if (OperatingSystem.IsWindows()) Directory.CreateDirectory(directory);
            else Directory.CreateDirectory(directory, DirectoryMode);
        }

        var keys = new List<SshPrivateKey>(Layout.Count);
        try
        {
            foreach (var (fileName, keyType, bits) in Layout)
                keys.Add(LoadOrCreateOne(Path.Combine(directory, fileName), keyType, bits));
            return keys;
        }
        catch
        {
            foreach (var k in keys) k.Dispose();
            throw;
        }
    }

    private static SshPrivateKey LoadOrCreateOne(string path, string keyType, int? bits)
    {
        if (!File.Exists(path))
        {
            using var fresh = SshPrivateKey.Generate(keyType, bits);
            // Write to a private temp file, then move without overwriting: if another
            // process created the key meanwhile, its key wins and we read it below.
            var temp = path + ".tmp-" + Guid.NewGuid().ToString("N");
            try
            {
                WriteFile(temp, fresh.ToOpenSshPrivateKey(Comment), PrivateMode);
                try { File.Move(temp, path, overwrite: false); }
                catch (IOException) when (File.Exists(path)) { }
            }
            finally
            {
                if (File.Exists(temp)) File.Delete(temp);
            }
        }

        var key = SshPrivateKey.ParseOpenSsh(File.ReadAllText(path));
        if (key.PublicKey.KeyType != keyType)
        {
            key.Dispose();
            throw new FormatException($"{Path.GetFileName(path)} holds a {key.PublicKey.KeyType} key, expected {keyType}.");
        }

        var pubPath = path + ".pub";
        var pubLine = key.PublicKey.ToOpenSshString(Comment) + "\n";
        if (!File.Exists(pubPath) || !SshPublicKey.TryParseOpenSsh(File.ReadAllText(pubPath), out var onDisk, out _) || !onDisk.Equals(key.PublicKey))
            WriteFile(pubPath, pubLine, PublicMode, overwrite: true);
        return key;
    }

    private static void WriteFile(string path, string text, UnixFileMode mode, bool overwrite = false)
    {
        var options = new FileStreamOptions
        {
            Mode = overwrite ? FileMode.Create : FileMode.CreateNew,
            Access = FileAccess.Write,
            Share = FileShare.None,
        };
        if (!OperatingSystem.IsWindows()) options.UnixCreateMode = mode;
        using (var fs = new FileStream(path, options))
        {
            var bytes = Encoding.UTF8.GetBytes(text);
            fs.Write(bytes);
            fs.Flush(flushToDisk: true);
        }
        // UnixCreateMode only applies to new files and is subject to the umask; set it explicitly.
        if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(path, mode);
    }
}
