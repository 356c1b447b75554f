#!/usr/bin/env bash
# Builds what a Warren microVM boots (src/Warren.Runtime.MicroVm), cached under var/vm-kernel/<abi>/:
#   vmlinuz            Debian's linux-image-<abi>-cloud-amd64 kernel, unchanged;
#   initramfs.cpio.gz  busybox-static + the virtio modules the cloud kernel builds as modules (disks, console,
#                      network, rng, and the balloon that lowers a running VM's memory), and /init
#                      (scripts/vm-initramfs-init.sh): loads them, mounts the VM's disks by label, configures
#                      the network from the kernel command line, and switch_roots to the guest agent;
#   kmods.img          every other module of the same kernel (overlay, bridge, nf_* for dockerd in the VM),
#                      ext4 labelled "kmods", attached read-only to every VM and mounted at /lib/modules.
# The three always come from one .deb. var/vm-kernel/current names the directory the runtime uses.
# Idempotent (a stamp holds the inputs' hash), serialised with flock; installs what it needs.
#
# Environment:
#   WARREN_VM_KERNEL_OUT=DIR   build somewhere else (default var/vm-kernel)
set -euo pipefail
cd "$(dirname "$0")/.."
root_dir=$(pwd)
out_root=${WARREN_VM_KERNEL_OUT:-$root_dir/var/vm-kernel}
init_script=$root_dir/scripts/vm-initramfs-init.sh

log() { echo "build-vm-kernel: $*" >&2; }

mkdir -p "$out_root"
exec 9>"$out_root/.lock"
flock 9

# Tools: apt-get download/dpkg-deb come with Debian; the rest may not be installed.
need=()
command -v depmod >/dev/null || need+=(kmod)
command -v cpio >/dev/null || need+=(cpio)
command -v mke2fs >/dev/null || need+=(e2fsprogs)
[ -x /bin/busybox ] && file -L /bin/busybox 2>/dev/null | grep -q 'statically linked' || dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The kernel package the cloud metapackage points at (the ABI moves with Debian's security updates).
pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9].*-cloud-amd64\)$/\1/p' | head -1)
if [ -z "$pkg" ]; then
  apt-get update -qq >/dev/null
  pkg=$(apt-cache depends linux-image-cloud-amd64 | sed -n 's/^ *Depends: \(linux-image-[0-9].*-cloud-amd64\)$/\1/p' | head -1)
fi
[ -n "$pkg" ] || { log "cannot resolve linux-image-cloud-amd64 to a kernel package"; exit 1; }
abi=${pkg#linux-image-}
out=$out_root/$abi
version=$(apt-cache policy "$pkg" | sed -n 's/^ *Candidate: //p')
want_hash=$( { echo "$pkg $version"; cat "$0" "$init_script"; } | sha256sum | cut -d' ' -f1)

if [ -f "$out/stamp" ] && [ "$(cat "$out/stamp")" = "$want_hash" ] && [ -f "$out/vmlinuz" ] && [ -f "$out/initramfs.cpio.gz" ] && [ -f "$out/kmods.img" ]; then
  log "$abi up to date ($out)"
else
  log "building $abi ($pkg $version)"
  start=$(date +%s)
  work=$(mktemp -d /var/tmp/warren-vm-kernel.XXXXXX)
  trap 'rm -rf "$work"' EXIT
  # As root into a private directory: the _apt sandbox user could not write there.
  (cd "$work" && apt-get download -qq -o APT::Sandbox::User=root "$pkg" >/dev/null)
  dpkg-deb -x "$work"/*.deb "$work/kernel"
  depmod -b "$work/kernel" "$abi"
  moddir=$work/kernel/lib/modules/$abi

  # initramfs: busybox + the modules needed to find the disks, the agent's port, the network and the balloon.
  ird=$work/initramfs
  mkdir -p "$ird"/{bin,dev,proc,sys,newroot,lib/modules}
  cp /bin/busybox "$ird/bin/busybox"
  install -m 0755 "$init_script" "$ird/init"
  : > "$ird/modules.list"
  # --show-depends lists "insmod PATH" lines in load order, dependencies first.
  for m in virtio_mmio virtio_blk virtio_console virtio_net virtio_rng virtio_balloon; do
    modprobe -d "$work/kernel" -S "$abi" --show-depends "$m" | sed -n 's/^insmod \([^ ]*\).*/\1/p'
  done | awk '!seen[$0]++' | while read -r path; do
    rel=${path#"$work/kernel"/lib/modules/$abi/}
    name=$(basename "$rel")
    case "$name" in
      *.ko) cp "$path" "$ird/lib/modules/$name" ;;
      *.ko.xz) xz -dc "$path" > "$ird/lib/modules/${name%.xz}"; name=${name%.xz} ;;
      *.ko.zst) zstd -qdc "$path" > "$ird/lib/modules/${name%.zst}"; name=${name%.zst} ;;
      *) log "unexpected module file $name"; exit 1 ;;
    esac
    echo "$name" >> "$ird/modules.list"
  done
  # Fixed timestamps and owners: the same inputs give the same archive.
  find "$ird" -exec touch -h -d @0 {} +
  (cd "$ird" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc -R 0:0 --quiet) | gzip -9n > "$work/initramfs.cpio.gz"

  # kmods.img: the whole module tree, read-only in every VM (sized to fit with a little room for ext4's own data).
  kb=$(du -sk "$work/kernel/lib/modules" | cut -f1)
  size_kb=$(( kb + kb / 5 + 16384 ))
  E2FSPROGS_FAKE_TIME=1 mke2fs -q -t ext4 -L kmods -U clear -E root_owner=0:0 -O ^has_journal -d "$work/kernel/lib/modules" "$work/kmods.img" "${size_kb}K" >/dev/null

  mkdir -p "$out.tmp"
  cp "$work/kernel/boot/vmlinuz-$abi" "$out.tmp/vmlinuz"
  cp "$work/initramfs.cpio.gz" "$work/kmods.img" "$out.tmp/"
  echo "$want_hash" > "$out.tmp/stamp"
  rm -rf "$out"
  mv "$out.tmp" "$out"
  rm -rf "$work"
  trap - EXIT
  log "$abi built in $(( $(date +%s) - start ))s ($(du -sh "$out" | cut -f1))"
fi
ln -sfn "$abi" "$out_root/current"
