using System.Buffers;
using System.Buffers.Binary;
using System.Text;

namespace Warren.Agent.Sftp;

/// <summary>
/// SFTP version 3 constants (draft-ietf-secsh-filexfer-02, the version OpenSSH speaks) and the
/// limits OpenSSH's sftp-server uses (sftp-common.h / sftp-server.c).
/// </summary>
internal static class SftpConstants
{
    public const uint ProtocolVersion = 3;

    /// <summary>Largest packet accepted or sent: OpenSSH SFTP_MAX_MSG_LENGTH (256 KiB).</summary>
    public const int MaxPacketLength = 256 * 1024;
    /// <summary>Largest READ answered: OpenSSH SFTP_MAX_READ_LENGTH (message limit less 1 KiB of header room).</summary>
    public const int MaxReadLength = MaxPacketLength - 1024;
    /// <summary>Largest WRITE payload (same header room as reads).</summary>
    public const int MaxWriteLength = MaxPacketLength - 1024;
    /// <summary>Open handles per session (OpenSSH's sftp-server caps by fd limit; we name a number).</summary>
    public const int MaxOpenHandles = 512;
    /// <summary>Directory entries per READDIR reply (OpenSSH sends up to 100).</summary>
    public const int MaxNamesPerReaddir = 100;
    /// <summary>Extended attribute pairs accepted in ATTRS (ours; OpenSSH ignores them too).</summary>
    public const int MaxExtendedAttrs = 64;

    // Packet types (filexfer-02 §3).
    public const byte Init = 1, VersionPacket = 2, Open = 3, Close = 4, Read = 5, Write = 6, LStat = 7, FStat = 8,
        SetStat = 9, FSetStat = 10, OpenDir = 11, ReadDir = 12, Remove = 13, MkDir = 14, RmDir = 15, RealPath = 16,
        Stat = 17, Rename = 18, ReadLink = 19, Symlink = 20,
        Status = 101, Handle = 102, Data = 103, Name = 104, Attrs = 105, Extended = 200, ExtendedReply = 201;

    // Status codes (filexfer-02 §7).
    public const uint FxOk = 0, FxEof = 1, FxNoSuchFile = 2, FxPermissionDenied = 3, FxFailure = 4,
        FxBadMessage = 5, FxNoConnection = 6, FxConnectionLost = 7, FxOpUnsupported = 8;

    // SSH_FXF_* open flags (filexfer-02 §6.3).
    public const uint FxfRead = 0x01, FxfWrite = 0x02, FxfAppend = 0x04, FxfCreat = 0x08, FxfTrunc = 0x10, FxfExcl = 0x20;

    // SSH_FILEXFER_ATTR_* (filexfer-02 §5).
    public const uint AttrSize = 0x01, AttrUidGid = 0x02, AttrPermissions = 0x04, AttrAcModTime = 0x08, AttrExtended = 0x80000000;
}

/// <summary>File attributes (filexfer-02 §5); a null member was absent.</summary>
internal sealed record SftpAttrs(ulong? Size = null, uint? Uid = null, uint? Gid = null, uint? Permissions = null,
    uint? ATime = null, uint? MTime = null);

/// <summary>
/// Reads SFTP wire fields. Every read checks the remaining length before slicing and returns false
/// on truncation, so malformed peer input can never throw.
/// </summary>
internal ref struct SftpReader(ReadOnlySpan<byte> data)
{
    private ReadOnlySpan<byte> _data = data;

    public readonly int Remaining => _data.Length;

    public bool TryReadByte(out byte value)
    {
        value = 0;
        if (_data.Length < 1) return false;
        value = _data[0];
        _data = _data[1..];
        return true;
    }

    public bool TryReadUInt32(out uint value)
    {
        value = 0;
        if (_data.Length < 4) return false;
        value = BinaryPrimitives.ReadUInt32BigEndian(_data);
        _data = _data[4..];
        return true;
    }

    public bool TryReadUInt64(out ulong value)
    {
        value = 0;
        if (_data.Length < 8) return false;
        value = BinaryPrimitives.ReadUInt64BigEndian(_data);
        _data = _data[8..];
        return true;
    }

    /// <summary>An SSH string (uint32 length + bytes); the length is checked against what is left before slicing.</summary>
    public bool TryReadBytes(out ReadOnlySpan<byte> value)
    {
        value = default;
        if (!TryReadUInt32(out uint length) || length > (uint)_data.Length) return false;
        value = _data[..(int)length];
        _data = _data[(int)length..];
        return true;
    }

    public bool TryReadString(out string value)
    {
        value = "";
        if (!TryReadBytes(out var bytes)) return false;
        value = Encoding.UTF8.GetString(bytes);
        return true;
    }

    public bool TryReadAttrs(out SftpAttrs attrs)
    {
        attrs = new SftpAttrs();
        if (!TryReadUInt32(out uint flags)) return false;
        ulong? size = null; uint? uid = null, gid = null, perm = null, atime = null, mtime = null;
        if ((flags & SftpConstants.AttrSize) != 0)
        {
            if (!TryReadUInt64(out var s)) return false;
            size = s;
        }
        if ((flags & SftpConstants.AttrUidGid) != 0)
        {
            if (!TryReadUInt32(out var u) || !TryReadUInt32(out var g)) return false;
            uid = u; gid = g;
        }
        if ((flags & SftpConstants.AttrPermissions) != 0)
        {
            if (!TryReadUInt32(out var p)) return false;
            perm = p;
        }
        if ((flags & SftpConstants.AttrAcModTime) != 0)
        {
            if (!TryReadUInt32(out var a) || !TryReadUInt32(out var m)) return false;
            atime = a; mtime = m;
        }
        if ((flags & SftpConstants.AttrExtended) != 0)
        {
            if (!TryReadUInt32(out var count) || count > SftpConstants.MaxExtendedAttrs) return false;
            for (uint i = 0; i < count; i++)
                if (!TryReadBytes(out _) || !TryReadBytes(out _)) return false;
        }
        attrs = new SftpAttrs(size, uid, gid, perm, atime, mtime);
        return true;
    }
}

/// <summary>Builds one outgoing packet: uint32 length, then the body. Owner: the caller, until <see cref="Complete"/>.</summary>
internal sealed class SftpWriter
{
    private readonly ArrayBufferWriter<byte> _buffer = new(1024);

    public SftpWriter(byte type, uint? id)
    {
        WriteUInt32(0); // length placeholder, patched by Complete
        WriteByte(type);
        if (id.HasValue) WriteUInt32(id.Value);
    }

    public int Length => _buffer.WrittenCount;

    public void WriteByte(byte value)
    {
        _buffer.GetSpan(1)[0] = value;
        _buffer.Advance(1);
    }

    public void WriteUInt32(uint value)
    {
        BinaryPrimitives.WriteUInt32BigEndian(_buffer.GetSpan(4), value);
        _buffer.Advance(4);
    }

    public void WriteUInt64(ulong value)
    {
        BinaryPrimitives.WriteUInt64BigEndian(_buffer.GetSpan(8), value);
        _buffer.Advance(8);
    }

    public void WriteBytes(ReadOnlySpan<byte> value)
    {
        WriteUInt32((uint)value.Length);
        _buffer.Write(value);
    }

    public void WriteString(string value) => WriteBytes(Encoding.UTF8.GetBytes(value));

    public void WriteAttrs(SftpAttrs a)
    {
        uint flags = (a.Size.HasValue ? SftpConstants.AttrSize : 0)
            | (a.Uid.HasValue && a.Gid.HasValue ? SftpConstants.AttrUidGid : 0)
            | (a.Permissions.HasValue ? SftpConstants.AttrPermissions : 0)
            | (a.ATime.HasValue && a.MTime.HasValue ? SftpConstants.AttrAcModTime : 0);
        WriteUInt32(flags);
        if (a.Size.HasValue) WriteUInt64(a.Size.Value);
        if (a.Uid.HasValue && a.Gid.HasValue) { WriteUInt32(a.Uid.Value); WriteUInt32(a.Gid.Value); }
        if (a.Permissions.HasValue) WriteUInt32(a.Permissions.Value);
        if (a.ATime.HasValue && a.MTime.HasValue) { WriteUInt32(a.ATime.Value); WriteUInt32(a.MTime.Value); }
    }

    /// <summary>The finished packet with its length prefix filled in.</summary>
    public ReadOnlyMemory<byte> Complete()
    {
        var memory = _buffer.WrittenMemory;
        var span = System.Runtime.InteropServices.MemoryMarshal.AsMemory(memory).Span;
        BinaryPrimitives.WriteUInt32BigEndian(span, (uint)(memory.Length - 4));
        return memory;
    }
}

/// <summary>One parsed client request; fields not used by <see cref="Type"/> keep their defaults.</summary>
internal sealed class SftpRequest
{
    public byte Type;
    public uint Id;
    public string Path = "";
    public string Path2 = "";
    public byte[] Handle = [];
    public ulong Offset;
    public uint Length;
    public byte[] Data = [];
    public uint PFlags;
    public SftpAttrs Attrs = new();
    public string ExtensionName = "";
    /// <summary>INIT's client version (INIT has no request id).</summary>
    public uint ClientVersion;

    /// <summary>
    /// Parses a packet body (type byte onwards, without the length prefix). Returns false when the
    /// packet is malformed; <paramref name="id"/> is then the request id if one could be read (for a
    /// BAD_MESSAGE status), else null. Never throws on any input.
    /// </summary>
    public static bool TryParse(ReadOnlySpan<byte> body, out SftpRequest request, out uint? id)
    {
        request = new SftpRequest();
        id = null;
        var r = new SftpReader(body);
        if (!r.TryReadByte(out request.Type)) return false;
        if (request.Type == SftpConstants.Init)
            return r.TryReadUInt32(out request.ClientVersion);
        if (!r.TryReadUInt32(out request.Id)) return false;
        id = request.Id;
        switch (request.Type)
        {
            case SftpConstants.Open:
                return r.TryReadString(out request.Path) && r.TryReadUInt32(out request.PFlags) && r.TryReadAttrs(out request.Attrs);
            case SftpConstants.Close:
            case SftpConstants.FStat:
            case SftpConstants.ReadDir:
                return TryReadHandle(ref r, request);
            case SftpConstants.Read:
                return TryReadHandle(ref r, request) && r.TryReadUInt64(out request.Offset) && r.TryReadUInt32(out request.Length);
            case SftpConstants.Write:
                if (!TryReadHandle(ref r, request) || !r.TryReadUInt64(out request.Offset) || !r.TryReadBytes(out var data)) return false;
                if (data.Length > SftpConstants.MaxWriteLength) return false;
                request.Data = data.ToArray();
                return true;
            case SftpConstants.FSetStat:
                return TryReadHandle(ref r, request) && r.TryReadAttrs(out request.Attrs);
            case SftpConstants.SetStat:
            case SftpConstants.MkDir:
                return r.TryReadString(out request.Path) && r.TryReadAttrs(out request.Attrs);
            case SftpConstants.LStat:
            case SftpConstants.Stat:
            case SftpConstants.OpenDir:
            case SftpConstants.Remove:
            case SftpConstants.RmDir:
            case SftpConstants.RealPath:
            case SftpConstants.ReadLink:
                return r.TryReadString(out request.Path);
            case SftpConstants.Rename:
            case SftpConstants.Symlink:
                return r.TryReadString(out request.Path) && r.TryReadString(out request.Path2);
            case SftpConstants.Extended:
                if (!r.TryReadString(out request.ExtensionName)) return false;
                return request.ExtensionName switch
                {
                    "posix-rename@openssh.com" or "hardlink@openssh.com" => r.TryReadString(out request.Path) && r.TryReadString(out request.Path2),
                    "statvfs@openssh.com" or "expand-path@openssh.com" => r.TryReadString(out request.Path),
                    "fstatvfs@openssh.com" or "fsync@openssh.com" => TryReadHandle(ref r, request),
                    _ => true, // unknown extensions get OP_UNSUPPORTED, not BAD_MESSAGE
                };
            default:
                return true; // unknown types get OP_UNSUPPORTED
        }
    }

    /// <summary>Handles are ours: 4 bytes. Longer ones can't be valid, so they're rejected here.</summary>
    private const int MaxHandleLength = 256;

    private static bool TryReadHandle(ref SftpReader r, SftpRequest request)
    {
        if (!r.TryReadBytes(out var handle) || handle.Length > MaxHandleLength) return false;
        request.Handle = handle.ToArray();
        return true;
    }
}
