#!/bin/bash
# Boot a throw-away Debian machine for the end-to-end test: systemd-nspawn over an overlay whose
# lower layer is ROOT (a minimal Debian root from rootfs.sh) and whose upper layer is a tmpfs, so
# that release's systemd runs as PID 1 and every write vanishes at the end.
#
#   nspawn.sh WORKDIR ROOT FILE...     (root)
#
# Copies FILE... into the container's /root/, boots it, and once the system is up writes the
# container's PID 1 (as seen from here) to WORKDIR/cpid; the caller enters it with
# `nsenter -t $(cat WORKDIR/cpid) -a ...`. Keeps the container up until stdin reaches EOF (the
# caller closes it, or dies), then shuts it down and unmounts everything. The console log is
# WORKDIR/nspawn.log, the container's journal is left in WORKDIR/journal. If the container cannot
# boot it writes the reason to WORKDIR/boot-failed and exits 1.
set -euo pipefail
if [ -z "${E2E_IN_NS:-}" ]; then              # private mount namespace: our mounts die with us
  E2E_IN_NS=1 exec unshare -m --propagation private "$0" "$@"
fi
WORKDIR=$1; ROOT=$2; shift 2
# slow or noisy at boot, unrelated to us (apt-daily would want the network)
MASK=${MASK:-systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer}
M=$WORKDIR/ovl/merged; NS=; CPID=

cleanup() {
  if [ -n "$NS" ]; then kill -TERM "$NS" 2>/dev/null || true; wait "$NS" 2>/dev/null || true; fi
  cp -r "$WORKDIR/ovl/upper/var/log/journal" "$WORKDIR/journal" 2>/dev/null || true
  umount "$M" "$WORKDIR/ovl" /run/systemd/nspawn 2>/dev/null || true
  # nspawn leaves empty payload/ and supervisor/ cgroups below ours (rmdir only removes empty dirs)
  for spec in name=systemd:/sys/fs/cgroup/systemd :/sys/fs/cgroup/unified :/sys/fs/cgroup; do
    b=${spec#*:}$(awk -F: -v c="${spec%%:*}" '$2==c{print $3}' /proc/self/cgroup | sed 's#/$##')
    rmdir "$b/payload/init.scope" "$b/payload" "$b/supervisor" 2>/dev/null || true
  done
}
trap cleanup EXIT
boot_failed() { echo "$*" >"$WORKDIR/boot-failed"; exit 1; }

mkdir -p "$WORKDIR/ovl"; mount -t tmpfs -o size=4G tmpfs "$WORKDIR/ovl"
mkdir -p "$WORKDIR/ovl/upper" "$WORKDIR/ovl/wd" "$M"
mount -t overlay overlay -o "lowerdir=$ROOT,upperdir=$WORKDIR/ovl/upper,workdir=$WORKDIR/ovl/wd" "$M"
# else nspawn leaves its files on the host's (on-disk) /run
mkdir -p /run/systemd/nspawn && mount -t tmpfs tmpfs /run/systemd/nspawn
cp "$@" "$M/root/"
mkdir -p "$M/var/log/journal"       # persistent journal, readable after shutdown

masks=(); for u in $MASK; do masks+=("systemd.mask=$u"); done
# --register=no --keep-unit: no host bus; --link-journal=no: the machine-id is the host's;
# --private-network: only lo, so nothing leaves and no port clashes with the host
systemd-nspawn -D "$M" -M ssdaq-e2e --register=no --keep-unit --link-journal=no \
  --private-network --console=pipe -b "${masks[@]}" </dev/null >"$WORKDIR/nspawn.log" 2>&1 &
NS=$!
# Just after the start nspawn's child can still be in the host's namespaces, and nsenter into it
# would act on the host: accept only a child named systemd in another pid namespace.
for _ in $(seq 200); do
  for p in $(ps -o pid= --ppid "$NS" 2>/dev/null); do
    if [ "$(cat "/proc/$p/comm" 2>/dev/null)" = systemd ] &&
       [ "$(readlink "/proc/$p/ns/pid" 2>/dev/null)" != "$(readlink /proc/self/ns/pid)" ]; then
      CPID=$p
    fi
  done
  [ -n "$CPID" ] && break
  kill -0 "$NS" 2>/dev/null || boot_failed "systemd-nspawn exited: $(tail -5 "$WORKDIR/nspawn.log")"
  sleep 0.05
done
[ -n "$CPID" ] || boot_failed "no systemd PID 1 after 10 s: $(tail -5 "$WORKDIR/nspawn.log")"
c() { nsenter -t "$CPID" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }
for _ in $(seq 200); do c test -S /run/systemd/private && break; sleep 0.05; done
state=$(c timeout 60 systemctl is-system-running --wait || true)
failed=$(c systemctl --failed --plain --no-legend | paste -sd' ')
[ "$state" = running ] || boot_failed "boot state '$state'; failed units: $failed"
echo "$CPID" >"$WORKDIR/cpid.tmp" && mv "$WORKDIR/cpid.tmp" "$WORKDIR/cpid"

cat >/dev/null                      # hold until the caller closes our stdin
kill -TERM "$NS"                    # SIGTERM to nspawn halts the container cleanly
wait "$NS" || true
NS=
