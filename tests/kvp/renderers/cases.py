# SPDX-License-Identifier: GPL-2.0-only
"""SET_IP_INFO requests the renderer tests share, with the interface they land on.

expected/handoff/CASE.ifcfg and CASE.nmconnection are the two files the
daemon hands hv_set_ifconfig for each case (as hvdaemons 798fd9a wrote them,
checked by hand against kvp_set_ip_info() in tools/hv/hv_kvp_daemon.c);
expected/BACKEND/CASE is what gets installed for that backend (first
produced by the shell hv_set_ifconfig of 798fd9a, see from_shell.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hvdaemons.kvp.renderers.base import System
from hvdaemons.kvp.renderers.model import IpConfig, parse
from hvdaemons.protocol.kvp import IpValue

EXPECTED = Path(__file__).resolve().parent / "expected"
GUID = "{4d2e5f3a-1b2c-4d5e-8f90-a1b2c3d4e5f6}"


@dataclass(frozen=True)
class Case:
    ifname: str
    mac: str  # as the daemon reads it from sysfs and upper-cases it
    value: IpValue


CASES: dict[str, Case] = {
    # Both families, two IPv4 addresses with different masks, a prefix
    # length without "/", two IPv4 gateways, mixed DNS servers.
    "static": Case(
        "eth0",
        "00:15:5D:AA:00:01",
        IpValue(
            GUID,
            3,
            False,
            "192.0.2.10; 2001:db8::5;192.0.2.11",
            "255.255.255.0;64;255.255.255.128",
            "192.0.2.1;2001:db8::1;192.0.2.254",
            "192.0.2.53;2001:db8::53;198.51.100.53",
        ),
    ),
    "dhcp": Case("eth0", "00:15:5D:AA:00:01", IpValue(GUID, 1, True)),
    # DHCP and a static address at once.
    "dhcp-static": Case(
        "eth1",
        "00:15:5D:AA:00:02",
        IpValue(GUID, 1, True, "198.51.100.7", "255.255.255.0", "198.51.100.1", "198.51.100.53"),
    ),
    # IPv6 only: a mask in address form, a "/80" prefix, two gateways.
    "ipv6": Case(
        "eth2",
        "00:15:5D:AA:00:03",
        IpValue(
            GUID,
            2,
            False,
            "2001:db8:1::10;fe80::10",
            "ffff:ffff:ffff:ff00::;/80",
            "2001:db8:1::1;2001:db8:1::2",
            "2001:db8::53;2001:db8::54",
        ),
    ),
    # Addresses without a subnet.
    "no-subnet": Case(
        "eth3", "00:15:5D:AA:00:04", IpValue(GUID, 3, False, "10.0.0.5;2001:db8::9", "", "", "")
    ),
    # Neither DHCP nor an address.
    "none": Case("eth4", "00:15:5D:AA:00:05", IpValue(GUID, 0, False)),
    # An interface name with characters each file format must quote.
    "odd-name": Case(
        "x'$(id)\"\\",
        "00:15:5D:AA:00:06",
        IpValue(GUID, 1, False, "192.0.2.10", "255.255.255.0", "192.0.2.1", "192.0.2.53"),
    ),
}


def expected(backend: str, case: str, suffix: str = "") -> str:
    return (EXPECTED / backend / f"{case}{suffix}").read_text()


def config(case: str) -> IpConfig:
    c = CASES[case]
    return parse(c.ifname, c.mac, c.value)


@dataclass
class Machine:
    """A scratch root and PATH for the probes: files below root, tools in bin."""

    root: Path
    bin: Path

    def file(self, absolute: str, text: str = "") -> Path:
        path = self.root / absolute.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def dir(self, absolute: str) -> Path:
        path = self.root / absolute.lstrip("/")
        path.mkdir(parents=True, exist_ok=True)
        return path

    def tool(self, name: str, body: str = "exit 0\n") -> None:
        path = self.bin / name
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)

    def system(self, **env: str) -> System:
        return System(root=str(self.root), env={"PATH": str(self.bin), **env})
