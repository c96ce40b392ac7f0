# SPDX-License-Identifier: GPL-2.0-only
"""Where expected/BACKEND/CASE came from: the shell hv_set_ifconfig of 798fd9a.

Until 798fd9a the shipped hv_set_ifconfig parsed the daemon's ifcfg file
itself and rendered every backend's configuration.  This tool runs such a
script (HV_KVP_NETSTACK forced, the tools it calls stubbed, HV_KVP_ROOT a
scratch tree) on expected/handoff/CASE.{ifcfg,nmconnection} and writes what
it installed to expected/BACKEND/CASE, so that the Python renderers are held
to the script's output, except where the script was wrong (DELIBERATE).
Not a test; run by hand:

    git show 798fd9a:hvdaemons/kvp/scripts/hv_set_ifconfig > /tmp/hv_set_ifconfig.sh
    python -m tests.kvp.renderers.from_shell /tmp/hv_set_ifconfig.sh
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.kvp.renderers.cases import CASES, EXPECTED

# Where the script installed each backend's file, below HV_KVP_ROOT.
INSTALLED = {
    "netplan": "etc/netplan/90-hyperv-{}.yaml",
    "nm": "etc/NetworkManager/system-connections/hyperv-{}.nmconnection",
    "networkd": "etc/systemd/network/05-hyperv-{}.network",
    "ifupdown": "etc/network/interfaces.d/hyperv-{}",
    "ifcfg": "etc/sysconfig/network-scripts/ifcfg-{}",
}
STUBS = ("netplan", "nmcli", "networkctl", "ifup", "ifdown")
# Outputs the renderers deliberately do not take from the script, left alone:
# networkd never matched Name= with a quote or backslash in it unescaped.
DELIBERATE = {("networkd", "odd-name")}


def render(script: Path, backend: str, case: str, tmp: Path) -> str:
    c = CASES[case]
    root = tmp / backend / case / "root"
    state = tmp / backend / case / "state"
    state.mkdir(parents=True)
    ifcfg = state / f"ifcfg-{c.ifname}"
    keyfile = state / f"{c.ifname}.nmconnection"
    ifcfg.write_text((EXPECTED / "handoff" / f"{case}.ifcfg").read_text())
    keyfile.write_text((EXPECTED / "handoff" / f"{case}.nmconnection").read_text())
    env = {
        "PATH": f"{tmp / 'stubs'}:/usr/sbin:/usr/bin:/sbin:/bin",
        "HV_KVP_ROOT": str(root),
        "HV_KVP_NETSTACK": backend,
        "LC_ALL": "C",
    }
    proc = subprocess.run(
        ["sh", str(script), str(ifcfg), str(keyfile)], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"{backend}/{case}: exit {proc.returncode}: {proc.stderr}")
    return (root / INSTALLED[backend].format(c.ifname)).read_text()


def main(argv: list[str]) -> int:
    script = Path(argv[0]).resolve()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "stubs").mkdir()
        for name in STUBS:
            stub = tmp / "stubs" / name
            stub.write_text("#!/bin/sh\nexit 0\n")
            os.chmod(stub, 0o755)
        for backend in INSTALLED:
            (EXPECTED / backend).mkdir(exist_ok=True)
            for case in CASES:
                if (backend, case) not in DELIBERATE:
                    (EXPECTED / backend / case).write_text(render(script, backend, case, tmp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
