using Xunit;
using CsCheck;
using Warren.Platform.Integrations;

namespace Warren.Platform.Tests.Integrations;

/// <summary>The --target and --header parsers take tenant text: any input is a value or a <see cref="PlatformException"/>, nothing else.</summary>
public sealed class IntegrationValidationPropertyTests
{
    private static Gen<string> Pick(params string[] choices) => Gen.Int[0, choices.Length - 1].Select(i => choices[i]);

    private static readonly PlatformOptions s_options = new() { ControlHost = "warren.example.net", VmDomain = "vms.example.net" };

    private static readonly Gen<string> s_urlish = Gen.OneOf(
        Gen.String,
        Gen.Select(Pick("https://", "http://", "https://u:p@", "https://[", "https://%", ""), Gen.String[0, 40],
            Pick("", "/", ":443", ":0", ":99999", "/a?b", "#f", ".", "..", "@x"), (a, b, c) => a + b + c));

    [Fact]
    public void ParseTarget_returns_an_https_dns_name_or_refuses()
    {
        s_urlish.Sample(input =>
        {
            try
            {
                var t = IntegrationValidation.ParseTarget(input, s_options);
                return t.Url.Scheme == "https" && t.Url.HostNameType == UriHostNameType.Dns && t.Url.UserInfo.Length == 0
                       && !t.Url.IdnHost.EndsWith("vms.example.net", StringComparison.Ordinal);
            }
            catch (PlatformException e) { return e.Code == PlatformErrorCodes.InvalidArgument; }
        }, iter: 5000);
    }

    [Fact]
    public void ParseHeader_never_accepts_a_line_break_or_an_exedev_name()
    {
        Gen.Select(Pick("X-A", "x-exedev-a", "X-Exedev-Source-Vm", "Host", "A B", ""), Gen.String[0, 30], (n, v) => n + ":" + v).Sample(spec =>
        {
            try
            {
                var (name, value) = IntegrationValidation.ParseHeader(spec);
                return !value.Contains('\r') && !value.Contains('\n') && !name.StartsWith("x-exedev-", StringComparison.OrdinalIgnoreCase);
            }
            catch (PlatformException) { return true; }
        }, iter: 5000);
    }

    [Fact]
    public void Names_are_dns_labels()
    {
        Gen.String[0, 70].Sample(n => !IntegrationValidation.IsValidName(n)
            || (n.Length <= 63 && n.All(c => c is >= 'a' and <= 'z' or >= '0' and <= '9' or '-') && n[0] != '-' && n[^1] != '-'), iter: 5000);
    }
}
