# SPDX-License-Identifier: GPL-2.0-only
"""hvdaemons.kvp.renderers.ifupdown: the stanza file, the probes and the notes."""

from __future__ import annotations

import pytest

from hvdaemons.kvp.renderers import ifupdown
from tests.kvp.renderers.cases import CASES, Machine, config, expected


@pytest.mark.parametrize("case", CASES)
def test_render(case: str) -> None:
    assert ifupdown.render(config(case)) == expected("ifupdown", case)


def test_present_and_configures(machine: Machine) -> None:
    system = machine.system()
    assert not ifupdown.present(system, "eth1")
    machine.file("/etc/network/interfaces", "source /etc/network/interfaces.d/*\n")
    assert not ifupdown.present(system, "eth1")  # no ifup
    machine.tool("ifup")
    assert ifupdown.present(system, "eth1") and not ifupdown.configures(system, "eth1")
    # Exact names: eth10 and a regex-like "eth." are not eth1; the second
    # word only ("auto lo eth1" does not count, as before).
    machine.file("/etc/network/interfaces.d/a", "iface eth10 inet dhcp\niface eth. inet dhcp\n")
    machine.file("/etc/network/interfaces.d/b", "auto lo eth1\n")
    # Our own file, and hidden files a shell glob skips, do not count.
    machine.file("/etc/network/interfaces.d/hyperv-eth1", "auto eth1\n")
    machine.file("/etc/network/interfaces.d/.eth1", "auto eth1\n")
    assert not ifupdown.configures(system, "eth1")
    for stanza in ("iface eth1 inet static", "auto eth1", "  allow-hotplug\teth1"):
        machine.file("/etc/network/interfaces.d/c", stanza + "\n")
        assert ifupdown.configures(system, "eth1"), stanza


def test_notes(machine: Machine) -> None:
    machine.tool("ifup")
    machine.file("/etc/network/interfaces", "iface eth1 inet dhcp\n")
    root = machine.root
    assert ifupdown.notes(machine.system(), "eth1") == [
        f"{root}/etc/network/interfaces does not source interfaces.d",
        f"eth1 is also configured elsewhere in {root}/etc/network; both stanzas apply",
    ]
    machine.file("/etc/network/interfaces", "source /etc/network/interfaces.d/*\n")
    assert ifupdown.notes(machine.system(), "eth1") == []
