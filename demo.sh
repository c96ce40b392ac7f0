#!/usr/bin/env bash
# The main job: build and install hvdaemons into a virtualenv, then run the real daemons
# against the simulated Hyper-V host and show the host's view of KVP, VSS and file copy.
set -euo pipefail
cd "$(dirname "$0")"

need=()
command -v gcc >/dev/null || need+=(gcc libc6-dev)
[ -e /usr/include/linux/hyperv.h ] || need+=(linux-libc-dev)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v unshare >/dev/null || need+=(util-linux)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

venv=.cache/demo-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q .
PATH="$PWD/$venv/bin:$PATH" exec hvsim demo "${1:-all}"
