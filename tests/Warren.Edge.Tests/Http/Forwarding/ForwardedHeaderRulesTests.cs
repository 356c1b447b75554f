using System.Text;
using CsCheck;
using Warren.Edge.Http.Forwarding;

namespace Warren.Edge.Tests.Http.Forwarding;

/// <summary>
/// The one rule for client request fields, on every path: a name with <c>_</c>, any <c>X-ExeDev-*</c>,
/// <c>Forwarded</c> and <c>X-Real-IP</c> never reach a VM; the byte rule (the lane) and the string rule
/// (Kestrel, YARP) agree on every name.
/// </summary>
public sealed class ForwardedHeaderRulesTests
{
    private static readonly string[] Prefixes =
        ["X-ExeDev-", "X_ExeDev_", "x-exedev_", "X_EXEDEV-", "Forwarded", "X-Real-IP", "x_real_ip", "X-Forwarded-For"];

    /// <summary>Field names biased toward the interesting ones: prefixes of X-ExeDev-, with '_' or '-', any case.</summary>
    private static readonly Gen<string> GenName = Gen.OneOf(
        Gen.Char["-_xXeEdDvV"].Array[1, 14].Select(c => new string(c)),
        Gen.Char["abcXYZ019-_!#$%&'*+.^`|~"].Array[1, 40].Select(c => new string(c)),
        Gen.Int[0, Prefixes.Length - 1].Select(i => Prefixes[i]).Select(Gen.Char["abc-_"].Array[0, 40], (p, tail) => p + new string(tail)));

    /// <summary>The rule as exe.dev and nginx state it, written the slow, obvious way.</summary>
    private static bool DroppedByDefinition(string name)
    {
        if (name.Contains('_'))
            return true;
        string folded = name.ToLowerInvariant();
        return folded.StartsWith("x-exedev-", StringComparison.Ordinal) || folded is "forwarded" or "x-real-ip";
    }

    [Theory]
    [InlineData("X_ExeDev_Email")]
    [InlineData("x_exedev_userid")]
    [InlineData("X-ExeDev_Token-Ctx")]
    [InlineData("X_Forwarded_For")]
    [InlineData("X_Real_IP")]
    [InlineData("Forwarded")]
    [InlineData("FORWARDED")]
    [InlineData("X-Real-IP")]
    [InlineData("x-real-ip")]
    [InlineData("X-Exedev-Source-Vm")]
    [InlineData("Accept_Language")]
    public void ClientOnlyNames_AreDropped(string name)
    {
        Assert.True(ForwardedHeaderRules.IsClientOnlyRequestHeader(name));
        Assert.True(ForwardedHeaderRules.IsReplacedRequestHeader(name, removeAuthorization: false));
        Assert.True(ForwardedHeaderRules.IsReplacedRequestHeader(Encoding.ASCII.GetBytes(name), removeAuthorization: false));
    }

    [Theory]
    [InlineData("X-Custom")]
    [InlineData("Accept-Language")]
    [InlineData("X-Exedev")]
    [InlineData("X-Real-IPs")]
    [InlineData("Forwarded-For")]
    public void OrdinaryNames_Pass(string name)
    {
        Assert.False(ForwardedHeaderRules.IsReplacedRequestHeader(name, removeAuthorization: false));
        Assert.False(ForwardedHeaderRules.IsReplacedRequestHeader(Encoding.ASCII.GetBytes(name), removeAuthorization: false));
    }

    [Fact]
    public void Property_ByteAndStringRules_Agree_AndDropWhatTheDefinitionDrops()
    {
        GenName.Sample(name =>
        {
            bool byString = ForwardedHeaderRules.IsReplacedRequestHeader(name, removeAuthorization: false);
            bool byBytes = ForwardedHeaderRules.IsReplacedRequestHeader(Encoding.ASCII.GetBytes(name), removeAuthorization: false);
            Assert.Equal(byString, byBytes);
            if (DroppedByDefinition(name))
                Assert.True(byString, name);
            Assert.Equal(DroppedByDefinition(name), ForwardedHeaderRules.IsClientOnlyRequestHeader(name));
        }, iter: 5000);
    }

    /// <summary>The lane's upstream head, from any parsed head carrying such fields, holds none of them.</summary>
    [Fact]
    public void Property_LaneUpstreamHead_HoldsNoClientOnlyField()
    {
        GenName.Array[0, 12].Sample(names =>
        {
            var text = new StringBuilder("GET /p HTTP/1.1\r\nHost: pub.box.localhost\r\n");
            foreach (var name in names)
                text.Append(name).Append(": v\r\n");
            text.Append("\r\n");
            var head = Encoding.ASCII.GetBytes(text.ToString());
            var parsed = new Http1RequestHead();
            if (!parsed.TryParse(head))
                return; // not a plain head: the lane hands it to Kestrel, whose path the forwarder suites cover
            using var upstream = new ByteBuffer(1024, 64 * 1024);
            Assert.True(Http1LaneRules.WriteUpstreamHead(head, parsed, "pub.box.localhost"u8, "127.0.0.1"u8, upstream));
            var lines = Encoding.ASCII.GetString(upstream.WrittenSpan).Split("\r\n").Skip(1).Where(l => l.Length > 0);
            foreach (var line in lines)
            {
                string name = line[..line.IndexOf(':')];
                Assert.False(DroppedByDefinition(name), $"{name} reached the VM");
            }
        }, iter: 2000);
    }
}
