# Shared by the bench scripts (source it): loopback ports and removing what a run's daemon created.

# A free TCP port on 127.0.0.1 (the kernel picks; a race with another process is possible but harmless here).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# Waits until 127.0.0.1:PORT accepts, at most TRIES × 0.1 s (default 600 = 1 minute).
wait_port() {
  local port=$1 tries=${2:-600}
  for _ in $(seq 1 "$tries"); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0; sleep 0.1; done
  echo "bench: port $port did not open" >&2; return 1
}

# Removes the containers and volumes of the Warren daemon whose data directory is DATA (by its warren.instance label).
remove_warren_instance() {
  local data=$1 inst ids vols imgs
  [ -f "$data/instance-id" ] || return 0
  inst=$(cat "$data/instance-id")
  ids=$(docker ps -aq --filter "label=warren.instance=$inst"); [ -n "$ids" ] && docker rm -f $ids >/dev/null
  vols=$(docker volume ls -q --filter "label=warren.instance=$inst"); [ -n "$vols" ] && docker volume rm $vols >/dev/null
  # cp/rename snapshots (warren-vm/<id>:…) carry the instance label of the container they were committed from.
  imgs=$(docker images -q --filter "label=warren.instance=$inst" | sort -u); [ -n "$imgs" ] && docker rmi -f $imgs >/dev/null 2>&1
  # Each VM's own network, the instance's packet-filter table (inet warren_ + the first 10 hex digits of the
  # instance id's SHA-256, as VmFirewall names it) and the VMs' loop-mounted /data images.
  nets=$(docker network ls -q --filter "label=warren.instance=$inst"); [ -n "$nets" ] && docker network rm $nets >/dev/null
  nft delete table inet "warren_$(printf %s "$inst" | sha256sum | cut -c1-10)" 2>/dev/null || true  # none: a runtime without taps or bridges made none
  local mnt
  for mnt in "$data"/disks/*.mnt; do
    [ -d "$mnt" ] || continue
    umount -l "$mnt" 2>/dev/null; chattr -i "$mnt" 2>/dev/null
  done
  return 0
}

# Exits with a clear message unless every TOOL is on PATH (or an executable path).
require_tools() {
  local tool
  for tool in "$@"; do command -v "$tool" >/dev/null || { echo "bench: $tool is required" >&2; exit 1; }; done
}

# Sets $work (a temp dir named after NAME), $data (a daemon's data directory inside it) and $pids (servers the
# script starts: append to it), and on exit stops those, removes the daemon's containers and volumes and the
# temp dir. A script with more to undo defines bench_extra_cleanup, which runs first.
start_bench_workspace() { # name
  work=$(mktemp -d "/tmp/warren-bench-$1.XXXXXX")
  data="$work/data"
  pids=()
  trap stop_bench_workspace EXIT
}
stop_bench_workspace() {
  if declare -F bench_extra_cleanup >/dev/null; then bench_extra_cleanup; fi
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  remove_warren_instance "$data"
  rm -rf "$work"
}

# Builds a project in Release; retries once (other builds in the same checkout can hold files briefly).
build_release() { # project
  timeout 900 dotnet build "$1" -c Release -nologo -v q >"$work/build.log" 2>&1 \
    || timeout 900 dotnet build "$1" -c Release -nologo -v q >"$work/build.log" 2>&1 \
    || { tail -20 "$work/build.log" >&2; exit 1; }
}
