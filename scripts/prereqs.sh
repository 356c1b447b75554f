#!/usr/bin/env bash
# Installs what Warren needs on a fresh Debian machine and starts dockerd when
# no engine answers. Idempotent: every step checks before it acts.
set -euo pipefail

need_pkgs=()
want() { dpkg -s "$1" >/dev/null 2>&1 || need_pkgs+=("$1"); }

# Runtime: the container engine and a registry for private-image tests.
want docker.io
want docker-registry
want apache2-utils        # htpasswd for the registry's basic auth
# Real clients the tests drive.
want openssh-client
want openssh-server
want dnsutils
want curl
want haproxy
want busybox-static
want debootstrap          # builds the default VM image rootfs (scripts/build-images.sh)
want swaks
want libnet-ssleay-perl    # swaks --tls (STARTTLS tests of the SMTP front door)
want exim4-daemon-light   # a real MTA relaying to the SMTP front door in the inbound mail e2e test
want ssh-audit          # audits the SSH listeners' algorithm profile
want tmux
want iproute2
want git                 # the github integration e2e test: git http-backend (fake GitHub) and the VM's git client
# VM isolation: the daemon's packet-filter table (nft), VM disk images (mke2fs, resize2fs, chattr; losetup and
# mount come with util-linux and mount, present on every Debian).
want nftables
want e2fsprogs
# The microVM runtime (src/Warren.Runtime.MicroVm): QEMU, disk images, and what scripts/build-vm-kernel.sh uses.
want qemu-system-x86
want qemu-utils
want kmod
want cpio
if [ "${WARREN_SKIP_BENCH_PKGS:-}" != 1 ]; then
  want nginx
  want wrk
  want hyperfine
fi
if [ "${WARREN_SKIP_BROWSER:-}" != 1 ]; then
  want chromium
fi

if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "prereqs: installing ${need_pkgs[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  # policy-rc.d keeps package post-install scripts from starting daemons
  # (nginx, haproxy, docker-registry) that would hold ports the tests use.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi

# dockerd: start one in the background when none answers.
if ! docker info >/dev/null 2>&1; then
  echo "prereqs: starting dockerd" >&2
  mkdir -p /var/log
  # setsid: its own session and process group, so a caller's job control (a CI step, a terminal, a
  # tool that kills its job's group when done) never takes the engine down with it.
  setsid nohup dockerd >>/var/log/warren-dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 0.5
  done
  docker info >/dev/null 2>&1 || { echo "prereqs: dockerd did not start; see /var/log/warren-dockerd.log" >&2; exit 1; }
fi

# The microVM runtime runs QEMU as this unprivileged system user (Warren:MicroVm:QemuUser): QEMU opens its disks,
# sockets and tap as root, then drops to it before the guest runs.
if ! id warren-qemu >/dev/null 2>&1; then
  echo "prereqs: creating system user warren-qemu" >&2
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin warren-qemu
fi
