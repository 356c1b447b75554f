#!/usr/bin/env bash
# Builds what VMs need locally (no image registry is reachable from here):
#   1. the guest agent, a static NativeAOT executable, at var/agent/warren-agent
#      (republished only when src/Warren.Agent changed; stamp beside it);
#   2. warren/busybox:1, FROM scratch with busybox-static and its applet links (no libc);
#   3. the microVM kernel, initramfs and module disk (scripts/build-vm-kernel.sh, var/vm-kernel/);
#   4. warren/default:1, a Debian bookworm userland made with debootstrap from the
#      apt mirror configured on this host (git included: the GitHub integration's clone/push), plus a login user
#      `warren` (uid 1000, passwordless sudo). Rebuilt when its recipe (label org.warren.recipe) changes.
#   5. warren/dind:1, Debian 13 (trixie) with Docker Engine (docker.io), Compose v2 (docker-compose), iptables,
#      kmod and the same login user: the default image under the microVM runtime ("Pattern B": docker and
#      docker compose inside a VM, which needs a real VM's kernel). Its command starts dockerd. Rebuilt when its
#      recipe (label org.warren.recipe) changes.
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
default_pkgs=bash,coreutils,sudo,ca-certificates,curl,less,vim-tiny,openssh-sftp-server,procps,passwd,git
default_recipe=$( { echo "bookworm $default_pkgs"; sed -n '/^# -* 4\. default image/,/^# -* 5\. dind image/p' "$root_dir/scripts/build-images.sh"; } | sha256sum | cut -c1-16)
if [ "${WARREN_SKIP_DEFAULT_IMAGE:-}" = 1 ]; then
  log "skipping $default_image (WARREN_SKIP_DEFAULT_IMAGE=1)"
elif [ "$(docker image inspect -f '{{index .Config.Labels "org.warren.recipe"}}' "$default_image" 2>/dev/null)" = "$default_recipe" ]; then
  log "$default_image present (recipe $default_recipe)"
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
  timeout 1800 debootstrap --variant=minbase --include="$default_pkgs" bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
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
    --change 'LABEL org.opencontainers.image.title=warren-default' \
    --change "LABEL org.warren.recipe=$default_recipe" - "$default_image" >/dev/null
  rm -rf "$rootfs" "$rootfs.log"
  trap - EXIT
  log "$default_image built in $(( $(date +%s) - start ))s"
fi

# ---------------------------------------------------------------- 5. dind image (default under the microVM runtime)
# Debian 13 (trixie): its docker-compose is Compose v2 (the `docker compose` CLI plugin); bookworm's is the old
# Python docker-compose 1.x. A label holds the recipe's hash, so a changed recipe (or an older warren/dind:1 built
# FROM warren/default:1) is rebuilt, and an unchanged one never is.
dind_image=warren/dind:1
dind_suite=trixie
dind_pkgs=bash,coreutils,sudo,ca-certificates,curl,less,vim-tiny,openssh-sftp-server,procps,passwd,git,iproute2,docker.io,docker-cli,docker-compose,iptables,kmod,xz-utils
dind_recipe=$( { echo "$dind_suite $dind_pkgs"; sed -n '/^# -* 5\. dind image/,$p' "$root_dir/scripts/build-images.sh"; cat images/dind/*; } | sha256sum | cut -c1-16)
if [ "${WARREN_SKIP_DIND_IMAGE:-}" = 1 ] || [ "${WARREN_SKIP_DEFAULT_IMAGE:-}" = 1 ]; then
  log "skipping $dind_image"
elif [ "$(docker image inspect -f '{{index .Config.Labels "org.warren.recipe"}}' "$dind_image" 2>/dev/null)" = "$dind_recipe" ]; then
  log "$dind_image present (recipe $dind_recipe)"
else
  command -v debootstrap >/dev/null || { log "debootstrap missing (run scripts/prereqs.sh)"; exit 1; }
  mirror=$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -1 || true)
  [ -n "$mirror" ] || mirror=$(awk '$1=="deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  log "building $dind_image: debootstrap $dind_suite + docker.io + docker-compose from $mirror (takes a few minutes)"
  start=$(date +%s)
  rootfs=$(mktemp -d /var/tmp/warren-dind.XXXXXX)
  # debootstrap mounts /proc and /sys in the target: a run cut short must not leave rm walking into them.
  trap 'umount -l "$rootfs/proc" "$rootfs/sys" 2>/dev/null; rm -rf --one-file-system "$rootfs" "$rootfs.log"' EXIT
  timeout 1800 debootstrap --variant=minbase --include="$dind_pkgs" "$dind_suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
    || { tail -20 "$rootfs.log" >&2; log "debootstrap $dind_suite failed"; exit 1; }
  for f in usr/bin/docker usr/sbin/dockerd usr/libexec/docker/cli-plugins/docker-compose usr/bin/sudo; do
    [ -x "$rootfs/$f" ] || { log "$dind_image: /$f missing after debootstrap"; exit 1; }
  done
  # The login user: passwordless sudo (Pattern B runs `sudo docker ...`) and the docker group (plain `docker ps`).
  chroot "$rootfs" /usr/sbin/useradd --create-home --uid 1000 --user-group --groups docker --shell /bin/bash warren
  printf 'warren ALL=(ALL) NOPASSWD:ALL\n' > "$rootfs/etc/sudoers.d/warren"
  chmod 0440 "$rootfs/etc/sudoers.d/warren"
  install -m 0755 images/dind/warren-dockerd "$rootfs/usr/local/sbin/warren-dockerd"
  mkdir -p "$rootfs/data"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log "$rootfs"/tmp/*
  : > "$rootfs/etc/hostname"
  tar -C "$rootfs" --numeric-owner -cf - . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'USER warren' --change 'WORKDIR /home/warren' \
    --change 'CMD ["/usr/local/sbin/warren-dockerd"]' \
    --change 'LABEL org.opencontainers.image.title=warren-dind' \
    --change "LABEL org.warren.recipe=$dind_recipe" - "$dind_image" >/dev/null
  rm -rf "$rootfs" "$rootfs.log"
  trap - EXIT
  log "$dind_image built in $(( $(date +%s) - start ))s ($(docker image inspect -f '{{.Size}}' "$dind_image" | awk '{printf "%d MB", $1/1e6}'))"
fi
