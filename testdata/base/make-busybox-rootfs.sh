#!/usr/bin/env bash
# Makes a small busybox root filesystem tar from Debian's busybox-static
# package: /bin/busybox, a link for every applet, /etc/passwd and /etc/group,
# and the usual empty directories. The tar is deterministic (sorted, numeric
# root owners, mtime 0), so the image imported from it has a stable digest.
#
#   testdata/base/make-busybox-rootfs.sh OUT.tar
set -euo pipefail
out=${1:?usage: make-busybox-rootfs.sh OUT.tar}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

busybox=/bin/busybox
if ! { [ -x "$busybox" ] && dpkg -s busybox-static >/dev/null 2>&1; }; then
  # Not installed: fetch the package itself and unpack it, without installing.
  chmod 0777 "$work"
  (cd "$work" && apt-get download busybox-static >/dev/null 2>&1)
  dpkg-deb -x "$work"/busybox-static_*.deb "$work/pkg"
  busybox="$work/pkg/bin/busybox"
fi

root="$work/rootfs"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,root,home,tmp,proc,sys,dev,var/tmp,var/log,run}
install -m 0755 "$busybox" "$root/bin/busybox"
# Every applet as a symlink at the path busybox expects it.
"$busybox" --list-full | while read -r applet; do
  [ "$applet" = bin/busybox ] && continue
  mkdir -p "$root/$(dirname "$applet")"
  ln -sf /bin/busybox "$root/$applet"
done
chmod 1777 "$root/tmp" "$root/var/tmp"
chmod 0700 "$root/root"
cat > "$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
PASSWD
cat > "$root/etc/group" <<'GROUP'
root:x:0:
daemon:x:1:
bin:x:2:
tty:x:5:
www-data:x:33:
users:x:100:
nogroup:x:65534:
GROUP
echo "kiln-busybox" > "$root/etc/hostname"
tar --create --file "$out" --directory "$root" --sort=name --owner=0 --group=0 \
  --numeric-owner --mtime=@0 --format=posix --pax-option=delete=atime,delete=ctime .
echo "$out: $(tar -tf "$out" | wc -l) entries, $(stat -c %s "$out") bytes" >&2
