#!/usr/bin/env bash
# What one proxied request costs the HTTPS front door, in counts that depend little or not at all on how busy the
# machine is (wall-clock rates on a shared host move with everyone else's load):
#   - system calls per request, and upstream connects per request (≈ 0: VM connections are kept alive), by
#     `strace -c -f` on the whole daemon around a fixed number of requests;
#   - the daemon's CPU time per request (utime+stime of /proc/PID/stat, and of its "Warren HTTPS" loop threads
#     alone) around a fixed number of requests without a tracer, ROUNDS times;
#   - bytes the process allocates per request (dotnet-counters' dotnet.gc.heap.total_allocated, when dotnet-counters
#     is installed: `dotnet tool install -g dotnet-counters`), the same daemon idle for as long subtracted.
# Path: a bounded wrk (one thread, CONNECTIONS keep-alive connections; a Lua script stops it after REQUESTS
# responses) → `warren serve`'s HTTPS front door → a public VM's port 80 (the VM as in vm.sh).
# WARREN_ROOTS names one or more source trees (e.g. this one and a `git worktree` of an older commit): each gets its
# own daemon and VM, and every pass runs on each in turn, interleaved, so a change in the machine's load falls on
# all of them alike.
# Must run as root (Docker). Cleans up its daemons, containers, volumes and temp files.
#
# Environment: REQUESTS (50000 per pass; the strace pass does a fifth), CONNECTIONS (4), WARMUP (10s), ROUNDS (3 CPU
#              passes per tree), WARREN_ROOTS (this tree).
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd ../.. && pwd)
source "$root/bench/lib/common.sh"
source "$root/bench/http/lib.sh"

REQUESTS=${REQUESTS:-50000}
CONNECTIONS=${CONNECTIONS:-4}
WARMUP=${WARMUP:-10s}
ROUNDS=${ROUNDS:-3}
read -r -a roots <<<"${WARREN_ROOTS:-$root}"

[ "$(id -u)" = 0 ] || { echo "bench: run as root (Docker)" >&2; exit 1; }
require_tools wrk curl dotnet docker ssh ssh-keygen python3 ldd strace

start_bench_workspace http-counts
trap 'exit 143' TERM INT # the workspace's cleanup (an EXIT trap) also runs when the script is stopped
datas=()
bench_extra_cleanup() { # every daemon's containers and volumes; the workspace's own cleanup does $data's
  # Best effort from here: under set -e the first failing step (umount of a disk the daemon already unmounted
  # exits 32) would end the cleanup before the temp directory is removed.
  set +e
  local pid d
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  for d in "${datas[@]}"; do remove_warren_instance "$d"; done
}
build_bench_nginx_image

# One daemon and VM per tree.
names=(); daemons=(); urls=(); hosts=()
for i in "${!roots[@]}"; do
  data="$work/data-$i"; datas+=("$data")
  start_warren_with_vm "${roots[$i]}"
  names+=("$(git -C "${roots[$i]}" rev-parse --short HEAD)$(git -C "${roots[$i]}" diff --quiet HEAD -- src || echo '+changes')")
  daemons+=("$daemon_pid"); urls+=("https://127.0.0.1:$https/"); hosts+=("$host")
done

# wrk is time-bound; this script makes it count: its thread stops after N responses.
cat > "$work/bounded.lua" <<'LUA'
local limit = tonumber(os.getenv("WRK_REQUESTS"))
local marker = os.getenv("WRK_DONE")
local seen = 0
function response(status, headers, body)
  seen = seen + 1
  if status ~= 200 then io.stderr:write("bench: status " .. status .. "\n") end
  if seen == limit then
    wrk.thread:stop()
    io.open(marker, "w"):close()
  end
end
LUA
# Runs N requests against tree I; prints how many completed (wrk's count: up to CONNECTIONS-1 more are cut off in
# flight). wrk's main thread sleeps out -d whatever its threads do: once the thread has stopped (the marker),
# SIGINT, which only the main thread is left to take, ends the run and prints the report.
bounded() { # i n
  local out="$work/wrk.out" marker="$work/wrk.done"
  rm -f "$marker"
  WRK_REQUESTS=$2 WRK_DONE=$marker timeout 900 wrk -t1 -c"$CONNECTIONS" -d900s --timeout 5s -s "$work/bounded.lua" \
    -H "Host: ${hosts[$1]}" "${urls[$1]}" >"$out" &
  local wrk_pid=$!
  while [ ! -e "$marker" ] && kill -0 "$wrk_pid" 2>/dev/null; do sleep 0.2; done
  sleep 0.5
  local child; child=$(pgrep -P "$wrk_pid" -x wrk || true)
  while [ -n "$child" ] && kill -INT "$child" 2>/dev/null; do sleep 0.5; done
  wait "$wrk_pid" || true
  awk '/requests in/ { print $1 }' "$out"
}
ticks() { sed 's/.*) //' "$1" | awk '{ print $12 + $13 }'; } # utime + stime in clock ticks (fields 14, 15; the name before them may hold spaces)
loop_ticks() { # pid: the native loops' threads
  local t sum=0
  for t in /proc/$1/task/*; do
    grep -q '^Warren HTTPS' "$t/comm" 2>/dev/null && sum=$((sum + $(ticks "$t/stat")))
  done
  echo $sum
}
hz=$(getconf CLK_TCK)

echo "# date: $(date -u +%FT%TZ)  nproc: $(nproc)  load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# trees: $(for i in "${!roots[@]}"; do printf '%s=%s ' "${names[$i]}" "${roots[$i]}"; done)"
echo "# wrk -t1 -c$CONNECTIONS, bounded to $REQUESTS requests a pass; VM $image; warm-up $WARMUP each"
for i in "${!roots[@]}"; do
  timeout 120 wrk -t1 -c"$CONNECTIONS" -d"$WARMUP" -H "Host: ${hosts[$i]}" "${urls[$i]}" >/dev/null
done

# ---------------------------------------------------------------- CPU time per request (no tracer attached)
window=10
for round in $(seq 1 "$ROUNDS"); do
  for i in "${!roots[@]}"; do
    pid=${daemons[$i]}
    p0=$(ticks /proc/$pid/stat); l0=$(loop_ticks "$pid"); t0=$(date +%s%N)
    n=$(bounded "$i" "$REQUESTS")
    p1=$(ticks /proc/$pid/stat); l1=$(loop_ticks "$pid"); t1=$(date +%s%N)
    window=$(( (t1 - t0) / 1000000000 + 8 > window ? (t1 - t0) / 1000000000 + 8 : window ))
    awk -v name="${names[$i]}" -v r="$round" -v n="$n" -v p=$((p1 - p0)) -v l=$((l1 - l0)) -v hz="$hz" -v ns=$((t1 - t0)) \
      -v load="$(cut -d' ' -f1 /proc/loadavg)" 'BEGIN {
      printf "cpu %-16s round %d: %d requests in %.1f s: daemon %.1f µs/request (loop threads %.1f µs) = %.0f ms per 100k; load %s\n",
        name, r, n, ns / 1e9, p * 1e6 / hz / n, l * 1e6 / hz / n, p * 1e3 / hz / n * 100000, load }'
  done
done

# ---------------------------------------------------------------- allocations per request (process-wide)
counters=$(command -v dotnet-counters || { [ -x "$HOME/.dotnet/tools/dotnet-counters" ] && echo "$HOME/.dotnet/tools/dotnet-counters"; } || true)
# The amount allocated in each second of a fixed window around the requests (longer than the CPU passes took).
allocated_during() { # pid label command...
  local pid=$1 file="$work/counters-$2"; shift 2
  timeout 900 "$counters" collect -p "$pid" --counters 'System.Runtime[dotnet.gc.heap.total_allocated]' \
    --refresh-interval 1 --format csv -o "$file.csv" --duration "00:00:00:$window" >"$file.log" 2>&1 &
  local cpid=$!
  sleep 3
  local result; result=$("$@")
  wait "$cpid" || true
  [ -s "$file.csv" ] || { cat "$file.log" >&2; echo "$result 0 0"; return; }
  echo "$result $(awk -F, 'NR > 1 && $0 ~ /total_allocated/ { sum += $NF; rows++ } END { print sum + 0, rows + 0 }' "$file.csv")"
}
for i in "${!roots[@]}"; do
  if [ -z "$counters" ]; then
    echo "alloc: dotnet-counters not installed (dotnet tool install -g dotnet-counters): not measured"; break
  fi
  read -r n bytes_busy rows_busy < <(allocated_during "${daemons[$i]}" "busy-$i" bounded "$i" "$REQUESTS")
  read -r _ bytes_idle rows_idle < <(allocated_during "${daemons[$i]}" "idle-$i" echo 0)
  awk -v name="${names[$i]}" -v n="$n" -v b="$bytes_busy" -v rb="$rows_busy" -v i="$bytes_idle" -v ri="$rows_idle" 'BEGIN {
    idle = ri > 0 ? i * rb / ri : 0
    printf "alloc %-16s: %d requests: %.0f bytes allocated in %d s (idle for as long: %.0f) = %.1f B/request (process-wide)\n",
      name, n, b, rb, idle, (b - idle) / n }'
done

# ---------------------------------------------------------------- system calls per request (strace attached)
for i in "${!roots[@]}"; do
  strace -c -f -p "${daemons[$i]}" -o "$work/strace-$i.txt" 2>/dev/null &
  strace_pid=$!
  sleep 3 # every thread attached
  n=$(bounded "$i" $((REQUESTS / 5)))
  kill -INT "$strace_pid"; wait "$strace_pid" 2>/dev/null || true
  awk -v name="${names[$i]}" -v n="$n" '
    # strace -c rows: % time, seconds, usecs/call, calls, [errors,] syscall
    $1 ~ /^[0-9.]+$/ && NF >= 5 && $NF != "total" { calls[$NF] = $4; total += $4 }
    END {
      line = sprintf("syscalls %-16s: %d requests: %.2f system calls/request, %.4f connect/request;", name, n, total / n, calls["connect"] / n)
      for (s in calls) if (calls[s] / n >= 0.01) line = line sprintf(" %s %.2f", s, calls[s] / n)
      print line
    }' "$work/strace-$i.txt"
done
for i in "${!roots[@]}"; do
  echo "# daemon RSS ${names[$i]}: $(awk '$1 == "VmRSS:" { print $2 " KiB" }' /proc/${daemons[$i]}/status)"
done
echo "# done: $(date -u +%FT%TZ) load: $(cut -d' ' -f1-3 /proc/loadavg)"
