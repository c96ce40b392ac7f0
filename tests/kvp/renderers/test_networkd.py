# SPDX-License-Identifier: GPL-2.0-only
"""hvdaemons.kvp.renderers.networkd: the .network file and the probe, and a
real systemd-networkd reading it (tests/support/guest.py); the daemon's
whole SET_IP_INFO path through networkd is in tests/kvp/test_ipinfo_daemon.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hvdaemons.kvp.renderers import networkd
from hvdaemons.kvp.renderers.model import parse
from hvdaemons.protocol.kvp import IpValue
from tests.kvp.renderers.cases import CASES, GUID, Machine, config, expected
from tests.support.guest import Guest, Nic


@pytest.mark.parametrize("case", CASES)
def test_render(case: str) -> None:
    assert networkd.render(config(case)) == expected("networkd", case)


def test_running(machine: Machine) -> None:
    machine.tool("networkctl")
    assert not networkd.running(machine.system(), "eth0")
    machine.file("/run/systemd/netif/state", "OPER_STATE=routable\n")
    assert networkd.running(machine.system(), "eth0")
    (machine.bin / "networkctl").unlink()
    assert not networkd.running(machine.system(), "eth0")


# Glob characters, quotes, a backslash and a leading "!" (inversion); the
# decoy is what the name matches as an unescaped glob.
ODD = "!a*[b]?'\"\\"
DECOY = "!aXbQ'\"\\"


def test_real_networkd_matches_odd_names(tmp_path: Path) -> None:
    """systemd-networkd itself reads the file: it configures the odd name, not the decoy."""
    cfg = parse(ODD, "00:15:5D:00:00:30", IpValue(GUID, 1, False, "192.0.2.30", "255.255.255.0"))
    guest = Guest(
        tmp_path,
        [Nic(ODD, "00:15:5d:00:00:30"), Nic(DECOY, "00:15:5d:00:00:31")],
        networkd_files={"05-hyperv-odd.network": networkd.render(cfg)},
    )
    try:
        guest.start()
        guest.wait_until(
            "networkd enumerated the links", lambda: guest.networkd_said("Enumeration completed")
        )
        guest.wait_until(
            "networkd configured the odd name", lambda: "192.0.2.30/24" in guest.addresses(ODD)
        )
        assert guest.networkd_said(
            f"{ODD}: Configuring with /etc/systemd/network/05-hyperv-odd.network."
        )
        assert guest.addresses(DECOY) == []
        assert not [
            line
            for line in guest.networkd_log.read_text().splitlines()
            if line.startswith(f"{DECOY}: Configuring")
        ]
    finally:
        guest.close()
