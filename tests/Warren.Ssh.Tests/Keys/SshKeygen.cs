using System.Diagnostics;

namespace Warren.Ssh.Tests.Keys;

/// <summary>
/// Runs the real OpenSSH ssh-keygen for interop tests. These tests fail (never skip)
/// when ssh-keygen is missing, so CI cannot pass without exercising interop.
/// </summary>
internal sealed class SshKeygen : IDisposable
{
    /// <summary>Bound on one ssh-keygen run; RSA 4096 generation is the slowest case (~seconds).</summary>
    private static readonly TimeSpan RunTimeout = TimeSpan.FromMinutes(2);

    public string Dir { get; } = Directory.CreateTempSubdirectory("warren-keys-").FullName;

    public string PathOf(string name) => Path.Combine(Dir, name);

    public (int Exit, string Stdout, string Stderr) Run(string stdin, params string[] args)
    {
        var psi = new ProcessStartInfo("ssh-keygen")
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = Dir,
        };
        foreach (var a in args) psi.ArgumentList.Add(a);
        Process p;
        try
        {
            p = Process.Start(psi) ?? throw new InvalidOperationException("ssh-keygen did not start");
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new InvalidOperationException("ssh-keygen (OpenSSH) is required for the key interop tests; install openssh-client.", e);
        }
        using (p)
        {
            var stdout = p.StandardOutput.ReadToEndAsync();
            var stderr = p.StandardError.ReadToEndAsync();
            p.StandardInput.Write(stdin);
            p.StandardInput.Close();
            if (!p.WaitForExit(RunTimeout))
            {
                p.Kill();
                throw new TimeoutException("ssh-keygen did not finish: " + string.Join(' ', args));
            }
            return (p.ExitCode, stdout.Result, stderr.Result);
        }
    }

    public string RunOk(params string[] args) => RunOkWithInput("", args);

    public string RunOkWithInput(string stdin, params string[] args)
    {
        var (exit, stdout, stderr) = Run(stdin, args);
        if (exit != 0)
            throw new Xunit.Sdk.XunitException($"ssh-keygen {string.Join(' ', args)} exited {exit}: {stderr}");
        return stdout;
    }

    /// <summary>Writes a private key file readable only by us, as ssh-keygen insists.</summary>
    public string WritePrivate(string name, string text)
    {
        var path = PathOf(name);
        File.WriteAllText(path, text);
        if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        return path;
    }

    public void Dispose()
    {
        try { Directory.Delete(Dir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
