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

# The VM image: the host's nginx FROM scratch (no image registry is reachable here), serving a 600-byte page on
# port 80. Sets $image; builds it once (kept between runs). Needs $work.
build_bench_nginx_image() {
  image=warren/bench-nginx:1
  if ! docker image inspect "$image" >/dev/null 2>&1; then
    echo "bench: building $image from the host's nginx" >&2
    ctx="$work/image"; mkdir -p "$ctx/rootfs/etc/nginx" "$ctx/rootfs/tmp" "$ctx/rootfs/srv"
    nginx_bin=$(command -v nginx)
    for f in "$nginx_bin" $(ldd "$nginx_bin" | grep -o '/[^ ]*'); do
      mkdir -p "$ctx/rootfs$(dirname "$f")"; cp -L "$f" "$ctx/rootfs$f"
    done
    printf 'root:x:0:0:root:/root:/bin/false\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$ctx/rootfs/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' > "$ctx/rootfs/etc/group"
    head -c 600 /dev/zero | tr '\0' 'x' > "$ctx/rootfs/srv/index.html"
    cat > "$ctx/rootfs/etc/nginx/bench.conf" <<'CONF'
user root;
worker_processes 1;
pid /tmp/nginx.pid;
error_log stderr warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path /tmp/body; proxy_temp_path /tmp/proxy; fastcgi_temp_path /tmp/fcgi;
  uwsgi_temp_path /tmp/uwsgi; scgi_temp_path /tmp/scgi;
  server { listen 80; root /srv; }
}
CONF
    cat > "$ctx/Dockerfile" <<DOCKERFILE
FROM scratch
COPY rootfs/ /
EXPOSE 80
CMD ["$nginx_bin", "-c", "/etc/nginx/bench.conf", "-g", "daemon off;"]
DOCKERFILE
    DOCKER_BUILDKIT=0 docker build -q -t "$image" "$ctx" >/dev/null
  fi
}

# Builds warren from the tree at ROOT (Release), starts `warren serve` on free ports with one account and one public
# VM running $image, and waits until the VM's site answers through the front door. Sets $daemon_pid (appended to
# $pids), $port (SSH), $https, $host (the site's Host), $vm_ip, $container. Needs $work, $data (one daemon per
# data directory: its key and log are kept beside it), $image.
start_warren_with_vm() { # root
  local root=$1
  echo "bench: building warren (Release)..." >&2
  build_release "$root/src/Warren"
  warren=(dotnet "$root/src/Warren/bin/Release/net10.0/warren.dll")
  ssh-keygen -q -t ed25519 -N '' -f "$data.key" -C bench
  SSH=(ssh -F /dev/null -i "$data.key" -o IdentitiesOnly=yes -o StrictHostKeyChecking=no
       -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR)
  timeout 120 "${warren[@]}" user add --email bench@example.com --ssh-key-file "$data.key.pub" --Warren:DataDirectory="$data" >/dev/null
  port=$(free_port); http=$(free_port); https=$(free_port); dns=$(free_port); smtp=$(free_port)
  # The per-source limiter stays on the path but never refuses (every wrk connection is from 127.0.0.1).
  # The locally built image is on no registry: it is operator-provided here (Warren:Images:Provided).
  "${warren[@]}" serve --Warren:DataDirectory="$data" --Warren:SshPort="$port" --Warren:HttpPort="$http" \
    --Warren:HttpsPort="$https" --Warren:DnsPort="$dns" --Warren:SmtpPort="$smtp" \
    --Warren:Images:Provided:0=warren/default:1 --Warren:Images:Provided:1="$image" \
    --Warren:Http:RequestsPerSecondPerSource=1000000000 --Warren:Http:RequestBurstPerSource=1000000000 >"$data.log" 2>&1 &
  daemon_pid=$!; pids+=("$daemon_pid")
  wait_port "$port"; wait_port "$https"
  timeout 300 "${SSH[@]}" -p "$port" 127.0.0.1 new --name=bench --image="$image" >/dev/null
  timeout 60 "${SSH[@]}" -p "$port" 127.0.0.1 share set-public bench >/dev/null
  container=$(docker ps -q --filter "label=warren.instance=$(cat "$data/instance-id")" | head -1)
  vm_ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$container")
  host="bench.box.localhost:$https"
  for _ in $(seq 1 100); do curl -sk -o /dev/null -f "https://127.0.0.1:$https/" -H "Host: $host" && break; sleep 0.2; done
  curl -sk -f -o /dev/null "https://127.0.0.1:$https/" -H "Host: $host" || { echo "bench: the VM's site does not answer" >&2; tail -20 "$data.log" >&2; exit 1; }
}
