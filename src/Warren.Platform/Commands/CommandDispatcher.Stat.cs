using System.Globalization;
using System.Text.Json.Nodes;
using Warren.Platform.Stats;
using Warren.Platform.Vms;

namespace Warren.Platform.Commands;

/// <summary>stat (exe.dev's stat).</summary>
public sealed partial class CommandDispatcher
{
    private const double BytesPerGb = 1L << 30;
    private const double BitsPerMegabit = 1_000_000;

    private async Task<int> StatAsync(Invocation inv)
    {
        // exe.dev takes stat's VM name literally (no name.domain normalisation).
        string name = inv.Arg(0, "VM name");
        inv.MaxArgs(1);
        CheckTokenVm(inv, name);
        string rangeText = inv.Args.Value("range") ?? "24h";
        if (!StatsRanges.TryParse(rangeText, out var range))
            throw new CommandException($"invalid --range \"{rangeText}\": use 1h, 24h, 7d or 30d");
        var vm = await _s.Vms.FindOwnedAsync(inv.Account.Id, name, inv.CancellationToken).ConfigureAwait(false)
            ?? throw new CommandException($"VM not found: {name}");
        var points = await _s.Stats.QueryAsync(vm.Id, range, inv.CancellationToken).ConfigureAwait(false);

        // Network counters are cumulative bytes: a point's rate is the change since the previous point.
        var rates = new (double Rx, double Tx)?[points.Count];
        for (int i = 1; i < points.Count; i++)
        {
            double seconds = (points[i].Timestamp - points[i - 1].Timestamp).TotalSeconds;
            long drx = points[i].NetworkRxBytes - points[i - 1].NetworkRxBytes, dtx = points[i].NetworkTxBytes - points[i - 1].NetworkTxBytes;
            if (seconds > 0 && drx >= 0 && dtx >= 0) rates[i] = (drx * 8 / seconds / BitsPerMegabit, dtx * 8 / seconds / BitsPerMegabit);
        }

        if (inv.Json)
        {
            JsonArray? arr = points.Count == 0 ? null : new JsonArray(points.Select((p, i) =>
            {
                var o = new JsonObject
                {
                    ["timestamp"] = Invocation.Rfc3339(p.Timestamp),
                    ["cpu_percent"] = Math.Round(p.CpuPercent, 2),
                    ["memory_used_gb"] = Math.Round(p.MemoryUsedBytes / BytesPerGb, 3),
                    ["memory_limit_gb"] = Math.Round(p.MemoryLimitBytes / BytesPerGb, 3),
                    ["disk_used_gb"] = Math.Round(p.DiskUsedBytes / BytesPerGb, 3),
                };
                if (rates[i] is { } r)
                {
                    o["network_rx_mbps"] = Math.Round(r.Rx, 3);
                    o["network_tx_mbps"] = Math.Round(r.Tx, 3);
                }
                return (JsonNode?)o;
            }).ToArray());
            inv.WriteJson(new JsonObject { ["name"] = vm.Name, ["status"] = vm.State.ToWire(), ["range"] = range.ToWire(), ["points"] = arr });
            return 0;
        }
        inv.Line($"{vm.Name} ({vm.State.ToWire()}), last {range.ToWire()}: {points.Count} point(s)");
        if (points.Count == 0)
        {
            inv.Line("No samples yet.");
            return 0;
        }
        var last = points[^1];
        string F(double v) => v.ToString("0.#", CultureInfo.InvariantCulture);
        inv.Line($"  CPU      avg {F(points.Average(p => p.CpuPercent))}%  max {F(points.Max(p => p.CpuPercent))}%");
        inv.Line($"  Memory   {ByteSize.Format(last.MemoryUsedBytes)} of {ByteSize.Format(last.MemoryLimitBytes)} (max {ByteSize.Format(points.Max(p => p.MemoryUsedBytes))})");
        inv.Line($"  Disk     {ByteSize.Format(last.DiskUsedBytes)} of {ByteSize.Format(vm.DiskBytes)}");
        var known = rates.Where(r => r is not null).Select(r => r!.Value).ToList();
        if (known.Count > 0)
            inv.Line($"  Network  rx {F(known.Average(r => r.Rx))} Mbit/s  tx {F(known.Average(r => r.Tx))} Mbit/s (average)");
        return 0;
    }
}
