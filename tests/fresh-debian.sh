#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
# The first hour on a stock Debian 12: build a fresh bookworm root with
# mmdebstrap (python3 is /usr/bin/python3, with its PEP 668 marker and no
# headers), clone this checkout into it and run the README's two commands
# there, as root, the way a newcomer would:
#
#     bash demo.sh
#     bash tests/setup-machine.sh && tox [ARGS]
#
# Usage (root): bash tests/fresh-debian.sh [--keep] [ARGS for the inner tox]
# (`tox -e fresh`).  Runs the committed HEAD (git clone).  Exits 0 only if
# both commands did.  About 5 minutes plus one full `tox`.
#
# What such a root needs on these machines besides the packages: this host's
# apt settings (apt.conf.d/99*), pip settings (pip.conf, PIP_* variables, the
# /opt directories they name, read-only) and extra CA certificates.  It is
# entered with unshare --mount + pivot_root, with /proc, /sys and /dev bound
# and a tmpfs on /run: under a plain chroot /proc/self/mountinfo shows host
# paths, and systemd-nspawn would hide the loop devices the tests use.
set -euo pipefail

keep=0
if [ "${1:-}" = --keep ]; then
    keep=1
    shift
fi
repo=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
suite=bookworm

fail() {
    echo "fresh-debian.sh: $*" >&2
    exit 2
}
[ "$(id -u)" = 0 ] || fail "run as root"
for tool in mmdebstrap git unshare pivot_root; do
    command -v "$tool" >/dev/null || fail "$tool is required (apt-get install mmdebstrap git util-linux)"
done
[ -z "$(git -C "$repo" status --porcelain --untracked-files=no)" ] ||
    echo "fresh-debian.sh: uncommitted changes are not part of the run (it clones HEAD)" >&2

# This host's apt sources, whichever format they are in.
sources=()
[ -s /etc/apt/sources.list ] && sources+=(/etc/apt/sources.list)
for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -s "$f" ] && sources+=("$f")
done
[ ${#sources[@]} -gt 0 ] || fail "no apt sources configured on this machine"

work=$(mktemp -d "${TMPDIR:-/var/tmp}/hvdaemons-fresh.XXXXXX")
root=$work/root
cleanup() {
    if [ "$keep" = 1 ]; then
        echo "fresh-debian.sh: the root is kept in $root"
    else
        rm -rf --one-file-system "$work"
    fi
}
trap cleanup EXIT

start=$SECONDS
echo "== fresh-debian.sh: mmdebstrap $suite into $root"
mmdebstrap --quiet --variant=important --include=git,ca-certificates,python3 \
    "$suite" "$root" "${sources[@]}"

# The host's settings that let apt and pip reach their registries here.
for f in /etc/apt/apt.conf.d/99*; do
    [ -e "$f" ] && cp "$f" "$root/etc/apt/apt.conf.d/"
done
[ -e /etc/pip.conf ] && cp /etc/pip.conf "$root/etc/pip.conf"
if [ -e /root/.config/pip/pip.conf ]; then
    mkdir -p "$root/root/.config/pip"
    cp /root/.config/pip/pip.conf "$root/root/.config/pip/pip.conf"
fi
# A Debian machine has /etc/hosts (mmdebstrap copies only resolv.conf and hostname).
[ -e "$root/etc/hosts" ] || cp /etc/hosts "$root/etc/hosts"
if [ -d /usr/local/share/ca-certificates ]; then
    cp -r /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/"
fi
pip_env=()
while IFS= read -r var; do
    pip_env+=("$var")
done < <(env | grep '^PIP_' || true)
opt_dirs=$(
    { cat /etc/pip.conf /root/.config/pip/pip.conf 2>/dev/null || true; printf '%s\n' "${pip_env[@]}"; } |
        grep -o '/opt/[^/[:space:]"'\'',;:]*' | sort -u || true
)

git clone --quiet "$repo" "$root/root/hvdaemons"
echo "== fresh-debian.sh: cloned $(git -C "$root/root/hvdaemons" log -1 --format='%h %s')"

# The newcomer's session: a root shell on the fresh machine, in the checkout.
inner='
set -u
systemd-machine-id-setup >/dev/null
update-ca-certificates >/dev/null 2>&1
cd /root/hvdaemons
echo "== fresh-debian.sh: $(command -v python3) ($(python3 --version)), $(ls /usr/lib/python3*/EXTERNALLY-MANAGED)"
t0=$SECONDS
echo "== fresh-debian.sh: bash demo.sh"
bash demo.sh
demo=$?
t1=$SECONDS
echo "== fresh-debian.sh: bash tests/setup-machine.sh && tox $*"
bash tests/setup-machine.sh && tox "$@"
tests=$?
t2=$SECONDS
echo "== fresh-debian.sh: bash demo.sh exited $demo after $((t1 - t0)) s"
echo "== fresh-debian.sh: bash tests/setup-machine.sh && tox exited $tests after $((t2 - t1)) s"
[ "$demo" = 0 ] && [ "$tests" = 0 ]
'
enter='
set -e
root=$1
shift
mount --rbind "$root" "$root"
mount --rbind /proc "$root/proc"
mount --rbind /sys "$root/sys"
mount --rbind /dev "$root/dev"
mount -t tmpfs -o mode=755 tmpfs "$root/run"
for d in $OPT_DIRS; do
    [ -d "$d" ] || continue
    mkdir -p "$root$d"
    mount --bind "$d" "$root$d"
    mount -o remount,bind,ro "$root$d"
done
cd "$root"
mkdir -p .oldroot
pivot_root . .oldroot
umount -l /.oldroot
rmdir /.oldroot
cd /
exec "$@"
'
status=0
OPT_DIRS="$opt_dirs" unshare --mount --propagation private -- bash -c "$enter" enter "$root" \
    env -i HOME=/root USER=root LOGNAME=root SHELL=/bin/bash TERM="${TERM:-dumb}" \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "${pip_env[@]}" \
    bash -c "$inner" inner "$@" || status=$?
echo "== fresh-debian.sh: $([ "$status" = 0 ] && echo passed || echo FAILED) after $((SECONDS - start)) s"
exit "$status"
