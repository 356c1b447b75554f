#!/usr/bin/env bash
# SSH front door benchmark (issue 5), loopback only, one run:
#   (a) bulk  : BYTES of zeros into `cat > /dev/null` inside a VM through Warren's front door (slot address,
#               routed by {account, local IP}) vs the same into OpenSSH's sshd on the host; also the same bytes
#               through `docker exec -i` into the same container (the runtime path without SSH), best of RUNS
#   (b) setup : N sequential `ssh <slot> true` into the VM (connect, kex, auth, route, exec in the container,
#               exit-status) vs `ssh true` into sshd: p50 and rate
#   (c) route lookup with 1,016 slots and 100,000 VMs: bench/Warren.Bench.Routing (SshRouteTable.Resolve)
# Must run as root (sshd). Cleans up its daemon, containers and volumes.
#
# Environment: BYTES (1073741824), RUNS (3), N (50), CIPHERS ("aes128-gcm@openssh.com"), ROUTING (1: run (c)),
#              SETUP (1: run (b)), STRACE (0; 1: one more bulk run per cipher under `strace -c -f` of the daemon and of
#              the agent's serve, syscall counts to $STRACE_OUT or stderr), PERF (0; 1: one more bulk run per cipher
#              under `perf record` of the daemon, JIT symbols from DOTNET_PerfMapEnabled, report to $PERF_OUT or stderr).
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd ../.. && pwd)
source "$root/bench/lib/common.sh"

BYTES=${BYTES:-1073741824}
RUNS=${RUNS:-3}
N=${N:-50}
CIPHERS=${CIPHERS:-"aes128-gcm@openssh.com"}
ROUTING=${ROUTING:-1}
SETUP=${SETUP:-1}
STRACE=${STRACE:-0}
PERF=${PERF:-0}
# The daemon writes /tmp/perf-PID.map for perf report; without W^X the JIT code is not behind a memfd double mapping.
[ "$PERF" = 1 ] && export DOTNET_PerfMapEnabled=1 DOTNET_EnableWriteXorExecute=0

[ "$(id -u)" = 0 ] || { echo "bench: run as root (sshd baseline)" >&2; exit 1; }
require_tools ssh ssh-keygen unshare /usr/sbin/sshd dotnet python3 docker

start_bench_workspace fd


echo "bench: building warren (Release)..." >&2
build_release "$root/src/Warren"
warren=(dotnet "$root/src/Warren/bin/Release/net10.0/warren.dll")

ssh-keygen -q -t ed25519 -N '' -f "$work/key" -C bench
cp "$work/key.pub" "$work/authorized_keys"
SSH=(ssh -F /dev/null -i "$work/key" -o IdentitiesOnly=yes -o StrictHostKeyChecking=no
     -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR)

# ---------------------------------------------------------------- OpenSSH sshd on the host
source "$root/bench/lib/sshd-baseline.sh"
start_baseline_sshd

# ---------------------------------------------------------------- Warren daemon and one VM
timeout 120 "${warren[@]}" user add --email bench@example.com --ssh-key-file "$work/key.pub" --Warren:DataDirectory="$data" >/dev/null
port=$(free_port); http=$(free_port); https=$(free_port); dns=$(free_port); smtp=$(free_port)
"${warren[@]}" serve --Warren:DataDirectory="$data" --Warren:SshPort="$port" --Warren:HttpPort="$http" \
  --Warren:HttpsPort="$https" --Warren:DnsPort="$dns" --Warren:SmtpPort="$smtp" >"$work/daemon.log" 2>&1 &
daemon_pid=$!; pids+=("$daemon_pid")
wait_port "$port"
timeout 300 "${SSH[@]}" -p "$port" 127.0.0.1 new --name=bench --image=warren/busybox:1 --json >"$work/new.json"
container=$(docker ps -q --filter "label=warren.instance=$(cat "$data/instance-id")" | head -1)
# The slot address the VM got: the one of 127.0.1.1–4 where this account's key lands in it.
slot_ip=""
for i in 1 2 3 4; do
  if timeout 60 "${SSH[@]}" -p "$port" "127.0.1.$i" true 2>/dev/null; then slot_ip=127.0.1.$i; break; fi
done
[ -n "$slot_ip" ] || { echo "bench: the VM is reachable on no slot address" >&2; cat "$work/daemon.log" >&2; exit 1; }
# The agent's `serve` inside the VM (a child of the agent as PID 1): it turns DATA frames into the command's stdin.
agent_serve_pid=$(pgrep -P "$(docker inspect -f '{{.State.Pid}}' "$container")" -f ' serve ' | head -1)
[ -n "$agent_serve_pid" ] || { echo "bench: the agent's serve process was not found" >&2; exit 1; }

echo "# date: $(date -u +%FT%TZ)  nproc: $(nproc)  load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# client: $(ssh -V 2>&1); VM image warren/busybox:1 on slot $slot_ip:$port; container ${container:0:12}"
for target in "sshd:127.0.0.1:$sshd_port" "warren:$slot_ip:$port"; do
  IFS=: read -r name host p <<<"$target"
  echo "# $name negotiated: $(timeout 60 "${SSH[@]}" -v -p "$p" "root@$host" true 2>&1 | grep -E 'kex: (algorithm|host key algorithm)' | sed 's/.*kex: //' | tr '\n' ' ')"
done

# ---------------------------------------------------------------- (a) bulk
rate() { python3 -c "print(f'{$BYTES / ($2 - $1) / 1e6:.1f}')"; }
# CPU (user+sys ms) of a process and its reaped children: sshd's listener covers whole connections (the
# shell and cat included); Warren's daemon covers the SSH side only (docker/containerd/runc/cat are not its children).
hz=$(getconf CLK_TCK)
cpu_ms() { awk -v hz="$hz" '{ print ($14 + $15 + $16 + $17) * 1000 / hz }' "/proc/$1/stat"; }
# The agent's serve alone (its own threads, not the commands it reaped): the VM-side cost of the session socket.
own_cpu_ms() { awk -v hz="$hz" '{ print ($14 + $15) * 1000 / hz }' "/proc/$1/stat"; }
bulk_ssh() {  # host port cipher pid -> "MB/s" ; appends the server CPU ms to $work/cpu (and the agent's to $work/agent_cpu)
  local t0 t1 c0 c1 a0 a1; c0=$(cpu_ms "$4"); a0=$(own_cpu_ms "$agent_serve_pid"); t0=$(date +%s.%N)
  head -c "$BYTES" /dev/zero | timeout 900 "${SSH[@]}" -c "$3" -p "$2" "root@$1" 'cat > /dev/null'
  t1=$(date +%s.%N); sleep 0.2; c1=$(cpu_ms "$4"); a1=$(own_cpu_ms "$agent_serve_pid")
  echo "$c0 $c1" | awk '{ printf "%d ", $2 - $1 }' >> "$work/cpu"
  echo "$a0 $a1" | awk '{ printf "%d ", $2 - $1 }' >> "$work/agent_cpu"
  rate "$t0" "$t1"
}
bulk_docker() {
  local t0 t1; t0=$(date +%s.%N)
  head -c "$BYTES" /dev/zero | timeout 900 docker exec -i "$container" sh -c 'cat > /dev/null'
  t1=$(date +%s.%N); rate "$t0" "$t1"
}
best_of() {  # label command... -> "best=.. runs=[..]"
  local label=$1 runs=() b=0 r; shift
  for _ in $(seq 1 "$RUNS"); do r=$("$@"); runs+=("$r"); b=$(python3 -c "print(max($b, $r))"); done
  echo "$b ${runs[*]}"
}
echo "## bulk: $BYTES bytes into cat > /dev/null, MB/s (10^6 B/s), best of $RUNS"
for cipher in $CIPHERS; do
  : > "$work/cpu"
  read -r s_best s_runs <<<"$(best_of sshd bulk_ssh 127.0.0.1 "$sshd_port" "$cipher" "$sshd_pid")"
  echo "bulk cipher=$cipher path=sshd-host best_MBps=$s_best runs=[$s_runs] sshd_cpu_ms_per_run=[$(cat "$work/cpu")] load=$(cut -d' ' -f1 /proc/loadavg)"
  : > "$work/cpu"; : > "$work/agent_cpu"
  read -r w_best w_runs <<<"$(best_of warren bulk_ssh "$slot_ip" "$port" "$cipher" "$daemon_pid")"
  echo "bulk cipher=$cipher path=warren-frontdoor-vm best_MBps=$w_best runs=[$w_runs] daemon_cpu_ms_per_run=[$(cat "$work/cpu")] agent_serve_cpu_ms_per_run=[$(cat "$work/agent_cpu")] load=$(cut -d' ' -f1 /proc/loadavg)"
  echo "bulk cipher=$cipher ratio_warren_over_sshd=$(python3 -c "print(f'{$w_best / $s_best:.3f}')")"
  if [ "$STRACE" = 1 ]; then
    # Syscalls per bulk run (load-independent; the run itself is slowed by the tracing, so its rate is not reported).
    require_tools strace
    strace -c -f -q -p "$daemon_pid" -o "$work/strace-daemon" & st_d=$!
    strace -c -f -q -p "$agent_serve_pid" -o "$work/strace-agent" & st_a=$!
    sleep 1
    bulk_ssh "$slot_ip" "$port" "$cipher" "$daemon_pid" >/dev/null
    kill -INT "$st_d" "$st_a"; wait "$st_d" "$st_a" 2>/dev/null || true
    { echo "## strace -c -f, daemon, one bulk run ($cipher)"; cat "$work/strace-daemon"
      echo "## strace -c -f, agent serve, one bulk run ($cipher)"; cat "$work/strace-agent"; } >> "${STRACE_OUT:-/dev/stderr}"
  fi
  if [ "$PERF" = 1 ]; then
    # Where the daemon's CPU goes: cpu-clock samples (hardware counters are not available everywhere), by symbol.
    require_tools perf
    perf record -q -e cpu-clock -F 2000 -p "$daemon_pid" -o "$work/perf.data" 2>/dev/null & pf=$!
    sleep 1
    bulk_ssh "$slot_ip" "$port" "$cipher" "$daemon_pid" >/dev/null
    kill -INT "$pf"; wait "$pf" 2>/dev/null || true
    { echo "## perf report, daemon, one bulk run ($cipher)"
      perf report -i "$work/perf.data" --no-children --sort dso --stdio 2>/dev/null | awk '!/^#/ && NF && n++ < 15'
      perf report -i "$work/perf.data" --no-children --sort dso,symbol --stdio 2>/dev/null | awk '!/^#/ && NF && n++ < 60' 
    } >> "${PERF_OUT:-/dev/stderr}"
  fi
done
read -r d_best d_runs <<<"$(best_of docker bulk_docker)"
echo "bulk path=docker-exec-same-container best_MBps=$d_best runs=[$d_runs] load=$(cut -d' ' -f1 /proc/loadavg)"

# ---------------------------------------------------------------- (b) connection setup
if [ "$SETUP" = 1 ]; then
echo "## setup: connect + auth + exec true + exit-status + close, $N sequential"
cr() { python3 "$root/bench/lib/connrate.py" "$@"; }
per_conn() { python3 -c "print(f'{($2 - $1) / $N:.1f}')"; }
cr 5 1 60 -- "${SSH[@]}" -p "$sshd_port" root@127.0.0.1 true >/dev/null
c0=$(cpu_ms "$sshd_pid"); line=$(cr "$N" 1 60 -- "${SSH[@]}" -p "$sshd_port" root@127.0.0.1 true); sleep 0.5; c1=$(cpu_ms "$sshd_pid")
echo "setup path=sshd-host $line sshd_cpu_ms_per_conn=$(per_conn "$c0" "$c1") load=$(cut -d' ' -f1 /proc/loadavg)"
cr 5 1 60 -- "${SSH[@]}" -p "$port" "root@$slot_ip" true >/dev/null
c0=$(cpu_ms "$daemon_pid"); line=$(cr "$N" 1 60 -- "${SSH[@]}" -p "$port" "root@$slot_ip" true); sleep 0.5; c1=$(cpu_ms "$daemon_pid")
echo "setup path=warren-frontdoor-vm $line daemon_cpu_ms_per_conn=$(per_conn "$c0" "$c1") load=$(cut -d' ' -f1 /proc/loadavg)"
echo "setup path=docker-exec-same-container $(cr "$N" 1 60 -- docker exec "$container" true) load=$(cut -d' ' -f1 /proc/loadavg)"
fi
echo "# daemon RSS: $(awk '$1 == "VmRSS:" { print $2 " KiB" }' /proc/$daemon_pid/status)"

# ---------------------------------------------------------------- (c) route lookup
if [ "$ROUTING" = 1 ]; then
  echo "## route lookup: SshRouteTable.Resolve, 1016 slots, 100000 VMs"
  build_release "$root/bench/Warren.Bench.Routing"
  timeout 900 dotnet "$root/bench/Warren.Bench.Routing/bin/Release/net10.0/Warren.Bench.Routing.dll" 1016 100000 5 3
fi
echo "# done: $(date -u +%FT%TZ) load: $(cut -d' ' -f1-3 /proc/loadavg)"
