# Shared by bench/http/run.sh and bench/http/vm.sh (source it after bench/lib/common.sh).

# Starts nginx as an HTTPS reverse proxy (keep-alive upstream pool, the headers Warren sets) in DIR on
# 127.0.0.1:PORT → UPSTREAM (host:port) with CERT/KEY; appends its pid to the caller's pids array and waits
# until it answers. WORKERS is its worker_processes (1, or auto = one per core).
start_nginx_reverse_proxy() { # dir port upstream cert key workers
  local dir=$1 port=$2 upstream=$3 cert=$4 key=$5 workers=${6:-1}
  mkdir -p "$dir/logs"
  cat > "$dir/nginx.conf" <<CONF
worker_processes $workers;
error_log $dir/logs/error.log warn;
pid $dir/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  upstream vm { server $upstream; keepalive 128; }
  server {
    listen 127.0.0.1:$port ssl http2;
    ssl_certificate $cert;
    ssl_certificate_key $key;
    ssl_protocols TLSv1.2 TLSv1.3;  # what Warren offers: both negotiate TLS 1.3 with wrk
    keepalive_requests 1000000;
    location / {
      proxy_pass http://vm;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto https;
      proxy_set_header X-Forwarded-Host \$http_host;
    }
  }
}
CONF
  nginx -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' &
  pids+=($!)
  for _ in $(seq 1 50); do curl -sk -f -o /dev/null "https://127.0.0.1:$port/" && return 0; sleep 0.1; done
  echo "bench: nginx reverse proxy did not answer" >&2; return 1
}

# One wrk case after a warm-up of the same shape; prints req/s, p50, p99, load and any errors on one line.
# Env: THREADS, CONNECTIONS (T, C override them for one call), WARMUP, DURATION.
wrk_case() { # name url [host header]
  local name=$1 url=$2 hdr=${3:-}
  local args=(-t"${T:-$THREADS}" -c"${C:-$CONNECTIONS}" --latency --timeout 5s)
  [ -n "$hdr" ] && args+=(-H "Host: $hdr")
  timeout 120 wrk "${args[@]}" -d"$WARMUP" "$url" >/dev/null
  local out; out=$(timeout 300 wrk "${args[@]}" -d"$DURATION" "$url")
  local rps p50 p99 errors
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  errors=$(grep -E 'Non-2xx|Socket errors' <<<"$out" | tr -s ' ' | tr '\n' ' ' || true)
  printf '%-7s %10s req/s   p50 %9s   p99 %9s   load %s   %s\n' "$name" "$rps" "$p50" "$p99" "$(cut -d' ' -f1 /proc/loadavg)" "$errors"
}
