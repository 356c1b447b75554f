using System.Text.Json.Nodes;
using Warren.Platform.Vms;

namespace Warren.Platform.Commands;

/// <summary><c>share receive-email VM [on|off]</c>: mail to <c>anything@VM.&lt;vm-domain&gt;</c> lands in the VM's <c>~/Maildir/new/</c>.</summary>
public sealed partial class CommandDispatcher
{
    private void RegisterMailHandlers()
    {
        _handlers["share receive-email"] = ShareReceiveEmailAsync;
    }

    private async Task<int> ShareReceiveEmailAsync(Invocation inv)
    {
        string name = VmArg(inv, 0);
        inv.MaxArgs(2);
        VmRecord vm;
        bool changed = false;
        switch (inv.OptionalArg(1))
        {
            case null:
                vm = await _s.Vms.GetByNameAsync(inv.Account.Id, name, inv.CancellationToken).ConfigureAwait(false);
                break;
            case ("on" or "off") and var word:
                bool on = word == "on";
                // With a VM runtime, on makes the Maildir in the VM first; without one (tests of the command layer) only the switch flips.
                vm = _s.ReceiveEmail is not { } mail
                    ? await _s.Shares.SetReceiveEmailAsync(inv.Account.Id, name, on, inv.CancellationToken).ConfigureAwait(false)
                    : on
                        ? await mail.EnableAsync(inv.Account.Id, name, inv.CancellationToken).ConfigureAwait(false)
                        : await mail.DisableAsync(inv.Account.Id, name, inv.CancellationToken).ConfigureAwait(false);
                changed = true;
                break;
            case var other:
                throw inv.Usage($"expected on or off, got \"{other}\"");
        }
        string address = $"anything@{Host(vm.Name)}";
        if (inv.Json)
        {
            var o = new JsonObject { ["vm_name"] = vm.Name, ["email_enabled"] = vm.ReceiveEmail, ["email_address"] = address };
            if (changed) o["status"] = "updated";
            inv.WriteJson(o);
        }
        else if (vm.ReceiveEmail)
            inv.Line($"{vm.Name} receives e-mail at {address}; it is delivered to ~/Maildir/new/ in the VM.");
        else
            inv.Line($"{vm.Name} does not receive e-mail.");
        return 0;
    }
}
