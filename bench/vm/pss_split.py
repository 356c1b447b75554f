"""PSS of a QEMU process split by mapping (/proc/PID/smaps): the guest's RAM (the anonymous mapping of the guest's
size), TCG's translated-code buffer (QEMU's one writable and executable mapping, rwxp: its size is -accel tcg,tb-size=,
1 GiB by default in system emulation; absent under KVM) and the rest (QEMU itself). Usage: pss_split.py PID GUEST_MIB"""
import re
import sys

pid, guest_kib = sys.argv[1], int(sys.argv[2]) * 1024
parts = {"guest_ram": 0, "tcg_code": 0, "qemu_rest": 0}
current = None
with open(f"/proc/{pid}/smaps") as smaps:
    for line in smaps:
        header = re.match(r"^([0-9a-f]+)-([0-9a-f]+) (\S+)", line)
        if header:
            size_kib = (int(header.group(2), 16) - int(header.group(1), 16)) // 1024
            if size_kib == guest_kib:
                current = "guest_ram"
            elif header.group(3) == "rwxp":
                current = "tcg_code"
            else:
                current = "qemu_rest"
        elif line.startswith("Pss:") and current:
            parts[current] += int(line.split()[1])
print(" ".join(f"{name}_pss_mib={kib // 1024}" for name, kib in parts.items()))
