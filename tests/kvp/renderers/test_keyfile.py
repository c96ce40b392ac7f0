# SPDX-License-Identifier: GPL-2.0-only
"""hvdaemons.kvp.renderers.keyfile: the hand-off keyfile every hv_set_ifconfig
gets, the NetworkManager profile, and the probe for a running NetworkManager."""

from __future__ import annotations

from pathlib import Path

import pytest

from hvdaemons import log
from hvdaemons.kvp.renderers import keyfile
from hvdaemons.kvp.renderers.model import parse
from hvdaemons.protocol.kvp import IpValue
from tests.kvp.renderers.cases import CASES, GUID, Machine, config, expected


@pytest.mark.parametrize("case", CASES)
def test_handoff_file(case: str) -> None:
    assert keyfile.handoff_text(config(case)) == expected("handoff", case, ".nmconnection")


@pytest.mark.parametrize("case", CASES)
def test_render(case: str) -> None:
    assert keyfile.render(config(case)) == expected("nm", case)


def test_pairs_by_position_and_escapes_name(logs: log.Capture) -> None:
    value = IpValue(
        GUID,
        3,
        True,
        "2001:db8::5;10.0.0.1;10.0.0.2;2001:db8::6",
        "ffff:ffff:ffff:ff00::;255.255.240.0;255.255.255.255",  # the 4th address has no subnet
        "10.0.0.254;10.0.0.253",
        "",
    )
    text = keyfile.handoff_text(parse("we\\ird", "AA:BB:CC:DD:EE:FF", value))
    assert text == (
        "\n[connection]\ninterface-name=we\\\\ird\n\n[ethernet]\nmac-address=AA:BB:CC:DD:EE:FF\n"
        "\n[ipv4]\naddress1=10.0.0.1/20\naddress2=10.0.0.2/32\nmethod=auto\ngateway=10.0.0.254\n"
        "\n[ipv6]\naddress1=2001:db8::5/56\nmethod=manual\n"
    )
    assert "keyfile takes one ipv4 gateway; ignoring 10.0.0.253" in logs.text


def _nmcli(machine: Machine, answer: str, rc: int = 0) -> Path:
    calls = machine.root.parent / "nmcli.calls"
    machine.tool("nmcli", f'echo "$*" >> {str(calls)!r}\nprintf "{answer}"\nexit {rc}\n')
    return calls


def test_running(machine: Machine) -> None:
    calls = _nmcli(machine, "running\\n")
    # No state directory: NetworkManager never ran; nmcli is not asked.
    assert not keyfile.running(machine.system(), "eth0")
    assert not calls.exists()
    machine.dir("/run/NetworkManager")
    assert keyfile.running(machine.system(), "eth0")
    assert calls.read_text() == "-t -f RUNNING general\n"
    # Stopped, or nmcli failing: the state directory outlives the daemon.
    _nmcli(machine, "stopped\\n")
    assert not keyfile.running(machine.system(), "eth0")
    _nmcli(machine, "running\\n", rc=8)
    assert not keyfile.running(machine.system(), "eth0")
    (machine.bin / "nmcli").unlink()
    assert not keyfile.running(machine.system(), "eth0")
