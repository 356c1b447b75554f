namespace Warren.Edge.Smtp;

/// <summary>The outgoing mail relay (config section "Warren:Smtp"). Mail is off while <see cref="Host"/> is empty.</summary>
public sealed class SmtpRelayOptions
{
    public const string SectionName = "Warren:Smtp";

    public string? Host { get; set; }
    public int Port { get; set; } = 587;

    /// <summary>"None", "StartTls" (default; required when offered) or "SslOnConnect".</summary>
    public string Security { get; set; } = "StartTls";

    /// <summary>Envelope and header sender, e.g. "Warren &lt;warren@example.com&gt;".</summary>
    public string From { get; set; } = "warren@localhost";

    public string? Username { get; set; }

    /// <summary>Secret: never logged, never echoed in errors.</summary>
    public string? Password { get; set; }

    /// <summary>Upper bound for one delivery attempt (connect, auth, send).</summary>
    public TimeSpan Timeout { get; set; } = TimeSpan.FromSeconds(30);

    public bool Enabled => !string.IsNullOrWhiteSpace(Host);

    public override string ToString() => $"SmtpRelayOptions {{ Host = {Host}, Port = {Port}, Security = {Security}, From = {From}, Username = {Username}, Password = *** }}";
}
