using System.Security.Cryptography;

namespace Warren;

/// <summary>A random id made once per data directory (file <c>instance-id</c>), stable across restarts.</summary>
public static class InstanceId
{
    private const string FileName = "instance-id";

    public static string LoadOrCreate(string dataDirectory)
    {
        var dir = Path.GetFullPath(dataDirectory);
        Directory.CreateDirectory(dir);
        var path = Path.Combine(dir, FileName);
        if (File.Exists(path))
        {
            var existing = File.ReadAllText(path).Trim();
            if (existing.Length > 0) return existing;
        }
        var id = "w" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(8));
        File.WriteAllText(path, id + "\n");
        return id;
    }
}
