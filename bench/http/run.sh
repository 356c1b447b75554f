#!/usr/bin/env bash
# HTTP front door benchmark, loopback only, bounded duration. Measures with wrk:
#   (a) proxy  : wrk → Warren's HTTPS front door (Kestrel + the HTTP/1.1 forwarder) → nginx upstream
#   (b) direct : wrk → the nginx upstream (plain HTTP)
#   (c) nginx  : wrk → nginx as HTTPS reverse proxy (same dev certificate) → the same upstream
# and prints requests/s and p99 latency for each.
#
# The upstream is the host's nginx serving a small static page on 127.0.0.1 (no image registry is
# reachable here for an nginx container; the proxies see the same kind of peer either way).
#
# Environment: DURATION (default 10s), CONNECTIONS (default 64), THREADS (default 2), WARMUP (default 3s).
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd ../.. && pwd)
source "$root/bench/lib/common.sh"
source "$root/bench/http/lib.sh"

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
WARMUP=${WARMUP:-3s}

require_tools wrk nginx curl dotnet

start_bench_workspace http-host

up_port=$(free_port); proxy_port=$(free_port); nginx_port=$(free_port)

# ---------------------------------------------------------------- upstream (nginx, static page)
mkdir -p "$work/up/html" "$work/up/logs" "$work/rp/logs"
head -c 600 /dev/zero | tr '\0' 'x' > "$work/up/html/index.html"
chmod -R a+rX "$work"   # nginx workers run as an unprivileged user
cat > "$work/up/nginx.conf" <<CONF
worker_processes 1;
error_log $work/up/logs/error.log warn;
pid $work/up/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$up_port; root $work/up/html; }
}
CONF
nginx -p "$work/up" -c "$work/up/nginx.conf" -g 'daemon off;' &
pids+=($!)

# ---------------------------------------------------------------- Warren front door
echo "bench: building the front door host (Release)..." >&2
build_release BenchHost/BenchHost.csproj
dotnet BenchHost/bin/Release/net10.0/BenchHost.dll "$up_port" "$proxy_port" "$work/data" >"$work/host.log" 2>&1 &
pids+=($!)

# ---------------------------------------------------------------- nginx as reverse proxy (TLS, same certificate)
for i in $(seq 1 100); do
  [ -f "$work/data/tls/server.crt" ] && curl -sk -o /dev/null "https://127.0.0.1:$proxy_port/" -H "Host: bench.box.localhost:$proxy_port" && break
  sleep 0.2
done
[ -f "$work/data/tls/server.crt" ] || { echo "bench: front door did not start" >&2; cat "$work/host.log" >&2; exit 1; }
start_nginx_reverse_proxy "$work/rp" "$nginx_port" "127.0.0.1:$up_port" "$work/data/tls/server.crt" "$work/data/tls/server.key" 1

# ---------------------------------------------------------------- measure
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION (after ${WARMUP} warm-up), $(nproc) cores, loopback"
wrk_case proxy  "https://127.0.0.1:$proxy_port/" "bench.box.localhost:$proxy_port"
wrk_case direct "http://127.0.0.1:$up_port/"
wrk_case nginx  "https://127.0.0.1:$nginx_port/"
