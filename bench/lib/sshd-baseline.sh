# Sourced by the bench scripts: the OpenSSH sshd baseline on 127.0.0.1, from its own temp config.
# Needs: $work (temp dir with authorized_keys), the pids array, free_port and wait_port.
# Sets: sshd_port, sshd_pid (the listener process).
start_baseline_sshd() {
  sshd_port=$(free_port)
  mkdir -p /run/sshd
  ssh-keygen -q -t ed25519 -N '' -f "$work/sshd_host_ed25519" -C bench-host
  cat > "$work/sshd_config" <<CONF
HostKey $work/sshd_host_ed25519
AuthorizedKeysFile $work/authorized_keys
PermitRootLogin yes
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PidFile $work/sshd.pid
ListenAddress 127.0.0.1
MaxStartups 1000
MaxSessions 10
PrintMotd no
PrintLastLog no
CONF
  # root's login shell here is bash, whose ~/.bashrc runs `pyenv init` (about 1 s of CPU and ~100 processes
  # per session): that would measure the rc file, not sshd. So sshd runs in a private mount namespace where
  # /etc/passwd gives root /bin/sh (dash); nothing changes outside that namespace (propagation is private).
  sed 's#^\(root:[^:]*:0:0:[^:]*:[^:]*\):.*$#\1:/bin/sh#' /etc/passwd > "$work/passwd"
  unshare -m sh -c 'mount --bind "$1" /etc/passwd && exec /usr/sbin/sshd -D -f "$2" -p "$3" -E "$4"' \
    sh "$work/passwd" "$work/sshd_config" "$sshd_port" "$work/sshd.log" &
  sshd_pid=$!; pids+=("$sshd_pid")  # unshare and sh exec in place: this is the sshd listener
  wait_port "$sshd_port"
}
