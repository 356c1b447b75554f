using System.Text;
using CsCheck;
using Warren.Edge.Metadata;
using Warren.Platform.Mail;

namespace Warren.Edge.Tests.Metadata;

/// <summary>Property tests of what the metadata service parses from a VM: the Host header and the email JSON.</summary>
public sealed class MetadataParsingPropertyTests
{
    [Theory]
    [InlineData("github.int.box.localhost", MetadataHostKind.Integration, "github")]
    [InlineData("GitHub.INT.Box.Localhost.", MetadataHostKind.Integration, "github")]
    [InlineData("my-db.int.box.localhost:80", MetadataHostKind.Integration, "my-db")]
    [InlineData("169.254.169.254", MetadataHostKind.Metadata, null)]
    [InlineData("169.254.169.254:80", MetadataHostKind.Metadata, null)]
    [InlineData("int.box.localhost", MetadataHostKind.Metadata, null)]
    [InlineData("x.int.other.example", MetadataHostKind.Metadata, null)]
    [InlineData("a.b.int.box.localhost", MetadataHostKind.InvalidIntegration, null)]
    [InlineData("-x.int.box.localhost", MetadataHostKind.InvalidIntegration, null)]
    [InlineData("x_y.int.box.localhost", MetadataHostKind.InvalidIntegration, null)]
    [InlineData("x.int.evilbox.localhost", MetadataHostKind.Metadata, null)]
    public void HostHeader_Classified(string host, MetadataHostKind kind, string? name)
    {
        Assert.Equal(kind, MetadataHostName.Classify(host, "box.localhost", out var integration));
        Assert.Equal(name, integration);
    }

    [Fact]
    public void AnyHostHeader_ClassifiesWithoutThrowing_AndAnIntegrationNameIsAValidLabel()
    {
        Gen.OneOf(Gen.String, Gen.String.Select(s => s + ".int.box.localhost"), Gen.Char.AlphaNumeric.Array[1, 70].Select(c => new string(c) + ".int.box.localhost"))
            .Sample(host =>
            {
                var kind = MetadataHostName.Classify(host, "box.localhost", out var name);
                if (kind == MetadataHostKind.Integration)
                {
                    Assert.True(MetadataHostName.IsLabel(name));
                    Assert.Equal(name, name!.ToLowerInvariant());
                }
                else Assert.Null(name);
            }, iter: 20_000);
    }

    [Fact]
    public void AnyBytes_ParseOrAreRefused_NeverThrow()
    {
        Gen.Byte.Array[0, 512].Sample(bytes =>
        {
            if (MetadataRequestHandler.TryParseEmail(bytes, out var request))
                VmEmailGateway.Validate(request);
        }, iter: 20_000);
    }

    [Fact]
    public void WellFormedObjects_RoundTrip_AndValidationNeverThrows()
    {
        Gen.Select(Gen.String, Gen.String, Gen.String, Gen.String.Null()).Sample(t =>
        {
            var json = System.Text.Json.JsonSerializer.Serialize(new Dictionary<string, string?> { ["to"] = t.Item1, ["subject"] = t.Item2, ["body"] = t.Item3, ["reply_to"] = t.Item4, ["x"] = "ignored" });
            Assert.True(MetadataRequestHandler.TryParseEmail(Encoding.UTF8.GetBytes(json), out var request));
            Assert.Equal((t.Item1, t.Item2, t.Item3, t.Item4), (request.To, request.Subject, request.Body, request.ReplyTo));
            var verdict = VmEmailGateway.Validate(request);
            if (verdict is null)
            {
                Assert.DoesNotContain('\n', request.Subject!);
                Assert.True(request.Body!.Length <= VmEmailGateway.MaxBodyLength);
            }
        }, iter: 5_000);
    }

    [Theory]
    [InlineData("[]")]
    [InlineData("\"x\"")]
    [InlineData("{\"to\":\"a@b.example\"} {}")]
    [InlineData("{\"to\":{\"a\":1}}")]
    [InlineData("{\"subject\":[\"a\"]}")]
    [InlineData("{\"to\":\"a@b.example\"")]
    public void NotOneObjectOfStrings_IsRefused(string json) =>
        Assert.False(MetadataRequestHandler.TryParseEmail(Encoding.UTF8.GetBytes(json), out _));
}
