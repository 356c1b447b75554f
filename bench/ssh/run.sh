#!/usr/bin/env bash
# Warren.Ssh (bench/Warren.Bench.SshSink) against OpenSSH's sshd, in one run, loopback only (issue 2):
#   (a) bulk: 1 GiB of zeros into `cat > /dev/null` (sshd) / the sink channel (Warren), per cipher, best of RUNS
#   (b) setup: N sequential `ssh ... true`, then N split over WORKERS parallel workers: conn/s and p50
#   (c) memory: K idle authenticated `ssh -N` connections; server RSS and PSS before/after, KiB per connection
# Both servers use their default kex/host-key negotiation with the same OpenSSH client and key.
# Must run as root (sshd needs it). Every loop is bounded in count and every ssh call in time.
#
# Environment: BYTES (default 1073741824), RUNS (3), N (100), WORKERS (4), K (100), WARMUP (5: connections
#              before the timed setup runs; .NET tiers up the handshake path over the first ~100),
#              CIPHERS ("aes128-gcm@openssh.com chacha20-poly1305@openssh.com"), ONLY ("" | bulk | conn | mem).
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd ../.. && pwd)
source "$root/bench/lib/common.sh"

BYTES=${BYTES:-1073741824}
RUNS=${RUNS:-3}
N=${N:-100}
WORKERS=${WORKERS:-4}
K=${K:-100}
CIPHERS=${CIPHERS:-"aes128-gcm@openssh.com chacha20-poly1305@openssh.com"}
ONLY=${ONLY:-}
WARMUP=${WARMUP:-5}

[ "$(id -u)" = 0 ] || { echo "bench: run as root (sshd baseline)" >&2; exit 1; }
require_tools ssh ssh-keygen unshare /usr/sbin/sshd dotnet python3

start_bench_workspace ssh
clients=()   # ssh -N clients we started (stopped before the servers)
bench_extra_cleanup() { local pid; for pid in "${clients[@]}"; do kill "$pid" 2>/dev/null || true; done; }


# ---------------------------------------------------------------- keys and servers
ssh-keygen -q -t ed25519 -N '' -f "$work/client" -C bench
cp "$work/client.pub" "$work/authorized_keys"

echo "bench: building the sink (Release)..." >&2
build_release "$root/bench/Warren.Bench.SshSink"
sink_dll="$root/bench/Warren.Bench.SshSink/bin/Release/net10.0/Warren.Bench.SshSink.dll"

start_sink() {  # sets sink_pid and sink_port
  sink_port=$(free_port)
  dotnet "$sink_dll" "$sink_port" "$work/authorized_keys" "$work/sink-hostkeys" >"$work/sink.log" 2>&1 &
  sink_pid=$!; pids+=("$sink_pid")
  wait_port "$sink_port"
}
stop_sink() { kill "$sink_pid" 2>/dev/null || true; wait "$sink_pid" 2>/dev/null || true; }

source "$root/bench/lib/sshd-baseline.sh"
start_baseline_sshd

SSH=(ssh -F /dev/null -i "$work/client" -o IdentitiesOnly=yes -o StrictHostKeyChecking=no
     -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR)

start_sink
echo "# date: $(date -u +%FT%TZ)  nproc: $(nproc)  load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# client: $(ssh -V 2>&1)"
for target in "sshd:$sshd_port" "warren:$sink_port"; do
  name=${target%%:*}; port=${target#*:}
  kex=$(timeout 30 "${SSH[@]}" -o LogLevel=VERBOSE -v -p "$port" root@127.0.0.1 true 2>&1 | grep -E 'kex: (algorithm|host key algorithm)' | sed 's/.*kex: //' | tr '\n' ' ')
  echo "# $name negotiated: $kex"
done

# Server CPU time (user+sys, ms) of a process plus its reaped children: load-independent cost. For sshd the
# listener reaps every per-connection process, which reaped its own children (the shell, cat), so the
# listener's cutime/cstime covers the whole connection once it has closed.
hz=$(getconf CLK_TCK)
cpu_ms() { awk -v hz="$hz" '{ print ($14 + $15 + $16 + $17) * 1000 / hz }' "/proc/$1/stat"; }
server_pid() { [ "$1" = sshd ] && echo "$sshd_pid" || echo "$sink_pid"; }

# ---------------------------------------------------------------- (a) bulk throughput
bulk_once() {  # port cipher pid -> "MB/s server_cpu_ms" (MB = 10^6 bytes)
  local port=$1 cipher=$2 pid=$3 t0 t1 c0 c1
  c0=$(cpu_ms "$pid"); t0=$(date +%s.%N)
  head -c "$BYTES" /dev/zero | timeout 600 "${SSH[@]}" -c "$cipher" -p "$port" root@127.0.0.1 'cat > /dev/null'
  t1=$(date +%s.%N); sleep 0.2; c1=$(cpu_ms "$pid")
  python3 -c "print(f'{$BYTES / ($t1 - $t0) / 1e6:.1f} {$c1 - $c0:.0f}')"
}
if [ -z "$ONLY" ] || [ "$ONLY" = bulk ]; then
  echo "## bulk: $BYTES bytes into a sink, MB/s (10^6 B/s), best of $RUNS (all runs in brackets)"
  for cipher in $CIPHERS; do
    declare -A best=()
    for target in "sshd:$sshd_port" "warren:$sink_port"; do
      name=${target%%:*}; port=${target#*:}
      runs=(); cpus=(); b=0
      for _ in $(seq 1 "$RUNS"); do
        read -r r c <<<"$(bulk_once "$port" "$cipher" "$(server_pid "$name")")"; runs+=("$r"); cpus+=("$c")
        b=$(python3 -c "print(max($b, $r))")
      done
      best[$name]=$b
      echo "bulk cipher=$cipher server=$name best_MBps=$b runs=[${runs[*]}] server_cpu_ms_per_run=[${cpus[*]}] load=$(cut -d' ' -f1 /proc/loadavg)"
    done
    echo "bulk cipher=$cipher ratio_warren_over_sshd=$(python3 -c "print(f'{${best[warren]} / ${best[sshd]}:.3f}')")"
    unset best
  done
fi

# ---------------------------------------------------------------- (b) connection setup
if [ -z "$ONLY" ] || [ "$ONLY" = conn ]; then
  echo "## setup: connect + auth + exec true + close"
  for target in "sshd:$sshd_port" "warren:$sink_port"; do
    name=${target%%:*}; port=${target#*:}
    python3 "$root/bench/lib/connrate.py" "$WARMUP" 1 30 -- "${SSH[@]}" -p "$port" root@127.0.0.1 true >/dev/null  # warm-up
    pid=$(server_pid "$name"); c0=$(cpu_ms "$pid")
    line=$(python3 "$root/bench/lib/connrate.py" "$N" 1 30 -- "${SSH[@]}" -p "$port" root@127.0.0.1 true)
    sleep 0.5; c1=$(cpu_ms "$pid")
    echo "setup server=$name $line server_cpu_ms_per_conn=$(python3 -c "print(f'{($c1 - $c0) / $N:.2f}')") load=$(cut -d' ' -f1 /proc/loadavg)"
    echo "setup server=$name $(python3 "$root/bench/lib/connrate.py" "$N" "$WORKERS" 30 -- "${SSH[@]}" -p "$port" root@127.0.0.1 true) load=$(cut -d' ' -f1 /proc/loadavg)"
  done
fi

# ---------------------------------------------------------------- (c) memory per idle authenticated connection
kib() { awk -v k="$2" '$1 == k":" { print $2 }' "$1" 2>/dev/null || echo 0; }
pss_of() { local s=0 p v; for p in "$@"; do v=$(kib "/proc/$p/smaps_rollup" Pss); s=$((s + ${v:-0})); done; echo "$s"; }
rss_of() { local s=0 p v; for p in "$@"; do v=$(kib "/proc/$p/status" VmRSS); s=$((s + ${v:-0})); done; echo "$s"; }
sshd_tree() { local p c; echo "$sshd_pid"; for p in $(ps -o pid= --ppid "$sshd_pid"); do echo "$p"; for c in $(ps -o pid= --ppid "$p"); do echo "$c"; done; done; }

open_idle() {  # port -> starts K `ssh -N`, returns when every one has authenticated (LocalCommand ran)
  local port=$1 i j
  rm -rf "$work/up"; mkdir -p "$work/up"
  for ((i = 0; i < K; i += 10)); do
    for ((j = i; j < i + 10 && j < K; j++)); do
      timeout 300 "${SSH[@]}" -N -o PermitLocalCommand=yes -o LocalCommand="touch $work/up/$j" -p "$port" root@127.0.0.1 &
      clients+=($!)
    done
    for _ in $(seq 1 300); do [ "$(ls "$work/up" | wc -l)" -ge "$j" ] && break; sleep 0.1; done
  done
  [ "$(ls "$work/up" | wc -l)" -ge "$K" ] || { echo "bench: only $(ls "$work/up" | wc -l) of $K idle connections authenticated" >&2; return 1; }
  sleep 2
}
close_idle() { for pid in "${clients[@]}"; do kill "$pid" 2>/dev/null || true; done; for pid in "${clients[@]}"; do wait "$pid" 2>/dev/null || true; done; clients=(); sleep 1; }

if [ -z "$ONLY" ] || [ "$ONLY" = mem ]; then
  echo "## memory: $K idle authenticated connections (ssh -N), server KiB before/after"
  # sshd: the listener plus, per connection, the privileged monitor and the unprivileged/user child.
  before_pss=$(pss_of $(sshd_tree)); before_rss=$(rss_of $(sshd_tree)); before_n=$(sshd_tree | wc -l)
  open_idle "$sshd_port"
  after_pss=$(pss_of $(sshd_tree)); after_rss=$(rss_of $(sshd_tree)); after_n=$(sshd_tree | wc -l)
  close_idle
  echo "mem server=sshd processes=$before_n->$after_n pss_kib=$before_pss->$after_pss rss_sum_kib=$before_rss->$after_rss per_conn_pss_kib=$(((after_pss - before_pss) / K)) per_conn_rss_sum_kib=$(((after_rss - before_rss) / K))"

  # Warren: a fresh sink process, warmed by 10 connections so JIT and pools are in place before "before".
  stop_sink; start_sink
  python3 "$root/bench/lib/connrate.py" 10 1 30 -- "${SSH[@]}" -p "$sink_port" root@127.0.0.1 true >/dev/null
  sleep 1
  before_pss=$(pss_of "$sink_pid"); before_rss=$(rss_of "$sink_pid")
  open_idle "$sink_port"
  after_pss=$(pss_of "$sink_pid"); after_rss=$(rss_of "$sink_pid")
  close_idle
  echo "mem server=warren pss_kib=$before_pss->$after_pss rss_kib=$before_rss->$after_rss per_conn_pss_kib=$(((after_pss - before_pss) / K)) per_conn_rss_kib=$(((after_rss - before_rss) / K))"
fi
echo "# done: $(date -u +%FT%TZ) load: $(cut -d' ' -f1-3 /proc/loadavg)"
