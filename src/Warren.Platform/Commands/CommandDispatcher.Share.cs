using System.Globalization;
using Microsoft.Extensions.Logging;
using System.Text.Json.Nodes;
using Warren.Platform.Accounts;
using Warren.Platform.Sharing;
using Warren.Platform.Vms;

namespace Warren.Platform.Commands;

/// <summary>share * (exe.dev). Records and validation; the HTTPS and e-mail front doors act on them.</summary>
public sealed partial class CommandDispatcher
{
    private void RegisterShareHandlers()
    {
        _handlers["share show"] = ShareShowAsync;
        _handlers["share port"] = SharePortAsync;
        _handlers["share set-public"] = inv => SharePublicAsync(inv, true);
        _handlers["share set-private"] = inv => SharePublicAsync(inv, false);
        _handlers["share add"] = ShareAddAsync;
        _handlers["share remove"] = ShareRemoveAsync;
        _handlers["share add-link"] = ShareAddLinkAsync;
        _handlers["share remove-link"] = ShareRemoveLinkAsync;
    }

    private static string ShareWord(bool isPublic) => isPublic ? "public" : "private";

    private async Task<int> ShareShowAsync(Invocation inv)
    {
        string name = VmArg(inv, 0);
        inv.MaxArgs(1);
        var s = await _s.Shares.GetAsync(inv.Account.Id, name, inv.CancellationToken).ConfigureAwait(false);
        if (inv.Json)
        {
            inv.WriteJson(new JsonObject
            {
                ["vm_name"] = s.Vm.Name,
                ["status"] = ShareWord(s.IsPublic),
                ["port"] = s.Port,
                ["url"] = HttpsUrl(s.Vm.Name),
                ["users"] = new JsonArray(s.Users.Select(u => (JsonNode?)new JsonObject
                {
                    ["email"] = u.Email,
                    ["status"] = u.Status == ShareStatus.Active ? "active" : "pending",
                    ["invited_at"] = Invocation.Rfc3339(u.InvitedAt),
                    ["ssh"] = u.Ssh,
                }).ToArray()),
                ["links"] = new JsonArray(s.Links.Select(l => (JsonNode?)new JsonObject
                {
                    ["token"] = l.TokenHint,
                    ["created_at"] = Invocation.Rfc3339(l.CreatedAt),
                    ["use_count"] = l.UseCount,
                    ["last_used_at"] = l.LastUsedAt is { } u ? Invocation.Rfc3339(u) : null,
                }).ToArray()),
                ["email_enabled"] = s.ReceiveEmail,
            });
            return 0;
        }
        inv.Line($"{HttpsUrl(s.Vm.Name)}/ is {ShareWord(s.IsPublic)} (port {s.Port}).");
        if (s.Users.Count == 0) inv.Line("Not shared with anyone.");
        else
        {
            inv.Line(inv.Bold("Shared with:"));
            foreach (var u in s.Users)
                inv.Line($"  {u.Email} ({(u.Status == ShareStatus.Active ? "active" : "pending")}{(u.Ssh ? ", ssh" : "")})");
        }
        if (s.Links.Count > 0)
        {
            inv.Line(inv.Bold("Share links:"));
            foreach (var l in s.Links)
                inv.Line($"  {l.TokenHint}… created {Invocation.Rfc3339(l.CreatedAt)}, used {l.UseCount.ToString(CultureInfo.InvariantCulture)} time(s)");
        }
        if (s.ReceiveEmail) inv.Line($"Receives e-mail at anything@{Host(s.Vm.Name)}.");
        return 0;
    }

    private async Task<int> SharePortAsync(Invocation inv)
    {
        string name = VmArg(inv, 0);
        inv.MaxArgs(2);
        var before = await _s.Vms.GetByNameAsync(inv.Account.Id, name, inv.CancellationToken).ConfigureAwait(false);
        if (inv.OptionalArg(1) is not { } portText)
        {
            if (inv.Json) inv.WriteJson(new JsonObject { ["vm_name"] = before.Name, ["port"] = before.ProxyPort, ["share"] = ShareWord(before.IsPublic) });
            else inv.Line($"{HttpsUrl(before.Name)}/ uses port {before.ProxyPort} ({ShareWord(before.IsPublic)}).");
            return 0;
        }
        if (!int.TryParse(portText, NumberStyles.None, CultureInfo.InvariantCulture, out int port))
            throw new CommandException($"port must be between {ShareService.MinSharePort} and {ShareService.MaxSharePort}, got \"{portText}\"");
        var vm = await _s.Shares.SetPortAsync(inv.Account.Id, name, port, inv.CancellationToken).ConfigureAwait(false);
        if (inv.Json)
        {
            inv.WriteJson(new JsonObject { ["vm_name"] = vm.Name, ["port"] = vm.ProxyPort, ["share"] = ShareWord(vm.IsPublic), ["status"] = "updated" });
            return 0;
        }
        inv.Line($"{HttpsUrl(vm.Name)}/ now points to port {vm.ProxyPort} ({ShareWord(vm.IsPublic)}).");
        if (vm.IsPublic && before.ProxyPort != vm.ProxyPort)
            inv.Line($"Port {before.ProxyPort} is now private. Only the default port can be public.");
        return 0;
    }

    private async Task<int> SharePublicAsync(Invocation inv, bool isPublic)
    {
        string name = VmArg(inv, 0);
        inv.MaxArgs(1);
        var vm = await _s.Shares.SetPublicAsync(inv.Account.Id, name, isPublic, inv.CancellationToken).ConfigureAwait(false);
        if (inv.Json)
            inv.WriteJson(new JsonObject { ["vm_name"] = vm.Name, ["port"] = vm.ProxyPort, ["share"] = ShareWord(vm.IsPublic), ["status"] = "updated" });
        else
            inv.Line($"{HttpsUrl(vm.Name)}/ is now {ShareWord(vm.IsPublic)} (port {vm.ProxyPort}).");
        return 0;
    }

    private async Task<int> ShareAddAsync(Invocation inv)
    {
        string name = VmArg(inv, 0);
        string email = inv.Arg(1, "e-mail address");
        inv.MaxArgs(2);
        bool ssh = inv.Args.Flag("root");
        var share = await _s.Shares.AddUserAsync(inv.Account.Id, name, email, ssh, inv.CancellationToken).ConfigureAwait(false);
        bool sent = false;
        if (_s.Email is not null)
        {
            string body = $"{inv.Account.Email} shared {HttpsUrl(name)}/ with you{(ssh ? " (with SSH access)" : "")}.\n";
            if (inv.Args.Value("message") is { } note) body += "\n" + note + "\n";
            if (share.Status == ShareStatus.Pending) body += $"\nTo get access, sign up with: ssh {_s.Options.ControlHost} (using this e-mail address)\n";
            try
            {
                await _s.Email.SendAsync(share.Email, $"{inv.Account.Email} shared {name} with you", body, inv.CancellationToken).ConfigureAwait(false);
                sent = true;
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                _log.LogWarning(e, "Share invitation e-mail to {Email} failed", share.Email);
            }
        }
        string message = sent ? "Invitation sent" : "Access granted";
        if (inv.Json)
            inv.WriteJson(new JsonObject
            {
                ["status"] = "success", ["vm_name"] = name, ["shared_with"] = share.Email, ["message"] = message,
                ["share_status"] = share.Status == ShareStatus.Active ? "active" : "pending", ["ssh"] = share.Ssh,
            });
        else
            inv.Line($"Shared {name} with {share.Email}{(ssh ? " (with SSH access)" : "")}{(share.Status == ShareStatus.Pending ? "; access starts when they sign up" : "")}. {message}.");
        return 0;
    }

    private async Task<int> ShareRemoveAsync(Invocation inv)
    {
        string name = VmArg(inv, 0);
        string email = inv.Arg(1, "e-mail address");
        inv.MaxArgs(2);
        await _s.Shares.RemoveUserAsync(inv.Account.Id, name, email, inv.CancellationToken).ConfigureAwait(false);
        string e = EmailAddress.TryNormalize(email, out var n) ? n : email;
        if (inv.Json) inv.WriteJson(new JsonObject { ["status"] = "success", ["vm_name"] = name, ["message"] = $"Removed {e}'s access" });
        else inv.Line($"Removed {e}'s access");
        return 0;
    }

    private async Task<int> ShareAddLinkAsync(Invocation inv)
    {
        string name = VmArg(inv, 0);
        inv.MaxArgs(1);
        var (token, _) = await _s.Shares.AddLinkAsync(inv.Account.Id, name, inv.CancellationToken).ConfigureAwait(false);
        string url = $"{HttpsUrl(name)}/?share={token}";
        if (inv.Json) inv.WriteJson(new JsonObject { ["status"] = "success", ["vm_name"] = name, ["token"] = token, ["url"] = url });
        else
        {
            inv.Line("Share link (anyone who logs in with it gets access):");
            inv.Line(url);
        }
        return 0;
    }

    private async Task<int> ShareRemoveLinkAsync(Invocation inv)
    {
        string name = VmArg(inv, 0);
        string token = inv.Arg(1, "share link token");
        inv.MaxArgs(2);
        await _s.Shares.RemoveLinkAsync(inv.Account.Id, name, token, inv.CancellationToken).ConfigureAwait(false);
        if (inv.Json) inv.WriteJson(new JsonObject { ["status"] = "success", ["vm_name"] = name, ["message"] = "Share link removed" });
        else inv.Line("Share link removed");
        return 0;
    }
}
