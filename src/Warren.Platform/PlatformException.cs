namespace Warren.Platform;

/// <summary>
/// A failure the user caused or can act on. <see cref="Code"/> is stable (see <see cref="PlatformErrorCodes"/>);
/// <see cref="UserMessage"/> is safe to print (exe.dev's wording where exe.dev has one) and never holds a secret.
/// </summary>
public sealed class PlatformException : Exception
{
    public PlatformException(string code, string userMessage, Exception? inner = null) : base(userMessage, inner)
    {
        Code = code;
        UserMessage = userMessage;
    }

    public string Code { get; }
    public string UserMessage { get; }
}

/// <summary>Stable error codes. Never renumber or rename: scripts and docs depend on them.</summary>
public static class PlatformErrorCodes
{
    public const string InvalidArgument = "invalid_argument";
    public const string InvalidEmail = "invalid_email";
    public const string AccountNotFound = "account_not_found";
    public const string AccountExists = "account_exists";
    public const string KeyInUse = "key_in_use";
    public const string KeyNotFound = "key_not_found";
    public const string KeyNameInUse = "key_name_in_use";
    public const string LastKey = "last_key";
    public const string VmNotFound = "vm_not_found";
    public const string VmAccessDenied = "vm_access_denied";
    public const string VmNameInvalid = "vm_name_invalid";
    public const string VmNameUnavailable = "vm_name_unavailable";
    public const string VmLimitReached = "vm_limit_reached";
    public const string VmBusy = "vm_busy";
    public const string VmNotRunning = "vm_not_running";
    public const string VmCreateFailed = "vm_create_failed";
    public const string VmRuntimeFailed = "vm_runtime_failed";
    public const string TagInvalid = "tag_invalid";
    public const string TagExists = "tag_exists";
    public const string TagNotFound = "tag_not_found";
    public const string TagDuplicate = "tag_duplicate";
    public const string CommentInvalid = "comment_invalid";
    public const string SizeInvalid = "size_invalid";
    public const string ResourceOutOfRange = "resource_out_of_range";
    public const string DiskShrink = "disk_shrink";
    public const string EnvInvalid = "env_invalid";
    public const string SetupScriptTooLarge = "setup_script_too_large";
    public const string PortInvalid = "port_invalid";
    public const string ShareExists = "share_exists";
    public const string ShareNotFound = "share_not_found";
    public const string ShareLinkNotFound = "share_link_not_found";
    public const string StateConflict = "state_conflict";
    public const string ImageNotFound = "image_not_found";
}
