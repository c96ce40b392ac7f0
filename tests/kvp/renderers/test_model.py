# SPDX-License-Identifier: GPL-2.0-only
"""hvdaemons.kvp.renderers.model: what SET_IP_INFO accepts (else HV_INVALIDARG)."""

from __future__ import annotations

import pytest

from hvdaemons.errors import HvError
from hvdaemons.kvp.renderers.model import Address, InvalidArgument, parse
from hvdaemons.protocol.kvp import IpValue
from tests.kvp.renderers.cases import GUID

BASE_FIELDS = {
    "adapter_id": GUID,
    "addr_family": 3,
    "dhcp_enabled": False,
    "ip_addr": "192.0.2.10;2001:db8::5",
    "sub_net": "255.255.255.0;64",
}
BASE = IpValue(**BASE_FIELDS)


def test_pairs_and_prefixes() -> None:
    cfg = parse(
        "eth0",
        "00:15:5D:00:00:01",
        IpValue(
            GUID,
            3,
            True,
            " 10.0.0.1 ;2001:db8::1;;2001:db8::2;2001:db8::3;10.0.0.2",
            "255.255.252.0;/48;ffff:ffff:ffff:fff0::;0",
        ),
    )
    assert [(a.ip.text, a.ip.version, a.prefix) for a in cfg.addresses] == [
        ("10.0.0.1", 4, 22),
        ("2001:db8::1", 6, 48),
        ("2001:db8::2", 6, 60),
        ("2001:db8::3", 6, 0),
        ("10.0.0.2", 4, None),  # no subnet left for it
    ]
    assert cfg.addresses[4].prefix_or_default == 24
    assert cfg.addresses[1].cidr == "2001:0db8:0000:0000:0000:0000:0000:0001/48"
    assert cfg.netmasks == ("255.255.252.0", "/48", "ffff:ffff:ffff:fff0::", "0")
    assert Address(cfg.addresses[1].ip, None).cidr.endswith("/64")


@pytest.mark.parametrize(
    "field,value",
    [
        ("ip_addr", "192.0.2.300"),
        ("ip_addr", "10.0.0.1\nDEVICE=evil"),
        ("gate_way", "gateway.example"),
        ("dns_addr", "192.0.2.53;not-an-address"),
        ("sub_net", "255.255.255.0\nX=1"),
        ("sub_net", "garbage"),
        ("sub_net", "64;255.255.255.0"),  # an IPv4 address paired with a prefix length
        ("sub_net", "255.255.255.0;255.255.255.0"),  # an IPv6 address with an IPv4 mask
        ("sub_net", "255.255.255.0;129"),  # IPv6 prefix out of range
    ],
)
def test_invalid(field: str, value: str) -> None:
    with pytest.raises(InvalidArgument):
        parse("eth0", "00:15:5D:00:00:01", IpValue(**{**BASE_FIELDS, field: value}))


def test_invalid_argument_is_an_hv_error() -> None:
    assert issubclass(InvalidArgument, HvError)
