# SPDX-License-Identifier: GPL-2.0-only
"""hvdaemons.kvp.renderers.networkd: the .network file and the probe."""

from __future__ import annotations

import pytest

from hvdaemons.kvp.renderers import networkd
from tests.kvp.renderers.cases import CASES, Machine, config, expected


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
