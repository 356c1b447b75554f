using System.Buffers.Binary;
using System.Text;
using CsCheck;
using Warren.Agent.Sftp;
using Xunit;
using static Warren.Agent.Sftp.SftpConstants;

namespace Warren.Runtime.Docker.Tests;

/// <summary>The agent's SFTP v3 codec and request loop with hostile input (no engine needed).</summary>
public sealed class SftpPacketTests
{
    /// <summary>Random packets per property (enough to hit every branch of the parser many times).</summary>
    private const long FuzzIterations = 20_000;

    private static byte[] Body(byte type, uint? id, Action<SftpWriter>? fill = null)
    {
        var w = new SftpWriter(type, id);
        fill?.Invoke(w);
        return w.Complete().ToArray()[4..];
    }

    /// <summary>One well-formed request of every type the server handles.</summary>
    private static IEnumerable<byte[]> ValidRequests()
    {
        byte[] handle = [0, 0, 0, 1];
        var attrs = new SftpAttrs(10, 1000, 1000, 0x1A4, 1, 2);
        yield return Body(Init, null, w => w.WriteUInt32(3));
        yield return Body(Open, 1, w => { w.WriteString("/tmp/x"); w.WriteUInt32(FxfRead); w.WriteAttrs(attrs); });
        yield return Body(Close, 2, w => w.WriteBytes(handle));
        yield return Body(Read, 3, w => { w.WriteBytes(handle); w.WriteUInt64(0); w.WriteUInt32(100); });
        yield return Body(Write, 4, w => { w.WriteBytes(handle); w.WriteUInt64(0); w.WriteBytes("data"u8); });
        yield return Body(LStat, 5, w => w.WriteString("/"));
        yield return Body(FStat, 6, w => w.WriteBytes(handle));
        yield return Body(SetStat, 7, w => { w.WriteString("/tmp/x"); w.WriteAttrs(attrs); });
        yield return Body(FSetStat, 8, w => { w.WriteBytes(handle); w.WriteAttrs(attrs); });
        yield return Body(OpenDir, 9, w => w.WriteString("/"));
        yield return Body(ReadDir, 10, w => w.WriteBytes(handle));
        yield return Body(Remove, 11, w => w.WriteString("/tmp/x"));
        yield return Body(MkDir, 12, w => { w.WriteString("/tmp/d"); w.WriteAttrs(attrs); });
        yield return Body(RmDir, 13, w => w.WriteString("/tmp/d"));
        yield return Body(RealPath, 14, w => w.WriteString("."));
        yield return Body(Stat, 15, w => w.WriteString("/"));
        yield return Body(Rename, 16, w => { w.WriteString("/a"); w.WriteString("/b"); });
        yield return Body(ReadLink, 17, w => w.WriteString("/l"));
        yield return Body(Symlink, 18, w => { w.WriteString("/t"); w.WriteString("/l"); });
        yield return Body(SftpConstants.Extended, 19, w => { w.WriteString("posix-rename@openssh.com"); w.WriteString("/a"); w.WriteString("/b"); });
        yield return Body(SftpConstants.Extended, 20, w => { w.WriteString("statvfs@openssh.com"); w.WriteString("/"); });
    }

    [Fact]
    public void ValidRequests_Parse()
    {
        foreach (var body in ValidRequests())
            Assert.True(SftpRequest.TryParse(body, out _, out _), $"type {body[0]} did not parse");
    }

    [Fact]
    public void EveryTruncation_IsRejected_WithoutThrowing()
    {
        foreach (var body in ValidRequests())
        {
            for (int length = 0; length < body.Length; length++)
            {
                bool ok = SftpRequest.TryParse(body.AsSpan(0, length), out _, out var id);
                Assert.False(ok, $"type {body[0]} truncated to {length} bytes parsed");
                if (length >= 5 && body[0] != Init) Assert.NotNull(id); // the id was readable: BAD_MESSAGE can carry it
            }
        }
    }

    [Fact]
    public void StringLength_UIntMax_IsRejected()
    {
        var body = new byte[] { Stat, 0, 0, 0, 7, 0xFF, 0xFF, 0xFF, 0xFF, (byte)'x' };
        Assert.False(SftpRequest.TryParse(body, out _, out var id));
        Assert.Equal(7u, id);
    }

    [Fact]
    public void WritePayload_OverTheLimit_IsRejected()
    {
        var data = new byte[MaxWriteLength + 1];
        var body = Body(Write, 1, w => { w.WriteBytes([0, 0, 0, 1]); w.WriteUInt64(0); w.WriteBytes(data); });
        Assert.False(SftpRequest.TryParse(body, out _, out _));
    }

    [Fact]
    public void ExtendedAttrCount_OverTheLimit_IsRejected()
    {
        var body = Body(SetStat, 1, w => { w.WriteString("/x"); w.WriteUInt32(AttrExtended); w.WriteUInt32(MaxExtendedAttrs + 1); });
        Assert.False(SftpRequest.TryParse(body, out _, out _));
    }

    [Fact]
    public void Parser_NeverThrows_OnRandomBytes()
    {
        Gen.Byte.Array[0, 64].Sample(bytes => { SftpRequest.TryParse(bytes, out _, out _); }, iter: FuzzIterations);
    }

    [Fact]
    public void Parser_NeverThrows_OnRandomBodiesOfEveryType()
    {
        var types = new byte[] { Init, Open, Close, Read, Write, LStat, FStat, SetStat, FSetStat, OpenDir, ReadDir, Remove, MkDir,
            RmDir, RealPath, Stat, Rename, ReadLink, Symlink, SftpConstants.Extended, 0, 255 };
        Gen.Select(Gen.Int[0, types.Length - 1].Select(i => types[i]), Gen.Byte.Array[0, 96]).Sample((type, rest) =>
        {
            var body = new byte[rest.Length + 1];
            body[0] = type;
            rest.CopyTo(body, 1);
            SftpRequest.TryParse(body, out _, out _);
        }, iter: FuzzIterations);
    }

    [Fact]
    public void Parser_NeverThrows_OnMutatedValidRequests()
    {
        var valid = ValidRequests().ToArray();
        Gen.Select(Gen.Int[0, valid.Length - 1], Gen.Int[0, 1000], Gen.Byte).Sample((which, position, value) =>
        {
            var body = (byte[])valid[which].Clone();
            body[position % body.Length] = value;
            SftpRequest.TryParse(body, out _, out _);
        }, iter: FuzzIterations);
    }

    // ------------------------------------------------------------------ request loop

    private static (int Exit, List<byte[]> Replies) Serve(params byte[][] bodies)
    {
        var input = new MemoryStream();
        foreach (var b in bodies)
        {
            Span<byte> len = stackalloc byte[4];
            BinaryPrimitives.WriteUInt32BigEndian(len, (uint)b.Length);
            input.Write(len);
            input.Write(b);
        }
        input.Position = 0;
        var output = new MemoryStream();
        int exit = new SftpServer(input, output).Run();
        var replies = new List<byte[]>();
        var all = output.ToArray().AsSpan();
        while (all.Length >= 4)
        {
            int n = (int)BinaryPrimitives.ReadUInt32BigEndian(all);
            replies.Add(all.Slice(4, n).ToArray());
            all = all[(4 + n)..];
        }
        return (exit, replies);
    }

    private static byte[] Init3 => Body(Init, null, w => w.WriteUInt32(3));

    private static uint StatusCode(byte[] reply)
    {
        Assert.Equal(Status, reply[0]);
        return BinaryPrimitives.ReadUInt32BigEndian(reply.AsSpan(5));
    }

    [Fact]
    public void Init_AnswersVersion3_WithOpenSshExtensions()
    {
        var (exit, replies) = Serve(Init3);
        Assert.Equal(0, exit);
        var version = Assert.Single(replies);
        Assert.Equal(VersionPacket, version[0]);
        Assert.Equal(3u, BinaryPrimitives.ReadUInt32BigEndian(version.AsSpan(1)));
        string text = Encoding.ASCII.GetString(version);
        Assert.Contains("posix-rename@openssh.com", text);
        Assert.Contains("limits@openssh.com", text);
    }

    [Fact]
    public void PacketLength_OverTheLimit_EndsTheSession_BeforeAllocating()
    {
        var input = new MemoryStream();
        var header = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(header, MaxPacketLength + 1);
        input.Write(header);
        input.Position = 0;
        Assert.Equal(1, new SftpServer(input, new MemoryStream()).Run());
    }

    [Fact]
    public void Malformed_WithReadableId_GetsBadMessage_AndUnknownTypes_OpUnsupported()
    {
        var (_, replies) = Serve(Init3, [Stat, 0, 0, 0, 9, 0, 0], [99, 0, 0, 0, 10]);
        Assert.Equal(FxBadMessage, StatusCode(replies[1]));
        Assert.Equal(9u, BinaryPrimitives.ReadUInt32BigEndian(replies[1].AsSpan(1)));
        Assert.Equal(FxOpUnsupported, StatusCode(replies[2]));
    }

    [Fact]
    public void Read_IsCappedAtTheReadLimit_AndEofIsAStatus()
    {
        string file = Path.GetTempFileName();
        try
        {
            File.WriteAllBytes(file, new byte[MaxReadLength + 5000]);
            var open = Body(Open, 1, w => { w.WriteString(file); w.WriteUInt32(FxfRead); w.WriteAttrs(new SftpAttrs()); });
            var (_, first) = Serve(Init3, open);
            Assert.Equal(SftpConstants.Handle, first[1][0]);
            var handle = first[1].AsSpan(9, 4).ToArray();
            var read = Body(Read, 2, w => { w.WriteBytes(handle); w.WriteUInt64(0); w.WriteUInt32(uint.MaxValue); });
            var eof = Body(Read, 3, w => { w.WriteBytes(handle); w.WriteUInt64(1L << 40); w.WriteUInt32(10); });
            var (_, replies) = Serve(Init3, open, read, eof);
            Assert.Equal(Data, replies[2][0]);
            Assert.Equal((uint)MaxReadLength, BinaryPrimitives.ReadUInt32BigEndian(replies[2].AsSpan(5)));
            Assert.Equal(FxEof, StatusCode(replies[3]));
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Fact]
    public void RequestLoop_AlwaysAnswers_RandomReadOnlyRequests()
    {
        // Only types that cannot change the filesystem, whatever their random paths and handles.
        var types = new byte[] { Close, Read, Write, LStat, FStat, FSetStat, ReadDir, RealPath, Stat, ReadLink, 0, 200 };
        Gen.Select(Gen.Int[0, types.Length - 1].Select(i => types[i]), Gen.Byte.Array[0, 48]).Sample((type, rest) =>
        {
            var body = new byte[rest.Length + 1];
            body[0] = type;
            rest.CopyTo(body, 1);
            var (exit, replies) = Serve(Init3, body);
            Assert.Equal(0, exit);
            Assert.True(replies.Count >= 1);
        }, iter: 2_000);
    }
}
