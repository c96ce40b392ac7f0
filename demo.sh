#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
# The main job: build and install hvdaemons into the virtualenv .venv at the
# repository root, then run the real daemons against the simulated Hyper-V
# host and show the host's view of KVP, VSS and file copy.  Exits 0 only if
# every part worked.  Afterwards `. .venv/bin/activate` puts hvsim and the
# daemons on PATH (README.md, "Running against the simulator by hand").
#
# Run as root (apt, mount namespaces, loop devices), from any directory.
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")"

if [ "$(id -u)" != 0 ]; then
    echo "demo.sh: run as root (it installs packages, uses mount namespaces and loop devices)" >&2
    exit 1
fi

have() { command -v "$1" >/dev/null 2>&1; }

# What the build and the demo need, by the Debian package that provides it.
need=()
if have python3; then
    # Python.h of the python3 that builds the cffi module (pyconfig.h on Debian).
    python3 -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' ||
        need+=(python3-dev)
    python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
else
    need+=(python3 python3-dev python3-venv)
fi
have gcc || need+=(gcc)
[ -e /usr/include/stdlib.h ] || need+=(libc6-dev)
[ -e /usr/include/linux/hyperv.h ] || need+=(linux-libc-dev)
have mkfs.ext4 || need+=(e2fsprogs)           # VSS: loop-mounted test filesystems
have mkfs.xfs && have xfs_io || need+=(xfsprogs)
have unshare && have nsenter && have pivot_root && have losetup || need+=(util-linux)
have mount && have umount || need+=(mount)
have modprobe || need+=(kmod)
if [ ${#need[@]} -gt 0 ]; then
    echo "demo.sh: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

venv=.venv
# A venv whose interpreter is gone (python3 replaced or removed) is made anew.
if ! "$venv/bin/python" -c '' 2>/dev/null; then
    rm -rf "$venv"
    echo "demo.sh: creating the virtualenv $venv"
    python3 -m venv "$venv"
fi
echo "demo.sh: building hvdaemons and installing it into $venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check .

status=0
PATH="$PWD/$venv/bin:$PATH" "$venv/bin/hvsim" demo "${1:-all}" || status=$?
echo
echo "demo.sh: hvsim (simulator) and the daemons are installed in $PWD/$venv;"
echo "         '. $venv/bin/activate' puts them on PATH (README.md: by hand)."
exit "$status"
