#!/usr/bin/env bash
# Builds what VMs need locally (no image registry is reachable from here):
#   1. the guest agent, a static NativeAOT executable, at var/agent/warren-agent
#      (republished only when src/Warren.Agent changed; stamp beside it);
#   2. warren/busybox:1, FROM scratch with busybox-static and its applet links (no libc);
#   3. the microVM kernel, initramfs and module disk (scripts/build-vm-kernel.sh, var/vm-kernel/);
#   4. warren/default:1, a Debian bookworm userland made with debootstrap from the
#      apt mirror configured on this host, plus a login user `warren` (uid 1000,
#      passwordless sudo). Skipped when the image exists.
#   5. warren/dind:1, warren/default:1 plus docker.io, iptables and kmod: the image the microVM tests run
#      dockerd in ("Pattern B": docker inside a VM, which needs a real VM's kernel). Skipped when present.
# Idempotent, and serialised with flock so parallel ./test.sh runs don't race.
#
# Environment:
#   WARREN_SKIP_DEFAULT_IMAGE=1   skip the (slow, network-bound) default image
#   WARREN_SKIP_VM_KERNEL=1       skip the microVM kernel (scripts/build-vm-kernel.sh)
#   WARREN_SKIP_DIND_IMAGE=1      skip warren/dind:1
#   WARREN_AGENT_OUT=DIR          publish the agent somewhere else (default var/agent)
set -euo pipefail
cd "$(dirname "$0")/.."
root_dir=$(pwd)

mkdir -p var
exec 9>var/.build-images.lock
flock 9

log() { echo "build-images: $*" >&2; }

# ---------------------------------------------------------------- 1. agent
agent_dir=${WARREN_AGENT_OUT:-$root_dir/var/agent}
agent_bin=$agent_dir/warren-agent
agent_stamp=$agent_dir/warren-agent.sources.sha256
agent_sources_hash() {
  find src/Warren.Agent -type f \( -name '*.cs' -o -name '*.csproj' \) -not -path '*/obj/*' -not -path '*/bin/*' -print0 \
    | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1
}
want_hash=$(agent_sources_hash)
if [ -x "$agent_bin" ] && [ -f "$agent_stamp" ] && [ "$(cat "$agent_stamp")" = "$want_hash" ]; then
  log "agent up to date ($agent_bin)"
else
  log "publishing agent (NativeAOT, static) to $agent_bin"
  start=$(date +%s)
  export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
  pub=$(mktemp -d)
  timeout 1200 dotnet publish src/Warren.Agent/Warren.Agent.csproj -c Release -nologo -v q \
    -r linux-x64 -p:PublishAot=true -p:StaticExecutable=true -p:PositionIndependentExecutable=false \
    -p:InvariantGlobalization=true -o "$pub" >&2
  mkdir -p "$agent_dir"
  install -m 0755 "$pub/warren-agent" "$agent_bin.tmp"
  mv -f "$agent_bin.tmp" "$agent_bin"
  rm -rf "$pub"
  echo "$want_hash" > "$agent_stamp"
  log "agent published in $(( $(date +%s) - start ))s"
fi

command -v docker >/dev/null || { log "docker CLI missing (run scripts/prereqs.sh)"; exit 1; }

# ---------------------------------------------------------------- 2. busybox image
busybox_image=warren/busybox:1
if docker image inspect "$busybox_image" >/dev/null 2>&1; then
  log "$busybox_image present"
else
  log "building $busybox_image"
  bb=$(command -v busybox || true)
  [ -n "$bb" ] && file -L "$bb" 2>/dev/null | grep -q 'statically linked' || bb=/bin/busybox
  ctx=$(mktemp -d)
  mkdir -p "$ctx/rootfs/bin" "$ctx/rootfs/etc" "$ctx/rootfs/tmp" "$ctx/rootfs/root" "$ctx/rootfs/home/warren" "$ctx/rootfs/data"
  chmod 1777 "$ctx/rootfs/tmp"
  cp "$bb" "$ctx/rootfs/bin/busybox"
  for applet in $("$ctx/rootfs/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$ctx/rootfs/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nwarren:x:1000:1000:warren:/home/warren:/bin/sh\n' > "$ctx/rootfs/etc/passwd"
  printf 'root:x:0:\nwarren:x:1000:\n' > "$ctx/rootfs/etc/group"
  chown 1000:1000 "$ctx/rootfs/home/warren"
  tar -C "$ctx/rootfs" --numeric-owner -cf - . | docker import \
    --change 'ENV PATH=/bin' --change 'CMD ["/bin/sh"]' \
    --change 'LABEL org.opencontainers.image.title=warren-busybox' - "$busybox_image" >/dev/null
  rm -rf "$ctx"
fi

# ---------------------------------------------------------------- 3. microVM kernel
if [ "${WARREN_SKIP_VM_KERNEL:-}" = 1 ]; then
  log "skipping the microVM kernel (WARREN_SKIP_VM_KERNEL=1)"
else
  bash scripts/build-vm-kernel.sh
fi

# ---------------------------------------------------------------- 4. default image
default_image=warren/default:1
if [ "${WARREN_SKIP_DEFAULT_IMAGE:-}" = 1 ]; then
  log "skipping $default_image (WARREN_SKIP_DEFAULT_IMAGE=1)"
elif docker image inspect "$default_image" >/dev/null 2>&1; then
  log "$default_image present"
else
  command -v debootstrap >/dev/null || { log "debootstrap missing (run scripts/prereqs.sh)"; exit 1; }
  # The first non-security URI of the host's deb822 sources (or sources.list), else Debian's own.
  mirror=$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -1 || true)
  [ -n "$mirror" ] || mirror=$(awk '$1=="deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  log "building $default_image with debootstrap from $mirror (takes a few minutes)"
  start=$(date +%s)
  rootfs=$(mktemp -d /var/tmp/warren-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
  pkgs=bash,coreutils,sudo,ca-certificates,curl,less,vim-tiny,openssh-sftp-server,procps,passwd
  timeout 1800 debootstrap --variant=minbase --include="$pkgs" bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
    || { log "debootstrap failed; see $rootfs.log"; exit 1; }
  # Login user with passwordless sudo.
  chroot "$rootfs" /usr/sbin/useradd --create-home --uid 1000 --user-group --shell /bin/bash warren
  printf 'warren ALL=(ALL) NOPASSWD:ALL\n' > "$rootfs/etc/sudoers.d/warren"
  chmod 0440 "$rootfs/etc/sudoers.d/warren"
  mkdir -p "$rootfs/data"
  # Keep the image small: no package caches or lists (apt-get update refills them).
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log "$rootfs"/tmp/*
  : > "$rootfs/etc/hostname"
  tar -C "$rootfs" --numeric-owner -cf - . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'USER warren' --change 'WORKDIR /home/warren' \
    --change 'CMD ["/bin/bash"]' \
    --change 'LABEL org.opencontainers.image.title=warren-default' - "$default_image" >/dev/null
  rm -rf "$rootfs" "$rootfs.log"
  trap - EXIT
  log "$default_image built in $(( $(date +%s) - start ))s"
fi

# ---------------------------------------------------------------- 5. dind image (microVM tests)
dind_image=warren/dind:1
if [ "${WARREN_SKIP_DIND_IMAGE:-}" = 1 ] || [ "${WARREN_SKIP_DEFAULT_IMAGE:-}" = 1 ]; then
  log "skipping $dind_image"
elif docker image inspect "$dind_image" >/dev/null 2>&1; then
  log "$dind_image present"
else
  log "building $dind_image (apt-get install docker.io in $default_image)"
  start=$(date +%s)
  ctx=$(mktemp -d)
  cat > "$ctx/Dockerfile" <<'DOCKERFILE'
FROM warren/default:1
USER root
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io iptables kmod >/dev/null \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb
LABEL org.opencontainers.image.title=warren-dind
DOCKERFILE
  # The legacy builder's deprecation notice goes to stderr on every build: shown only when the build fails.
  if ! timeout 1200 docker build -q -t "$dind_image" "$ctx" >"$ctx/build.log" 2>&1; then
    cat "$ctx/build.log" >&2; rm -rf "$ctx"; log "building $dind_image failed"; exit 1
  fi
  rm -rf "$ctx"
  log "$dind_image built in $(( $(date +%s) - start ))s"
fi
