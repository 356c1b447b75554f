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
  local data=$1 inst ids vols
  [ -f "$data/instance-id" ] || return 0
  inst=$(cat "$data/instance-id")
  ids=$(docker ps -aq --filter "label=warren.instance=$inst"); [ -n "$ids" ] && docker rm -f $ids >/dev/null
  vols=$(docker volume ls -q --filter "label=warren.instance=$inst"); [ -n "$vols" ] && docker volume rm $vols >/dev/null
  return 0
}
