#!/bin/bash
# A minimal Debian root for the end-to-end container, cached under build/e2e-roots/:
#
#   rootfs.sh RELEASE DEB...      (root; prints the root's path on its last line)
#
# The root is `debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus RELEASE` from
# Debian's mirror, plus what the DEBs' Depends: and Recommends: name (their own Recommends left
# out, as `apt-get install --no-install-recommends` would), installed by apt in a chroot: the
# booted container has no network, so the packages must be there before it boots, and nothing
# else is, so a missing Depends: fails the test. The DEBs themselves are not installed.
#
# Both layers are cached: the downloaded .debs in build/e2e-roots/RELEASE/archives, the root in
# build/e2e-roots/RELEASE/root-HASH (HASH: of the dependency lists). A root whose build did not
# finish has no .complete and is rebuilt.
set -euo pipefail
if [ -z "${ROOTFS_IN_NS:-}" ]; then            # private mount namespace: our mounts die with us
  ROOTFS_IN_NS=1 exec unshare -m --propagation private "$0" "$@"
fi
RELEASE=$1; shift
MIRROR=${SSDAQ_E2E_MIRROR:-http://deb.debian.org/debian}
CACHE=$(cd "$(dirname "$0")/../.." && pwd)/build/e2e-roots/$RELEASE
T0=$(date +%s%N); el() { printf 'rootfs.sh %s: [%5.1f s] %s\n' "$RELEASE" \
  "$(( ($(date +%s%N) - T0) / 100000000 ))e-1" "$*" >&2; }

# "Depends, Recommends" of every DEB, one dependency group per line, for apt-get satisfy
needs=$(for deb in "$@"; do
  for field in Depends Recommends; do dpkg-deb -f "$deb" "$field"; done
done | tr ',' '\n' | sed 's/^ *//; s/ *$//' | grep -v '^$' | sort -u)
key=$(printf '%s\n' "$needs" | sha256sum | cut -c1-12)
ROOT=$CACHE/root-$key
if [ -e "$ROOT/.complete" ]; then echo "$ROOT"; exit 0; fi

mkdir -p "$CACHE/archives/partial"
rm -rf "$CACHE"/root-* "$CACHE/bootstrap"      # stale roots and an interrupted build
el "debootstrap --variant=minbase $RELEASE from $MIRROR"
debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus --cache-dir="$CACHE/archives" \
  "$RELEASE" "$CACHE/bootstrap" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 ||
  { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
el "debootstrap done ($(du -sm "$CACHE/bootstrap" | cut -f1) MB)"

R=$CACHE/bootstrap
mount --bind /proc "$R/proc"; mount --bind /dev "$R/dev"; mount --bind /sys "$R/sys"
mount --bind "$CACHE/archives" "$R/var/cache/apt/archives"
cp /etc/resolv.conf "$R/etc/resolv.conf"
# no daemon may start in the chroot (there is no systemd running there to own it); no fsync per
# file while unpacking (a root that does not finish is rebuilt anyway)
printf '#!/bin/sh\nexit 101\n' >"$R/usr/sbin/policy-rc.d"; chmod 755 "$R/usr/sbin/policy-rc.d"
echo force-unsafe-io >"$R/etc/dpkg/dpkg.cfg.d/ssdaq-e2e-unsafe-io"
ch() { chroot "$R" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
  DEBIAN_FRONTEND=noninteractive "$@"; }
ch apt-get update -q >"$CACHE/apt.log" 2>&1 || { tail -20 "$CACHE/apt.log" >&2; exit 1; }
mapfile -t groups <<<"$needs"
ch apt-get satisfy -y -q --no-install-recommends "${groups[@]}" >>"$CACHE/apt.log" 2>&1 ||
  { tail -20 "$CACHE/apt.log" >&2; exit 1; }
rm -f "$R/usr/sbin/policy-rc.d" "$R/etc/dpkg/dpkg.cfg.d/ssdaq-e2e-unsafe-io"
umount "$R/var/cache/apt/archives" "$R/sys" "$R/dev" "$R/proc"
el "dependencies installed: $(ch dpkg-query -W -f='.\n' | wc -l) packages," \
  "$(du -sm "$R" | cut -f1) MB"
touch "$R/.complete"
mv "$R" "$ROOT"
echo "$ROOT"
