#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-only
#
# Build the Debian source package and its binary packages (hvdaemons,
# hvdaemons-sim) the way a Debian builder does, from the release tarball:
#
#   1. the release tarball (the sdist): python3 -m build --sdist, or --sdist FILE;
#   2. a clean bookworm root: mmdebstrap --variant=buildd (essential and
#      build-essential only), or a tar of one (--root-tar, made the same way);
#   3. in the root: the tarball as hvdaemons_<version>.orig.tar.gz plus this
#      checkout's debian/; the build dependencies from debian/control only
#      (apt-get build-dep);
#   4. dpkg-buildpackage -us -uc as an unprivileged user, in a network
#      namespace without any network (pip, if anything tried it, would fail;
#      pip is not even installed: it is no build dependency);
#   5. the results (.dsc, .orig.tar.gz, .debian.tar.xz, .deb, .buildinfo,
#      .changes, build.log) copied to OUTDIR.
#
# Usage (root): sh packaging/build-debian.sh [--sdist FILE] [--root-tar TAR]
#                                             [--apt-cache DIR] [--host-arch ARCH] OUTDIR
# --apt-cache keeps the downloaded build dependencies for the next run.
# --host-arch cross-builds the binary packages for ARCH (e.g. arm64) as
# sbuild --host=ARCH does: ARCH added to dpkg in the root,
# crossbuild-essential-ARCH, the build profiles cross and nocheck (nothing
# built for ARCH can run here), apt-get build-dep -a ARCH,
# dpkg-buildpackage -a ARCH.
# Needs mmdebstrap (without --root-tar), python3-build (without --sdist),
# unshare and chroot (util-linux, coreutils).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
suite=bookworm
sdist=
root_tar=
apt_cache=
host_arch=
while [ $# -gt 1 ]; do
    case "$1" in
    --host-arch) host_arch=$2; shift 2 ;;
    --sdist) sdist=$(readlink -f "$2"); shift 2 ;;
    --root-tar) root_tar=$(readlink -f "$2"); shift 2 ;;
    --apt-cache) mkdir -p "$2"; apt_cache=$(readlink -f "$2"); shift 2 ;;
    *) break ;;
    esac
done
[ $# -eq 1 ] || { echo "usage: $0 [--sdist FILE] [--root-tar TAR] [--apt-cache DIR] [--host-arch ARCH] OUTDIR" >&2; exit 2; }
outdir=$1
[ "$(id -u)" = 0 ] || { echo "build-debian.sh: run as root (chroot, namespaces)" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/var/tmp}/hvdaemons-debian.XXXXXX")
root=$work/root
trap 'rm -rf --one-file-system "$work"' EXIT
mkdir -p "$outdir" "$root"
outdir=$(readlink -f "$outdir")

if [ -z "$sdist" ]; then
    /usr/bin/python3 -m build --sdist --no-isolation --outdir "$work/sdist" "$repo" >&2
    sdist=$(ls "$work"/sdist/hvdaemons-*.tar.gz)
fi
version=$(basename "$sdist" .tar.gz)
version=${version#hvdaemons-}

if [ -n "$root_tar" ]; then
    tar --numeric-owner -xf "$root_tar" -C "$root"
else
    set --
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -s "$f" ] && set -- "$@" "$f"
    done
    mmdebstrap --quiet --variant=buildd "$suite" "$root" "$@"
fi
# This host's apt settings (proxies, snapshot validity) apply in the root too.
for f in /etc/apt/apt.conf.d/99*; do
    [ -e "$f" ] && cp "$f" "$root/etc/apt/apt.conf.d/"
done

# Run a command in the root: private mount namespace, /proc and /dev, and
# with "-n" a network namespace of its own (no interface but a down lo).
in_root() {
    netns=
    if [ "$1" = -n ]; then netns=--net; shift; fi
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive \
        unshare --mount --propagation private $netns sh -c \
        'mount -t proc proc "$0/proc" && mount --rbind /dev "$0/dev" && exec chroot "$@"' \
        "$root" "$root" "$@"
}

# The source package as a Debian builder gets it: the pristine tarball and
# debian/ ("3.0 (quilt)": debian/ is not in the tarball).
src=/build/hvdaemons-$version
mkdir -p "$root/build"
cp "$sdist" "$root/build/hvdaemons_$version.orig.tar.gz"
tar -xzf "$sdist" -C "$root/build"
[ -d "$root$src" ] || { echo "build-debian.sh: $sdist does not unpack to hvdaemons-$version/" >&2; exit 1; }
cp -a "$repo/debian" "$root$src/debian"

cross=
options=
if [ -n "$host_arch" ]; then
    in_root dpkg --add-architecture "$host_arch"
    cross="-a $host_arch -Pcross,nocheck"
    options=nocheck
fi
in_root apt-get update -qq
[ -z "$apt_cache" ] || find "$apt_cache" -maxdepth 1 -name '*.deb' -exec cp {} "$root/var/cache/apt/archives/" \;
if [ -n "$host_arch" ]; then
    in_root apt-get install -y -qq --no-install-recommends "crossbuild-essential-$host_arch" >&2
fi
# shellcheck disable=SC2086 # $cross: no option or "-a ARCH -Pprofiles"
in_root apt-get build-dep -y -qq --no-install-recommends $cross "$src" >&2
[ -z "$apt_cache" ] || find "$root/var/cache/apt/archives" -maxdepth 1 -name '*.deb' -exec cp {} "$apt_cache/" \;
in_root useradd --create-home builder
in_root chown -R builder:builder /build

# Offline: the build has no network at all.
status=0
in_root -n setpriv --reuid=builder --regid=builder --init-groups sh -c \
    "cd $src && HOME=/home/builder PIP_NO_INDEX=1 DEB_BUILD_OPTIONS=$options dpkg-buildpackage -us -uc $cross" \
    >"$outdir/build.log" 2>&1 || status=$?
for f in "$root"/build/*; do
    [ -f "$f" ] && cp "$f" "$outdir/"
done
if [ "$status" != 0 ]; then
    tail -n 40 "$outdir/build.log" >&2
    echo "build-debian.sh: dpkg-buildpackage failed ($status), log in $outdir/build.log" >&2
    exit "$status"
fi
# The proof that nothing could have come from a package index: no pip here.
if in_root python3 -c 'import pip' 2>/dev/null; then
    echo "build-debian.sh: pip is installed in the build root" >&2
    exit 1
fi
ls "$outdir"
