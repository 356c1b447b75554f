using System.Globalization;
using System.Net;
using Docker.DotNet;
using Docker.DotNet.Models;
using Warren.Platform.Runtime;

namespace Warren.Runtime.Docker;

public sealed partial class DockerVmRuntime
{
    // ------------------------------------------------------------------ images

    public async Task<ImageInfo> PrepareImageAsync(string image, RegistryCredential? auth, CancellationToken ct)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(image);
        var (repository, tag) = ImageReference.Split(image);
        bool pull = auth != null || (_options.AlwaysPullRegistryImages && ImageReference.HasRegistryHost(image));
        ImageInspectResponse? local = pull ? null : await TryInspectImageAsync(image, ct);
        if (local == null)
        {
            await PullAsync(image, repository, tag, auth, ct);
            local = await TryInspectImageAsync(image, ct)
                ?? throw new DockerRuntimeException(DockerRuntimeErrors.ImageNotFound, $"image {image} not found after pull");
        }
        return ToImageInfo(image, local);
    }

    private async Task PullAsync(string image, string repository, string tag, RegistryCredential? auth, CancellationToken ct)
    {
        // The credential goes into the X-Registry-Auth header of this one request and nowhere else:
        // not into logs, exception messages or labels.
        var authConfig = auth == null ? new AuthConfig() : new AuthConfig
        {
            Username = auth.Username,
            Password = auth.Secret,
            ServerAddress = ImageReference.RegistryHost(image),
        };
        string? streamError = null;
        var progress = new SyncProgress<JSONMessage>(m =>
        {
            if (!string.IsNullOrEmpty(m.ErrorMessage)) streamError = m.ErrorMessage;
            else if (m.Error != null && !string.IsNullOrEmpty(m.Error.Message)) streamError = m.Error.Message;
        });
        LogPulling(image, auth != null);
        try
        {
            await _client.Images.CreateImageAsync(
                new ImagesCreateParameters { FromImage = repository, Tag = tag }, authConfig, progress, ct);
        }
        catch (DockerApiException e)
        {
            throw PullFailure(image, e.StatusCode, e.ResponseBody, e);
        }
        catch (HttpRequestException e)
        {
            throw new DockerRuntimeException(DockerRuntimeErrors.EngineUnavailable, $"container engine unavailable: {e.Message}", e);
        }
        if (streamError != null) throw PullFailure(image, HttpStatusCode.OK, streamError, null);
    }

    private static DockerRuntimeException PullFailure(string image, HttpStatusCode status, string? body, Exception? inner)
    {
        string detail = body ?? "";
        bool unauthorized = status is HttpStatusCode.Unauthorized or HttpStatusCode.Forbidden
            || detail.Contains("unauthorized", StringComparison.OrdinalIgnoreCase)
            || detail.Contains("authentication required", StringComparison.OrdinalIgnoreCase)
            || detail.Contains("no basic auth credentials", StringComparison.OrdinalIgnoreCase)
            || detail.Contains("denied", StringComparison.OrdinalIgnoreCase);
        return unauthorized
            ? new DockerRuntimeException(DockerRuntimeErrors.ImageUnauthorized, $"registry refused access to {image} (check --registry-auth)", inner)
            : new DockerRuntimeException(DockerRuntimeErrors.ImageNotFound, $"cannot pull {image}", inner);
    }

    private async Task<ImageInspectResponse?> TryInspectImageAsync(string image, CancellationToken ct)
    {
        try
        {
            return await _client.Images.InspectImageAsync(image, ct);
        }
        catch (DockerImageNotFoundException)
        {
            return null;
        }
        catch (DockerApiException e) when (e.StatusCode == HttpStatusCode.NotFound)
        {
            return null;
        }
    }

    internal static ImageInfo ToImageInfo(string reference, ImageInspectResponse image)
    {
        var config = image.Config;
        var ports = new List<int>();
        if (config?.ExposedPorts != null)
        {
            foreach (var key in config.ExposedPorts.Keys)
            {
                // Keys are "80/tcp", "53/udp", or a bare "8080" (tcp).
                var parts = key.Split('/');
                if ((parts.Length == 1 || parts[1].Equals("tcp", StringComparison.OrdinalIgnoreCase))
                    && int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out int port) && port is > 0 and < 65536)
                    ports.Add(port);
            }
        }
        ports.Sort();
        string digest = image.RepoDigests?.FirstOrDefault(d => d.Contains('@')) is { } rd ? rd[(rd.IndexOf('@') + 1)..] : image.ID;
        return new ImageInfo(
            reference,
            digest,
            ports,
            string.IsNullOrEmpty(config?.User) ? null : config.User,
            config?.Entrypoint?.ToList() ?? [],
            config?.Cmd?.ToList() ?? [],
            config?.Env?.ToList() ?? []);
    }
}

/// <summary>Splits image references the way the engine does (distribution reference grammar, simplified).</summary>
internal static class ImageReference
{
    /// <summary>(repository, tag-or-digest): "reg:5000/a/b:1" → ("reg:5000/a/b", "1"); no tag → "latest".</summary>
    public static (string Repository, string Tag) Split(string image)
    {
        int at = image.IndexOf('@');
        if (at >= 0) return (image[..at], image[(at + 1)..]);
        int slash = image.LastIndexOf('/');
        int colon = image.LastIndexOf(':');
        if (colon > slash) return (image[..colon], image[(colon + 1)..]);
        return (image, "latest");
    }

    /// <summary>True when the first path component is a registry host ("a.b", "host:port" or "localhost").</summary>
    public static bool HasRegistryHost(string image) => RegistryHost(image) != null;

    public static string? RegistryHost(string image)
    {
        int slash = image.IndexOf('/');
        if (slash <= 0) return null;
        string first = image[..slash];
        return first.Contains('.') || first.Contains(':') || first == "localhost" ? first : null;
    }
}
