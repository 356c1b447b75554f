using System.Data;
using System.Text.Json;
using Dapper;
using Warren.Platform.Runtime;

namespace Warren.Platform.Vms;

/// <summary>Row mapping for the <c>vms</c> table.</summary>
internal static class VmStore
{
    public const string Columns = """
        id AS Id, name AS Name, account_id AS AccountId, image AS Image, image_digest AS ImageDigest, state AS State,
        state_reason AS StateReason, slot_name AS SlotName, tags AS Tags, comment AS Comment, cpus AS Cpus,
        memory_bytes AS MemoryBytes, disk_bytes AS DiskBytes, proxy_port AS ProxyPort, exposed_ports AS ExposedPorts,
        env AS Env, command_mode AS CommandMode, custom_command AS CustomCommand, setup_script AS SetupScript,
        login_user AS LoginUser, source_vm_id AS SourceVmId, is_public AS IsPublic, proxy_port_override AS ProxyPortOverride,
        receive_email AS ReceiveEmail, created_at AS CreatedAt, updated_at AS UpdatedAt
        """;

    public static async Task<VmRecord?> GetByIdAsync(IDbConnection c, IDbTransaction? tx, string id)
        => Map(await c.QuerySingleOrDefaultAsync<Row>($"SELECT {Columns} FROM vms WHERE id = @id", new { id }, tx));

    public static async Task<VmRecord?> GetByNameAsync(IDbConnection c, IDbTransaction? tx, string name)
        => Map(await c.QuerySingleOrDefaultAsync<Row>($"SELECT {Columns} FROM vms WHERE name = @name", new { name }, tx));

    public static async Task<List<VmRecord>> ListByAccountAsync(IDbConnection c, IDbTransaction? tx, string accountId)
        => (await c.QueryAsync<Row>($"SELECT {Columns} FROM vms WHERE account_id = @accountId ORDER BY created_at, name", new { accountId }, tx))
            .Select(r => Map(r)!).ToList();

    public static IEnumerable<VmRecord> All(IDbConnection c)
        => c.Query<Row>($"SELECT {Columns} FROM vms", buffered: false).Select(r => Map(r)!);

    public static List<VmRecord> ByIds(IDbConnection c, IReadOnlyCollection<string> ids)
        => ids.Count == 0 ? [] : c.Query<Row>($"SELECT {Columns} FROM vms WHERE id IN @ids", new { ids }).Select(r => Map(r)!).ToList();

    public static object ToParameters(VmRecord v) => new
    {
        v.Id, v.Name, v.AccountId, v.Image, v.ImageDigest, State = v.State.ToWire(), v.StateReason, v.SlotName,
        Tags = JsonSerializer.Serialize(v.Tags), v.Comment, v.Cpus, v.MemoryBytes, v.DiskBytes,
        ProxyPort = v.AutoProxyPort, ExposedPorts = JsonSerializer.Serialize(v.ExposedPorts),
        Env = JsonSerializer.Serialize(v.Env), CommandMode = v.CommandMode.ToString().ToLowerInvariant(),
        CustomCommand = v.CustomCommand is null ? null : JsonSerializer.Serialize(v.CustomCommand),
        v.SetupScript, v.LoginUser, v.SourceVmId, IsPublic = v.IsPublic ? 1 : 0,
        ProxyPortOverride = v.ProxyPort != v.AutoProxyPort ? v.ProxyPort : (int?)null,
        ReceiveEmail = v.ReceiveEmail ? 1 : 0,
        CreatedAt = v.CreatedAt.ToUnixTimeMilliseconds(), UpdatedAt = v.UpdatedAt.ToUnixTimeMilliseconds(),
    };

    public const string InsertSql = """
        INSERT INTO vms (id, name, account_id, image, image_digest, state, state_reason, slot_name, tags, comment, cpus,
            memory_bytes, disk_bytes, proxy_port, exposed_ports, env, command_mode, custom_command, setup_script, login_user,
            source_vm_id, is_public, proxy_port_override, receive_email, created_at, updated_at)
        VALUES (@Id, @Name, @AccountId, @Image, @ImageDigest, @State, @StateReason, @SlotName, @Tags, @Comment, @Cpus,
            @MemoryBytes, @DiskBytes, @ProxyPort, @ExposedPorts, @Env, @CommandMode, @CustomCommand, @SetupScript, @LoginUser,
            @SourceVmId, @IsPublic, @ProxyPortOverride, @ReceiveEmail, @CreatedAt, @UpdatedAt)
        """;

    public static VmRecord? Map(Row? r)
    {
        if (r is null) return null;
        int auto = (int)r.ProxyPort;
        return new VmRecord(
            r.Id, r.Name, r.AccountId, r.Image, VmStates.Parse(r.State), r.SlotName,
            // Sorted here as well: rows written before tags were kept sorted.
            (JsonSerializer.Deserialize<List<string>>(r.Tags) ?? []).Order(StringComparer.Ordinal).ToList(),
            r.Comment, r.Cpus, r.MemoryBytes, r.DiskBytes,
            r.ProxyPortOverride is { } o ? (int)o : auto,
            JsonSerializer.Deserialize<List<int>>(r.ExposedPorts) ?? [],
            DateTimeOffset.FromUnixTimeMilliseconds(r.CreatedAt), DateTimeOffset.FromUnixTimeMilliseconds(r.UpdatedAt),
            JsonSerializer.Deserialize<Dictionary<string, string>>(r.Env) ?? new(),
            Enum.Parse<CommandMode>(r.CommandMode, ignoreCase: true))
        {
            StateReason = r.StateReason,
            ImageDigest = r.ImageDigest,
            CustomCommand = r.CustomCommand is null ? null : JsonSerializer.Deserialize<List<string>>(r.CustomCommand),
            SetupScript = r.SetupScript,
            LoginUser = r.LoginUser,
            SourceVmId = r.SourceVmId,
            IsPublic = r.IsPublic != 0,
            AutoProxyPort = auto,
            ReceiveEmail = r.ReceiveEmail != 0,
        };
    }

    internal sealed class Row
    {
        public string Id { get; set; } = "";
        public string Name { get; set; } = "";
        public string AccountId { get; set; } = "";
        public string Image { get; set; } = "";
        public string? ImageDigest { get; set; }
        public string State { get; set; } = "";
        public string? StateReason { get; set; }
        public string? SlotName { get; set; }
        public string Tags { get; set; } = "[]";
        public string Comment { get; set; } = "";
        public double Cpus { get; set; }
        public long MemoryBytes { get; set; }
        public long DiskBytes { get; set; }
        public long ProxyPort { get; set; }
        public string ExposedPorts { get; set; } = "[]";
        public string Env { get; set; } = "{}";
        public string CommandMode { get; set; } = "auto";
        public string? CustomCommand { get; set; }
        public string? SetupScript { get; set; }
        public string? LoginUser { get; set; }
        public string? SourceVmId { get; set; }
        public long IsPublic { get; set; }
        public long? ProxyPortOverride { get; set; }
        public long ReceiveEmail { get; set; }
        public long CreatedAt { get; set; }
        public long UpdatedAt { get; set; }
    }
}
