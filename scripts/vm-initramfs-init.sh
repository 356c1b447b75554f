#!/bin/busybox sh
# /init of a Warren microVM's initramfs (built by scripts/build-vm-kernel.sh). Debian's cloud kernel has
# virtio as modules, so this loads them, then mounts the VM's disks by label (device order never matters):
#   LABEL=rootfs       the VM's root filesystem (qcow2 overlay on the image's base)       -> /
#   LABEL=data         the VM's /data disk                                                -> /data
#   LABEL=warren-seed  the per-VM seed (agent, token, image config), read-only           -> /.warren
#   LABEL=kmods        the kernel's remaining modules, shared, read-only                  -> /lib/modules
# configures lo and eth0 from `warren.net=ADDRESS/PREFIX,GATEWAY,DNS` on the kernel command line, and
# switch_roots to the agent as PID 1 (`/.warren/agent init --vm`). Any failure powers the VM off, so the
# host sees QEMU exit instead of a hung guest.
/bin/busybox --install -s /bin
export PATH=/bin

fail() {
  echo "warren-initramfs: $*" >&2
  sync
  poweroff -f
  sleep 10
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# Boot marks in the kernel log (timestamped like its own lines; `dmesg` in the VM shows them beside the agent's).
mark() { echo "<6>warren-initramfs: $*" > /dev/kmsg 2>/dev/null; }
mark started

while read -r module; do
  insmod "/lib/modules/$module" || fail "insmod $module failed"
done < /modules.list
mark modules loaded

# virtio-blk devices appear as their drivers probe; wait briefly for the labels.
find_label() {
  i=0
  while [ $i -lt 50 ]; do
    dev=$(findfs "LABEL=$1" 2>/dev/null) && { echo "$dev"; return 0; }
    sleep 0.1
    i=$((i + 1))
  done
  return 1
}

root=$(find_label rootfs) || fail "no disk labelled rootfs"
mount -t ext4 -o rw,noatime "$root" /newroot || fail "cannot mount $root"
for label_dir in data:/data warren-seed:/.warren kmods:/lib/modules; do
  label=${label_dir%%:*}
  dir=/newroot${label_dir#*:}
  dev=$(find_label "$label") || { [ "$label" = kmods ] && continue; fail "no disk labelled $label"; }
  mkdir -p "$dir" 2>/dev/null
  case "$label" in
    data) mount -t ext4 -o rw,noatime "$dev" "$dir" || fail "cannot mount $label" ;;
    *) mount -t ext4 -o ro,noatime "$dev" "$dir" || fail "cannot mount $label" ;;
  esac
done

mark disks mounted
# Network: static, as the host's runtime chose it.
ip link set lo up
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    warren.net=*)
      spec=${arg#warren.net=}
      address=${spec%%,*}; rest=${spec#*,}
      gateway=${rest%%,*}; dns=${rest#*,}
      ip link set eth0 up && ip addr add "$address" dev eth0 && ip route add default via "$gateway" \
        || echo "warren-initramfs: network setup failed" >&2
      # A symlink (systemd-resolved's stub) is left alone: the name is the image's to manage.
      if [ -n "$dns" ] && [ ! -L /newroot/etc/resolv.conf ] && [ -d /newroot/etc ]; then
        echo "nameserver $dns" > /newroot/etc/resolv.conf
      fi
      ;;
  esac
done

[ -x /newroot/.warren/agent ] || fail "no agent on the seed disk"
mark network configured
mkdir -p /newroot/dev
mount --move /dev /newroot/dev
umount /proc /sys
exec switch_root /newroot /.warren/agent init --vm
