# SPDX-License-Identifier: GPL-2.0-only
"""hvdaemons.kvp.renderers.netplan: the YAML file and the probe."""

from __future__ import annotations

import pytest

from hvdaemons.kvp.renderers import netplan
from tests.kvp.renderers.cases import CASES, Machine, config, expected


@pytest.mark.parametrize("case", CASES)
def test_render(case: str) -> None:
    assert netplan.render(config(case)) == expected("netplan", case)


def test_present(machine: Machine) -> None:
    machine.tool("netplan")
    machine.dir("/etc/netplan")
    assert not netplan.present(machine.system(), "eth0")
    machine.file("/etc/netplan/.hidden.yaml")
    machine.file("/etc/netplan/README")
    machine.dir("/etc/netplan/dir.yaml")
    assert not netplan.present(machine.system(), "eth0")
    machine.file("/etc/netplan/50-cloud-init.yaml", "network: {version: 2}\n")
    assert netplan.present(machine.system(), "eth0")
    (machine.bin / "netplan").unlink()
    assert not netplan.present(machine.system(), "eth0")
