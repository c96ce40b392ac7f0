# SPDX-License-Identifier: GPL-2.0-only
"""hvdaemons.kvp.renderers.detect: the order of the probes and HV_KVP_NETSTACK."""

from __future__ import annotations

from hvdaemons import log
from hvdaemons.kvp.renderers import detect
from tests.kvp.renderers.cases import Machine


def chosen(machine: Machine, **env: str) -> str | None:
    backend = detect.select(machine.system(**env), "eth0")
    return None if backend is None else backend.name


def test_order(machine: Machine, logs: log.Capture) -> None:
    assert chosen(machine) is None
    assert "no supported network configuration system found for eth0" in logs.text
    # Each system made present in turn, from the last of the order to the
    # first: the newest one present wins.
    machine.dir("/etc/sysconfig/network-scripts")
    assert chosen(machine) == "ifcfg"
    machine.tool("ifup")
    machine.file("/etc/network/interfaces", "auto lo\niface lo inet loopback\n")
    assert chosen(machine) == "ifupdown"
    machine.tool("networkctl")
    machine.file("/run/systemd/netif/state")
    assert chosen(machine) == "networkd"
    machine.tool("nmcli", "echo running\n")
    machine.dir("/run/NetworkManager")
    assert chosen(machine) == "nm"
    # A Debian desktop: NetworkManager leaves ifupdown's interfaces alone.
    machine.file("/etc/network/interfaces.d/eth0", "iface eth0 inet dhcp\n")
    assert chosen(machine) == "ifupdown"
    machine.tool("netplan")
    machine.file("/etc/netplan/50-cloud-init.yaml")
    assert chosen(machine) == "netplan"


def test_netstack_override(machine: Machine, logs: log.Capture) -> None:
    machine.dir("/etc/sysconfig/network-scripts")
    for name in ("netplan", "nm", "networkd", "ifupdown", "ifcfg"):
        assert chosen(machine, HV_KVP_NETSTACK=name) == name
    assert chosen(machine, HV_KVP_NETSTACK="wicked") is None
    assert "unknown HV_KVP_NETSTACK 'wicked' (known: netplan ifupdown nm networkd ifcfg)" in (
        logs.text
    )


def test_root_from_environment(machine: Machine) -> None:
    machine.dir("/etc/sysconfig/network-scripts")
    system = detect.System.from_environ({"HV_KVP_ROOT": str(machine.root), "PATH": "/nowhere"})
    assert detect.select(system, "eth0") is detect.BY_NAME["ifcfg"]
    assert detect.System.from_environ({}).root == "/"
    assert detect.System.from_environ({"HV_KVP_ROOT": ""}).root == "/"
