#!/usr/bin/env bash
# HTTP front door benchmark against a real VM (issue 6), loopback and the Docker bridge only, bounded:
#   (a) warren : wrk → the real `warren serve` HTTPS front door (TLS, Host routing, per-source limiter,
#                header rules, the HTTP/1.1 forwarder) → the VM's port 80
#   (b) direct : wrk → the VM's port 80 on its bridge address (plain HTTP, no proxy)
#   (c) nginx  : wrk → nginx on the host as an HTTPS reverse proxy (same certificate) → the VM's port 80
# The VM runs nginx serving a 600-byte page. No image registry is reachable here, so its image is made
# FROM scratch out of the host's own nginx binary and the libraries ldd names (warren/bench-nginx:1).
# Must run as root (Docker). Cleans up its daemon, containers, volumes and temp files.
#
# Environment: DURATION (10s), CONNECTIONS (64), THREADS (2), WARMUP (10s: tiered JIT settles), ROUNDS (5: a/b/c repeated, interleaved; the target is judged on the median),
#              NGINX_WORKERS (1: worker_processes of the reverse-proxy nginx; "auto" = one per core),
#              LIGHT_CONNECTIONS (4: a last pass of each path at -t1 -cN, latency below saturation).
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd ../.. && pwd)
source "$root/bench/lib/common.sh"
source "$root/bench/http/lib.sh"

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
WARMUP=${WARMUP:-10s}
ROUNDS=${ROUNDS:-5}
NGINX_WORKERS=${NGINX_WORKERS:-1}
LIGHT_CONNECTIONS=${LIGHT_CONNECTIONS:-4}

[ "$(id -u)" = 0 ] || { echo "bench: run as root (Docker)" >&2; exit 1; }
require_tools wrk nginx curl dotnet docker ssh ssh-keygen python3 ldd

start_bench_workspace http
# Best effort cleanup: under set -e the first failing step (umount of a disk the daemon already unmounted exits 32)
# would end it before the temp directory is removed.
bench_extra_cleanup() { set +e; }


# ---------------------------------------------------------------- the VM image, warren daemon, one public VM
build_bench_nginx_image
start_warren_with_vm "$root"

# ---------------------------------------------------------------- nginx on the host as reverse proxy
nginx_port=$(free_port)
start_nginx_reverse_proxy "$work/rp" "$nginx_port" "$vm_ip:80" "$data/tls/server.crt" "$data/tls/server.key" "$NGINX_WORKERS"

# ---------------------------------------------------------------- measure
echo "# date: $(date -u +%FT%TZ)  nproc: $(nproc)  load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# wrk -t$THREADS -c$CONNECTIONS -d$DURATION (after $WARMUP warm-up); VM $image at $vm_ip:80; nginx reverse proxy worker_processes=$NGINX_WORKERS"
results="$work/results"
for round in $(seq 1 "$ROUNDS"); do
  echo "## round $round"
  wrk_case warren "https://127.0.0.1:$https/" "$host" | tee -a "$results"
  wrk_case direct "http://$vm_ip:80/" | tee -a "$results"
  wrk_case nginx  "https://127.0.0.1:$nginx_port/" | tee -a "$results"
done
# Latency below saturation: one wrk thread, LIGHT_CONNECTIONS connections, so "added p99" is the proxies' own
# cost rather than queueing behind a saturated CPU.
echo "## light load: wrk -t1 -c$LIGHT_CONNECTIONS"
T=1 C=$LIGHT_CONNECTIONS wrk_case warren "https://127.0.0.1:$https/" "$host" | sed 's/^warren /warren-light /' | tee -a "$results"
T=1 C=$LIGHT_CONNECTIONS wrk_case direct "http://$vm_ip:80/" | sed 's/^direct /direct-light /' | tee -a "$results"
T=1 C=$LIGHT_CONNECTIONS wrk_case nginx  "https://127.0.0.1:$nginx_port/" | sed 's/^nginx /nginx-light /' | tee -a "$results"
# The targets, from the lines above: Warren's rate over nginx's per round (and their median), and the p99 each
# proxy adds to going direct below saturation (wrk prints latencies in us, ms or s).
awk '
  function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
  $1 == "warren" { w[++nw] = $2 } $1 == "nginx" { n[++nn] = $2 }
  $1 ~ /-light$/ { p99[$1] = ms($7) }
  END {
    line = "# summary: warren/nginx per round:"
    for (i = 1; i <= nw && i <= nn; i++) { r[i] = w[i] / n[i]; line = line sprintf(" %.2f", r[i]) }
    m = nw < nn ? nw : nn
    for (i = 2; i <= m; i++) { v = r[i]; for (j = i - 1; j >= 1 && r[j] > v; j--) r[j + 1] = r[j]; r[j + 1] = v }
    median = m % 2 ? r[(m + 1) / 2] : (r[m / 2] + r[m / 2 + 1]) / 2
    printf "%s (median %.2f; target >= 1)\n", line, median
    printf "# summary: added p99 below saturation: warren +%.2f ms, nginx +%.2f ms (target <= 1 ms)\n",
      p99["warren-light"] - p99["direct-light"], p99["nginx-light"] - p99["direct-light"]
  }' "$results"
echo "# daemon RSS: $(awk '$1 == "VmRSS:" { print $2 " KiB" }' /proc/$daemon_pid/status)"
echo "# done: $(date -u +%FT%TZ) load: $(cut -d' ' -f1-3 /proc/loadavg)"
