#!/usr/bin/env bash
# Control-plane benchmark (issue 3), loopback only, one run:
#   over SSH   : `ssh <control> ls --json` for an account with VMS VM records (sequential, N_LS runs),
#                `ssh <control> whoami` sequential (N_WHOAMI) and CONCURRENCY sessions at once
#   in-process : the same commands through CommandDispatcher.RunAsync in a process built like the daemon
#                (bench/Warren.Bench.ControlPlane: AddWarrenCore + Docker runtime) over the same data directory
# The difference is what the SSH front door (process start of the client, TCP, kex, auth, channel) adds.
#
# How the 1,000 VMs exist: `warren user add` creates the account and the database (migrations run), then
# VMS rows are inserted into `vms` (state running, image warren/busybox:1; the first 4 with a slot and an
# ssh_reach route, the rest without, as the allocator would leave them) in one SQLite transaction, before the
# daemon starts. No container is created. The daemon's start-up reconciliation finds no container for
# them and marks them failed ("missing in the runtime") — a real state `ls` must print; the benchmark
# waits until every record is failed so that both sides read the same rows.
#
# The concurrent sessions each bind their own loopback source address (127.0.2.1 …): Warren.Ssh caps
# pre-auth connections at 10 per source address (OpenSSH's MaxStartups start value), which 100 clients
# from one address would hit. The sequential runs all come from 127.0.0.1.
#
# Environment: VMS (1000), N_LS (50), N_WHOAMI (100), CONCURRENCY (100).
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd ../.. && pwd)
source "$root/bench/lib/common.sh"

VMS=${VMS:-1000}
N_LS=${N_LS:-50}
N_WHOAMI=${N_WHOAMI:-100}
CONCURRENCY=${CONCURRENCY:-100}

require_tools ssh ssh-keygen dotnet python3 docker

start_bench_workspace cp
daemon_pid=""


echo "bench: building warren and the in-process driver (Release)..." >&2
build_release "$root/bench/Warren.Bench.ControlPlane"
warren=(dotnet "$root/src/Warren/bin/Release/net10.0/warren.dll")
inproc=(dotnet "$root/bench/Warren.Bench.ControlPlane/bin/Release/net10.0/Warren.Bench.ControlPlane.dll")

ssh-keygen -q -t ed25519 -N '' -f "$work/key" -C bench
timeout 120 "${warren[@]}" user add --email bench@example.com --ssh-key-file "$work/key.pub" --Warren:DataDirectory="$data" >/dev/null

python3 - "$data/warren.db" "$VMS" <<'PY'
import sqlite3, sys, time
db, n = sys.argv[1], int(sys.argv[2])
c = sqlite3.connect(db)
(account,) = c.execute("SELECT id FROM accounts WHERE email = 'bench@example.com'").fetchone()
now = int(time.time() * 1000)
with c:
    for i in range(n):
        vm_id, slot = f"vm_bench{i:06d}", (f"s{i + 1:03d}" if i < 4 else None)
        c.execute("""INSERT INTO vms (id, name, account_id, image, state, slot_name, tags, comment, cpus, memory_bytes,
                     disk_bytes, command_mode, created_at, updated_at)
                     VALUES (?, ?, ?, 'warren/busybox:1', 'running', ?, '["bench"]', 'benchmark record', 2,
                     8589934592, 26843545600, 'auto', ?, ?)""", (vm_id, f"bench-{i:04d}", account, slot, now, now))
        if slot:
            c.execute("INSERT INTO ssh_reach (account_id, slot_name, vm_id) VALUES (?, ?, ?)", (account, slot, vm_id))
print(f"inserted {n} VM records for {account}", file=sys.stderr)
PY

port=$(free_port); http=$(free_port); https=$(free_port); dns=$(free_port); smtp=$(free_port)
"${warren[@]}" serve --Warren:DataDirectory="$data" --Warren:SshPort="$port" --Warren:HttpPort="$http" \
  --Warren:HttpsPort="$https" --Warren:DnsPort="$dns" --Warren:SmtpPort="$smtp" >"$work/daemon.log" 2>&1 &
daemon_pid=$!; pids+=("$daemon_pid")
wait_port "$port"

SSH=(ssh -F /dev/null -i "$work/key" -o IdentitiesOnly=yes -o StrictHostKeyChecking=no
     -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR -p "$port")
for _ in $(seq 1 120); do
  failed=$(timeout 60 "${SSH[@]}" 127.0.0.1 ls --json | python3 -c 'import json,sys; print(sum(v["status"] == "failed" for v in json.load(sys.stdin)["vms"]))')
  [ "$failed" -ge "$VMS" ] && break; sleep 1
done
bytes=$(timeout 60 "${SSH[@]}" 127.0.0.1 ls --json | wc -c)
echo "# date: $(date -u +%FT%TZ)  nproc: $(nproc)  load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# account with $VMS VM records ($failed failed after reconciliation); ls --json output $bytes bytes"

cr() { python3 "$root/bench/lib/connrate.py" "$@"; }
# Daemon CPU (user+sys ms) per command: what the server spends, independent of the machine's load.
hz=$(getconf CLK_TCK)
cpu_ms() { awk -v hz="$hz" '{ print ($14 + $15 + $16 + $17) * 1000 / hz }' "/proc/$daemon_pid/stat"; }
measured() {  # label n workers timeout ssh-args...
  local label=$1 n=$2 w=$3 t=$4 c0 c1 line; shift 4
  c0=$(cpu_ms); line=$(cr "$n" "$w" "$t" -- "${SSH[@]}" "$@"); sleep 0.5; c1=$(cpu_ms)
  echo "ssh case=\"$label\" $line daemon_cpu_ms_per_cmd=$(python3 -c "print(f'{($c1 - $c0) / $n:.1f}')") load=$(cut -d' ' -f1 /proc/loadavg)"
}
cr 5 1 60 -- "${SSH[@]}" 127.0.0.1 whoami >/dev/null   # warm-up
measured "ls --json" "$N_LS" 1 60 127.0.0.1 ls --json
measured "whoami" "$N_WHOAMI" 1 60 127.0.0.1 whoami
measured "whoami" "$CONCURRENCY" "$CONCURRENCY" 120 -b '127.0.2.{i}' 127.0.0.1 whoami
echo "# daemon RSS after: $(awk '$1 == "VmRSS:" { print $2 " KiB" }' /proc/$daemon_pid/status)"

kill "$daemon_pid"; wait "$daemon_pid" 2>/dev/null || true; daemon_pid=""
timeout 600 "${inproc[@]}" "$data" "$work/key.pub" "$N_LS" "$N_WHOAMI" "$CONCURRENCY" --Warren:SshPort="$port" --Warren:HttpPort="$http" --Warren:HttpsPort="$https" | sed "s/\$/ load=$(cut -d' ' -f1 /proc/loadavg)/"
echo "# done: $(date -u +%FT%TZ) load: $(cut -d' ' -f1-3 /proc/loadavg)"
