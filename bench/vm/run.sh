#!/usr/bin/env bash
# VM benchmark: both runtimes against a bare baseline, loopback only, bounded (ROUNDS of each, interleaved), one run.
#
#   boot, microVM runtime  warren: `ssh <control> new --name=bN --image=BOOT_IMAGE` returns once the VM's agent answered
#                          (new runs `chown /data` in the VM through it) = "agent ready"; then the first `ssh bN true`
#                          through Warren's SSH front door that succeeds = "ssh true". Both from before `new`.
#                          bare: qemu-system-x86_64 with the command line Warren's QEMU ran with (read from its
#                          /proc/PID/cmdline: same kernel, initramfs, machine, devices, kmods disk, a qcow2 overlay on
#                          the same image base; a CPU cgroup with the same quota), but a seed disk whose "agent" is a trivial init that writes a marker
#                          to the serial console: QEMU start → marker seen in the console file.
#   boot, Docker runtime   warren: the same `new` → agent ready → ssh true; bare: `docker run --rm BOOT_IMAGE true`.
#   memory                 PSS (/proc/PID/smaps_rollup) of the QEMU of an idle microVM from the default image
#                          (warren/dind:1, dockerd running in it) with MEMORY_MIB of guest memory, IDLE_SECONDS after
#                          ssh first worked; and of the bare QEMU (trivial init, same memory) for the floor.
#   cp                     `ssh <control> cp` of a running VM holding 1 GiB (random) in /data, timed for both runtimes
#                          (the copy's /data/blob size checked); reference: the host's `cp` of a 1 GiB file on the
#                          same filesystem.
# KVM: this script uses it when Warren does (/dev/kvm with kvm_intel/kvm_amd); on a machine without, every microVM
# figure is QEMU TCG (emulated CPU) and says so in its header line.
#
# The microVMs use QEMU user networking (Warren:MicroVm:Network=User), so that the bare QEMU can run Warren's own
# command line unchanged but for its disks and forwards; a tap device per VM would need its own for the baseline.
# Must run as root (Docker, loop mounts). Removes its daemons' VMs (QEMU by pid, containers by label) and temp files.
# Environment: ROUNDS (3), BOOT_IMAGE (warren/default:1), MEMORY_MIB (512), IDLE_SECONDS (60), SKIP_CP (unset),
# SKIP_DOCKER (unset: also the Docker runtime's part), WARREN_ARGS (extra daemon flags, e.g. a microVM option to compare).
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd ../.. && pwd)
source "$root/bench/lib/common.sh"

ROUNDS=${ROUNDS:-3}
BOOT_IMAGE=${BOOT_IMAGE:-warren/default:1}
MEMORY_MIB=${MEMORY_MIB:-512}
IDLE_SECONDS=${IDLE_SECONDS:-60}
SLOT=127.0.1.1

[ "$(id -u)" = 0 ] || { echo "bench: run as root (Docker, loop mounts)" >&2; exit 1; }
require_tools dotnet docker ssh ssh-keygen python3 qemu-system-x86_64 qemu-img mke2fs
for image in "$BOOT_IMAGE" warren/dind:1; do
  docker image inspect "$image" >/dev/null 2>&1 || { echo "bench: $image missing (scripts/build-images.sh)" >&2; exit 1; }
done

start_bench_workspace vm
# QEMU runs as its own unprivileged user and opens a live copy's target disks itself, so the path to the data directory
# must be traversable (the daemon warns at start when it is not); mktemp's directory is 0700.
chmod 0711 "$work"
# Two daemons (one per runtime), each with its own data directory; QEMU daemonizes, so its VMs are killed by the
# pid files under the microVM daemon's data directory.
data_docker="$work/data-docker"
data="$work/data-microvm"
bare_pids=(); bare_pid=""
bench_extra_cleanup() {
  local pid f
  for pid in "${bare_pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  [ -n "${bare_cgroup:-}" ] && { sleep 0.2; rmdir "$bare_cgroup" 2>/dev/null || true; }
  for f in "$data"/microvm/vms/*/run/qemu.pid; do
    [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
  remove_warren_instance "$data_docker" || true  # its nft delete fails when the daemon already removed the table
}

echo "bench: building warren (Release)..." >&2
build_release "$root/src/Warren"
warren=(dotnet "$root/src/Warren/bin/Release/net10.0/warren.dll")
ssh-keygen -q -t ed25519 -N '' -f "$work/key" -C bench
SSHO=(-F /dev/null -i "$work/key" -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
      -o BatchMode=yes -o LogLevel=ERROR -o ConnectTimeout=20)

now() { date +%s.%N; }
secs() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$2"; }

# start_daemon DATA RUNTIME: sets $port (SSH) for it; the daemon's pid goes to $pids.
start_daemon() {
  local d=$1 runtime=$2 http https dns smtp
  mkdir -p "$d"
  timeout 120 "${warren[@]}" user add --email bench@example.com --ssh-key-file "$work/key.pub" --Warren:DataDirectory="$d" >/dev/null
  port=$(free_port); http=$(free_port); https=$(free_port); dns=$(free_port); smtp=$(free_port)
  "${warren[@]}" serve --Warren:DataDirectory="$d" --Warren:SshPort="$port" --Warren:HttpPort="$http" \
    --Warren:HttpsPort="$https" --Warren:DnsPort="$dns" --Warren:SmtpPort="$smtp" --Warren:Runtime="$runtime" \
    --Warren:MicroVm:Network=User ${WARREN_ARGS:-} \
    --Warren:Slots:0:Name=s001 --Warren:Slots:0:PublicIp=$SLOT --Warren:Slots:0:LocalIp=$SLOT \
    --Warren:Resources:MinCpus=1 --Warren:Resources:DefaultCpus=1 \
    --Warren:Resources:MinMemoryBytes=$((256 << 20)) --Warren:Resources:DefaultMemoryBytes=$((MEMORY_MIB << 20)) \
    --Warren:Resources:MinDiskBytes=$((1 << 30)) --Warren:Resources:DefaultDiskBytes=$((4 << 30)) \
    >"$d/daemon.log" 2>&1 &
  pids+=("$!")
  wait_port "$port" 1800
}
control() { timeout 600 ssh "${SSHO[@]}" -p "$port" 127.0.0.1 "$@"; }
in_vm() { local vm=$1; shift; timeout 120 ssh "${SSHO[@]}" -p "$port" "vm+$vm@$SLOT" "$@"; }

# warren_boot NAME [new flags...]: prints "agent_ready_s ssh_true_s" (from before `new`).
warren_boot() {
  local vm=$1 t0 t1 t2; shift
  t0=$(now)
  control new --name="$vm" "$@" --json >"$work/new-$vm.json" || { echo "bench: new $vm failed" >&2; cat "$work/new-$vm.json" >&2; return 1; }
  t1=$(now)
  for _ in $(seq 1 600); do in_vm "$vm" true 2>/dev/null && break; sleep 0.05; done
  t2=$(now)
  in_vm "$vm" true || { echo "bench: ssh $vm true never succeeded" >&2; return 1; }
  echo "$(secs "$t0" "$t1") $(secs "$t0" "$t2")"
}

pss_kib() { awk '$1 == "Pss:" { print $2 }' "/proc/$1/smaps_rollup"; }
pss_split() { python3 "$root/bench/vm/pss_split.py" "$@"; }
rss_kib() { awk '$1 == "VmRSS:" { print $2 }' "/proc/$1/status"; }
qemu_pid_of() { cat "$data"/microvm/vms/*/run/qemu.pid 2>/dev/null | head -1; }
# guest_marks: dmesg on stdin → "init=1.62 initramfs.started=1.65 … agent.mux_greeted_the_host=3.10" (guest seconds).
guest_marks() {
  python3 -c '
import re, sys
out = []
for line in sys.stdin:
    m = re.match(r"\[\s*([0-9.]+)\] (.*)", line.rstrip())
    if not m: continue
    t, text = m.groups()
    if text.startswith("Run /init as init process"): out.append(f"init={float(t):.2f}")
    for prefix, name in (("warren-initramfs: ", "initramfs"), ("warren-agent: boot: ", "agent")):
        if text.startswith(prefix): out.append(f"{name}.{text[len(prefix):].replace(chr(32), chr(95))}={float(t):.2f}")
print(" ".join(out))'
}
median() { python3 -c "import statistics, sys; print(f'{statistics.median(float(x) for x in sys.argv[1:]):.2f}')" "$@"; }

accel=$( [ -r /dev/kvm ] && { [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]; } && echo kvm || echo "tcg (no usable KVM)")
echo "# date: $(date -u +%FT%TZ)  nproc: $(nproc)  load: $(cut -d' ' -f1-3 /proc/loadavg)  qemu: $(qemu-system-x86_64 --version | head -1)  accel: $accel"
echo "# boot image: $BOOT_IMAGE  guest memory: $MEMORY_MIB MiB  rounds: $ROUNDS"

# ---------------------------------------------------------------- microVM runtime: warren vs bare QEMU
start_daemon "$data" microvm
microvm_daemon=${pids[-1]}
# One unmeasured VM first: it builds the image's base disk (docker export + mke2fs, once per image id).
warren_boot warm --image="$BOOT_IMAGE" >/dev/null
qpid=$(qemu_pid_of)
tr '\0' '\n' < "/proc/$qpid/cmdline" > "$work/qemu-argv"
vmdir=$(dirname "$(dirname "$(ls "$data"/microvm/vms/*/run/qemu.pid | head -1)")")
base=$(qemu-img info -U --output=json "$vmdir/root.qcow2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["full-backing-filename"])')
# The CPU cgroup Warren put its QEMU in (a quota of the VM's CPUs: VmCgroup): the bare QEMU gets a sibling with the
# same quota, so both are one scheduling entity of the same weight on this shared machine (a bare QEMU left in the
# script's session would share that session's autogroup instead, and fare better or worse with the machine's load).
vm_cgroup=$(awk -F: '$2 ~ /(^|,)cpu(,|$)/ { print $3 }' "/proc/$qpid/cgroup")
bare_cgroup=""
if [ -n "$vm_cgroup" ] && [ "$vm_cgroup" != / ] && [ -f "/sys/fs/cgroup/cpu$vm_cgroup/cpu.cfs_quota_us" ]; then
  bare_cgroup="/sys/fs/cgroup/cpu$(dirname "$vm_cgroup")/bench-bare-$$"
  mkdir -p "$bare_cgroup"
  cat "/sys/fs/cgroup/cpu$vm_cgroup/cpu.cfs_period_us" > "$bare_cgroup/cpu.cfs_period_us"
  cat "/sys/fs/cgroup/cpu$vm_cgroup/cpu.cfs_quota_us" > "$bare_cgroup/cpu.cfs_quota_us"
fi
control rm warm --json >/dev/null

# The bare VM: a seed disk whose /.warren/agent is a trivial init (the initramfs switch_roots to it), an empty /data.
bare="$work/bare"; mkdir -p "$bare/seed"
cat > "$bare/seed/agent" <<'INIT'
#!/bin/sh
echo WARREN-BENCH-INIT-READY > /dev/console
exec sleep 3600
INIT
chmod 0755 "$bare/seed/agent"
mke2fs -q -t ext4 -L warren-seed -d "$bare/seed" "$bare/seed.img" 8M >/dev/null
mke2fs -q -t ext4 -L data "$bare/data.raw" 256M >/dev/null
qemu-img convert -O qcow2 "$bare/data.raw" "$bare/data.qcow2"
# Warren's argv with the bare VM's disks, sockets and a console file; in the foreground (no -daemonize/-pidfile).
python3 - "$work/qemu-argv" "$bare" > "$bare/argv" <<'PY'
import re, sys
argv, bare = open(sys.argv[1]).read().split('\n'), sys.argv[2]
if argv and argv[-1] == '': argv.pop()
out, i = [], 1  # argv[0] is the program itself
while i < len(argv):
    a = argv[i]
    if a == '-daemonize': i += 1; continue
    if a == '-pidfile': i += 2; continue
    if a == '-serial': out += ['-serial', f'file:{bare}/console.log']; i += 2; continue
    if a == '-drive':
        d = argv[i + 1]
        for name, path in (('root', 'root.qcow2'), ('data', 'data.qcow2'), ('seed', 'seed.img')):
            if d.startswith(f'id={name},'):
                fields = d.split(',')
                d = ','.join(f'file={bare}/{path}' if f.startswith('file=') else f for f in fields)
        out += ['-drive', d]; i += 2; continue
    if a == '-chardev': out += ['-chardev', f'socket,id=agent,path={bare}/agent.sock,server=on,wait=off']; i += 2; continue
    # Its forwards on a loopback address of its own: the Warren VM may hold the one it was started with.
    if a == '-netdev': out += ['-netdev', re.sub(r'hostfwd=tcp:[0-9.]+:', 'hostfwd=tcp:127.0.4.254:', argv[i + 1])]; i += 2; continue
    if a == '-qmp': out += ['-qmp', f'unix:{bare}/qmp.sock,server=on,wait=off']; i += 2; continue
    out.append(a); i += 1
print('\n'.join(out))
PY
mapfile -t bare_argv < "$bare/argv"

# bare_boot: sets $bare_s (seconds from QEMU start to the marker) and leaves the QEMU running as $bare_pid (bare_stop
# kills it). Not in a subshell: the pid must reach the cleanup.
mkfifo "$bare/pause"; exec {pause_fd}<>"$bare/pause"
bare_boot() {
  rm -f "$bare/root.qcow2" "$bare/console.log" "$bare/agent.sock" "$bare/qmp.sock"
  qemu-img create -q -f qcow2 -b "$base" -F qcow2 "$bare/root.qcow2" 4G
  : > "$bare/console.log"
  local t0 t1
  t0=$(now)
  qemu-system-x86_64 "${bare_argv[@]}" </dev/null >"$bare/qemu.out" 2>&1 &
  bare_pid=$!; bare_pids+=("$bare_pid")
  [ -n "$bare_cgroup" ] && echo "$bare_pid" > "$bare_cgroup/cgroup.procs"
  # Polled with builtins only (mapfile, and read -t on an idle FIFO as the pause): forking grep and sleep 100 times a
  # second would take CPU from the very QEMU being timed on a 2-core machine.
  local lines=() tick
  for tick in $(seq 1 6000); do
    mapfile -t lines < "$bare/console.log"
    [[ "${lines[*]}" == *WARREN-BENCH-INIT-READY* ]] && break
    read -r -t 0.02 -u "$pause_fd" _ || true
  done
  t1=$(now)
  grep -q WARREN-BENCH-INIT-READY "$bare/console.log" || { echo "bench: the bare VM never reached its init" >&2; cat "$bare/qemu.out" >&2; return 1; }
  bare_s=$(secs "$t0" "$t1")
}
bare_stop() { kill -9 "$bare_pid" 2>/dev/null || true; wait "$bare_pid" 2>/dev/null || true; }

agent=(); sshok=(); barev=()
for r in $(seq 1 "$ROUNDS"); do
  read -r a s < <(warren_boot "b$r" --image="$BOOT_IMAGE"); [ -n "${s:-}" ] || exit 1
  # Where the guest's time went, on its own clock (seconds since the kernel started): the kernel starting /init, and
  # the boot marks the initramfs and the agent write to the kernel log (after the timing, so it costs the timing nothing).
  marks=$(in_vm "b$r" 'sudo dmesg 2>/dev/null || dmesg' | guest_marks || true)
  control rm "b$r" --json >/dev/null
  bare_boot; b=$bare_s; bare_stop
  agent+=("$a"); sshok+=("$s"); barev+=("$b")
  echo "microvm round=$r warren_agent_ready_s=$a warren_ssh_true_s=$s bare_qemu_init_s=$b load=$(cut -d' ' -f1 /proc/loadavg)"
  # The runtime's own split of its host-side work for this VM (milliseconds; the daemon logs it once per create).
  echo "microvm round=$r host_phases_ms: $(grep -o 'created, host side: .*' "$data/daemon.log" | tail -1 | cut -d: -f2-)"
  echo "microvm round=$r guest_marks_s: $marks"
done
ma=$(median "${agent[@]}"); ms=$(median "${sshok[@]}"); mb=$(median "${barev[@]}")
echo "microvm median warren_agent_ready_s=$ma warren_ssh_true_s=$ms bare_qemu_init_s=$mb ratio_agent=$(python3 -c "print(f'{$ma/$mb:.2f}')") ratio_ssh=$(python3 -c "print(f'{$ms/$mb:.2f}')") accel=${accel%% *}"

# ---------------------------------------------------------------- memory: an idle default-image microVM
read -r a s < <(warren_boot idle --memory="${MEMORY_MIB}MB"); [ -n "${s:-}" ] || exit 1
sleep "$IDLE_SECONDS"
qpid=$(qemu_pid_of)
engine=$(in_vm idle 'sudo docker info --format "{{.ServerVersion}}" 2>/dev/null || echo none')
echo "memory vm=warren/dind:1 guest_mib=$MEMORY_MIB idle_s=$IDLE_SECONDS dockerd=$engine qemu_pss_mib=$(( $(pss_kib "$qpid") / 1024 )) qemu_rss_mib=$(( $(rss_kib "$qpid") / 1024 )) $(pss_split "$qpid" "$MEMORY_MIB") accel=${accel%% *}"
bare_boot; sleep 5
echo "memory vm=bare-trivial-init guest_mib=$MEMORY_MIB qemu_pss_mib=$(( $(pss_kib "$bare_pid") / 1024 )) qemu_rss_mib=$(( $(rss_kib "$bare_pid") / 1024 )) $(pss_split "$bare_pid" "$MEMORY_MIB")"
bare_stop

# ---------------------------------------------------------------- cp of a running VM with 1 GiB in /data
fill_data() { in_vm "$1" 'dd if=/dev/urandom of=/data/blob bs=1M count=1024 2>/dev/null && sync && du -m /data/blob'; }
# The reference: the host's own cp of a 1 GiB file on the filesystem that holds the VMs' disks.
host_cp_1gib() {
  dd if=/dev/urandom of="$work/blob" bs=1M count=1024 2>/dev/null; sync
  local t0 t1; t0=$(now); cp "$work/blob" "$work/blob.copy"; sync; t1=$(now)
  rm -f "$work/blob" "$work/blob.copy"
  secs "$t0" "$t1"
}
if [ -z "${SKIP_CP:-}" ]; then
  in_vm idle 'sudo chown "$(id -u)" /data' >/dev/null 2>&1 || true
  fill_data idle >/dev/null
  t0=$(now)
  if out=$(control cp idle idle-copy --json 2>&1); then
    t1=$(now)
    copied=$(in_vm idle-copy 'du -m /data/blob | cut -f1')
    echo "cp runtime=microvm running=yes data_mib=1024 copy_has_mib=$copied warren_cp_s=$(secs "$t0" "$t1") host_cp_1gib_s=$(host_cp_1gib)"
    control rm idle-copy --json >/dev/null || true
  else
    echo "cp runtime=microvm running=yes result=failed message=\"$(echo "$out" | tr '\n' ' ' | cut -c1-160)\""
  fi
fi
control rm idle --json >/dev/null || true
kill "$microvm_daemon"; wait "$microvm_daemon" 2>/dev/null || true

# ---------------------------------------------------------------- Docker runtime: warren vs docker run
if [ -n "${SKIP_DOCKER:-}" ]; then echo "# done: $(date -u +%FT%TZ) load: $(cut -d' ' -f1-3 /proc/loadavg)"; exit 0; fi
start_daemon "$data_docker" docker
warren_boot dwarm --image="$BOOT_IMAGE" >/dev/null
control rm dwarm --json >/dev/null
agent=(); sshok=(); barev=()
for r in $(seq 1 "$ROUNDS"); do
  read -r a s < <(warren_boot "d$r" --image="$BOOT_IMAGE"); [ -n "${s:-}" ] || exit 1
  control rm "d$r" --json >/dev/null
  t0=$(now); docker run --rm --network none "$BOOT_IMAGE" true; b=$(secs "$t0" "$(now)")
  agent+=("$a"); sshok+=("$s"); barev+=("$b")
  echo "docker round=$r warren_agent_ready_s=$a warren_ssh_true_s=$s docker_run_true_s=$b load=$(cut -d' ' -f1 /proc/loadavg)"
done
ma=$(median "${agent[@]}"); ms=$(median "${sshok[@]}"); mb=$(median "${barev[@]}")
echo "docker median warren_agent_ready_s=$ma warren_ssh_true_s=$ms docker_run_true_s=$mb ratio_agent=$(python3 -c "print(f'{$ma/$mb:.2f}')") ratio_ssh=$(python3 -c "print(f'{$ms/$mb:.2f}')")"

if [ -z "${SKIP_CP:-}" ]; then
  warren_boot dsrc --image="$BOOT_IMAGE" >/dev/null
  fill_data dsrc >/dev/null
  t0=$(now); control cp dsrc dsrc-copy --json >"$work/cp.json"; t1=$(now)
  copied=$(in_vm dsrc-copy 'du -m /data/blob | cut -f1')
  echo "cp runtime=docker running=yes data_mib=1024 copy_has_mib=$copied warren_cp_s=$(secs "$t0" "$t1") host_cp_1gib_s=$(host_cp_1gib)"
  control rm dsrc-copy --json >/dev/null || true
  control rm dsrc --json >/dev/null || true
fi
echo "# done: $(date -u +%FT%TZ) load: $(cut -d' ' -f1-3 /proc/loadavg)"
