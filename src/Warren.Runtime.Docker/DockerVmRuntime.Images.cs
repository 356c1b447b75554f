using System.Globalization;
using System.Net;
using Docker.DotNet;
using Docker.DotNet.Models;
using Warren.Platform.Runtime;

namespace Warren.Runtime.Docker;

public sealed partial class DockerVmRuntime
{
    // ------------------------------------------------------------------ images

    /// <summary>
    /// Resolves a user's image reference to exactly that image: the reference must parse as a named reference
    /// (<see cref="ImageReference"/>), runtime snapshots are not images, and whatever the engine
    /// answers for the name is checked to carry that name or digest. The engine itself falls back to an image-id
    /// prefix search for a name it does not know (Docker's daemon/images GetImage), which would hand out any
    /// image on the host (another account's snapshot) for a reference like "b"; the check makes that impossible.
    /// A reference that names a registry host, or any reference with a credential, is pulled every time
    /// (<see cref="DockerRuntimeOptions.AlwaysPullRegistryImages"/>): a cached image is then still only handed to
    /// callers the registry lets pull it.
    /// </summary>
    public async Task<ImageInfo> PrepareImageAsync(string image, RegistryCredential? auth, CancellationToken ct)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(image);
        if (!ImageReference.TryParse(image, out var reference) || IsSnapshot(reference))
            throw new DockerRuntimeException(DockerRuntimeErrors.ImageNotFound, ImageMessages.NotFound(image));
        bool pull = auth != null || (_options.AlwaysPullRegistryImages && reference.HasExplicitDomain);
        ImageInspectResponse? local = pull ? null : await TryInspectImageAsync(reference, ct);
        if (local == null)
        {
            await PullAsync(image, reference, auth, ct);
            local = await TryInspectImageAsync(reference, ct)
                ?? throw new DockerRuntimeException(DockerRuntimeErrors.ImageNotFound, ImageMessages.NotFound(image));
        }
        return ToImageInfo(image, reference, local);
    }

    /// <summary>Warren's own commits (<see cref="SnapshotRepository"/>): addressed through VM records, never by users.</summary>
    private static bool IsSnapshot(ImageReference reference)
        => reference.Domain == ImageReference.DefaultDomain
           && reference.Path.StartsWith(SnapshotRepository(""), StringComparison.Ordinal);

    private async Task PullAsync(string image, ImageReference reference, RegistryCredential? auth, CancellationToken ct)
    {
        // The credential goes into the X-Registry-Auth header of this one request and nowhere else:
        // not into logs, exception messages or labels.
        var authConfig = auth == null ? new AuthConfig() : new AuthConfig
        {
            Username = auth.Username,
            Password = auth.Secret,
            ServerAddress = reference.Domain,
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
                new ImagesCreateParameters { FromImage = reference.Repository, Tag = reference.Digest ?? reference.Tag ?? ImageReference.DefaultTag },
                authConfig, progress, ct);
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
            ? new DockerRuntimeException(DockerRuntimeErrors.ImageUnauthorized, ImageMessages.Unauthorized(image), inner)
            : new DockerRuntimeException(DockerRuntimeErrors.ImageNotFound, ImageMessages.NotFound(image), inner);
    }

    /// <summary>
    /// The local image with exactly this name (or repository and digest), or null. Asks by the fully qualified
    /// name, and accepts the answer only when one of its tags or digests is that reference: never an id prefix.
    /// </summary>
    private async Task<ImageInspectResponse?> TryInspectImageAsync(ImageReference reference, CancellationToken ct)
    {
        ImageInspectResponse image;
        try
        {
            image = await _client.Images.InspectImageAsync(reference.Canonical, ct);
        }
        catch (DockerImageNotFoundException)
        {
            return null;
        }
        catch (DockerApiException e) when (e.StatusCode is HttpStatusCode.NotFound or HttpStatusCode.BadRequest)
        {
            return null;
        }
        return Carries(image, reference) ? image : null;
    }

    /// <summary>Whether the engine's image has <paramref name="reference"/> among its tags (or, with a digest, its repository digests).</summary>
    internal static bool Carries(ImageInspectResponse image, ImageReference reference)
    {
        if (reference.Digest is { } digest)
            return RepositoryDigest(image, reference) == digest;
        foreach (var tag in image.RepoTags ?? [])
            if (ImageReference.TryParse(tag, out var t) && t.SameAs(reference)) return true;
        return false;
    }

    /// <summary>The manifest digest the image was pulled by in the reference's repository, or null (built locally).</summary>
    private static string? RepositoryDigest(ImageInspectResponse image, ImageReference reference)
    {
        foreach (var repoDigest in image.RepoDigests ?? [])
            if (ImageReference.TryParse(repoDigest, out var d) && d.Digest is not null && d.Repository == reference.Repository)
                return d.Digest;
        return null;
    }

    internal static ImageInfo ToImageInfo(string reference, ImageReference parsed, ImageInspectResponse image)
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
        // The manifest digest of this repository (what "repo@digest" names), else the image id of a local build.
        string digest = RepositoryDigest(image, parsed) ?? image.ID;
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
