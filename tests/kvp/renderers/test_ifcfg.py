# SPDX-License-Identifier: GPL-2.0-only
"""hvdaemons.kvp.renderers.ifcfg: the hand-off file every hv_set_ifconfig gets,
the network-scripts file, and its probe."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hvdaemons.kvp.renderers import ifcfg
from hvdaemons.kvp.renderers.model import parse
from hvdaemons.protocol.kvp import IpValue
from tests.kvp.renderers.cases import CASES, GUID, Machine, config, expected


@pytest.mark.parametrize("case", CASES)
def test_handoff_file(case: str) -> None:
    assert ifcfg.handoff_text(config(case)) == expected("handoff", case, ".ifcfg")


@pytest.mark.parametrize("case", CASES)
def test_render(case: str) -> None:
    assert ifcfg.render(config(case)) == expected("ifcfg", case)


def test_handoff_counters_and_expansion() -> None:
    # The reference's numbering: IPv4 from 0, first IPv6 and first gateway
    # unnumbered, one DNS counter for both families; IPv6 fully expanded.
    value = IpValue(
        GUID,
        3,
        True,
        "::ffff:192.0.2.1;10.0.0.1;fe80::1;10.0.0.2;2001:db8::;10.0.0.3",
        "ffff:ffff:ffff:ffff::;255.0.0.0;/64",
        "10.0.0.254;fe80::fe;10.0.0.253;fe80::fd;10.0.0.252",
        "fe80::53;10.0.0.53",
    )
    assert ifcfg.handoff_text(parse("eth0", "00:15:5D:00:00:01", value)) == (
        "HWADDR=00:15:5D:00:00:01\nDEVICE=eth0\nBOOTPROTO=dhcp\n"
        "IPV6ADDR=0000:0000:0000:0000:0000:ffff:c000:0201\n"
        "IPADDR0=10.0.0.1\nIPV6ADDR_1=fe80:0000:0000:0000:0000:0000:0000:0001\n"
        "IPADDR1=10.0.0.2\nIPV6ADDR_2=2001:0db8:0000:0000:0000:0000:0000:0000\nIPADDR2=10.0.0.3\n"
        "IPV6NETMASK=ffff:ffff:ffff:ffff:0000:0000:0000:0000\nNETMASK0=255.0.0.0\nIPV6NETMASK_1=/64\n"
        "GATEWAY=10.0.0.254\nIPV6_DEFAULTGW=fe80:0000:0000:0000:0000:0000:0000:00fe\n"
        "GATEWAY1=10.0.0.253\nIPV6_DEFAULTGW_1=fe80:0000:0000:0000:0000:0000:0000:00fd\n"
        "GATEWAY2=10.0.0.252\n"
        "DNS1=fe80:0000:0000:0000:0000:0000:0000:0053\nDNS2=10.0.0.53\n"
    )


def test_render_is_safe_to_source(tmp_path: Path) -> None:
    # network-scripts source the file: the odd name must come back unharmed
    # and nothing may run.
    path = tmp_path / "ifcfg"
    path.write_text(ifcfg.render(config("odd-name")))
    sourced = subprocess.run(
        ["sh", "-c", '. "$1" && printf %s "$DEVICE"', "sh", str(path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert sourced.stdout == CASES["odd-name"].ifname


def test_present(machine: Machine) -> None:
    assert not ifcfg.present(machine.system(), "eth0")
    machine.file("/etc/sysconfig/network-scripts")  # a file, not the directory
    assert not ifcfg.present(machine.system(), "eth0")
    (machine.root / "etc/sysconfig/network-scripts").unlink()
    machine.dir("/etc/sysconfig/network-scripts")
    assert ifcfg.present(machine.system(), "eth0")
