# SPDX-License-Identifier: GPL-2.0-only
"""hvdaemons.kvp.netlink: the pure parsers on hand-made (and hostile) bytes,
and the socket client against real veth interfaces in a network namespace."""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator

import pytest

from hvdaemons.kvp import netlink as nl
from tests.support.netns import NetNs


@pytest.fixture
def netns() -> Iterator[NetNs]:
    ns = NetNs()
    try:
        yield ns
    finally:
        ns.delete()


# ------------------------------------------------------- byte builders


def attr(atype: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), atype) + payload
    return raw + b"\0" * (-len(raw) % 4)


def nlmsg(mtype: int, payload: bytes, *, flags: int = nl.NLM_F_MULTI, seq: int = 1) -> bytes:
    raw = struct.pack("=IHHII", 16 + len(payload), mtype, flags, seq, 0) + payload
    return raw + b"\0" * (-len(raw) % 4)


def ifinfo(index: int, flags: int, *attrs: bytes) -> bytes:
    return struct.pack("=BxHiII", 0, 1, index, flags, 0) + b"".join(attrs)


def ifaddr(family: int, plen: int, index: int, *attrs: bytes) -> bytes:
    return struct.pack("=BBBBI", family, plen, 0, 0, index) + b"".join(attrs)


def rtmsg(family: int, dst_len: int, table: int, rtype: int, *attrs: bytes) -> bytes:
    return struct.pack("=BBBBBBBBI", family, dst_len, 0, 0, table, 3, 0, rtype, 0) + b"".join(attrs)


def v4(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET, text)


def v6(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, text)


def nexthop(ifindex: int, *attrs: bytes) -> bytes:
    body = b"".join(attrs)
    return struct.pack("=HBBi", 8 + len(body), 0, 0, ifindex) + body


# ------------------------------------------------------- pure parsing


def test_messages_split_and_truncated_tail_dropped() -> None:
    data = nlmsg(nl.RTM_NEWLINK, b"abcd") + nlmsg(nl.NLMSG_DONE, b"\0\0\0\0")
    # A third message whose length claims more than is there.
    data += struct.pack("=IHHII", 64, nl.RTM_NEWLINK, 0, 1, 0) + b"xy"
    msgs = list(nl.iter_messages(data))
    assert [(m.type, m.payload) for m in msgs] == [
        (nl.RTM_NEWLINK, b"abcd"),
        (nl.NLMSG_DONE, b"\0\0\0\0"),
    ]
    # A length below the header size would loop forever if trusted.
    assert list(nl.iter_messages(struct.pack("=IHHII", 3, 1, 0, 0, 0))) == []
    assert list(nl.iter_messages(b"\x10\0")) == []


def test_attrs_stop_at_bad_lengths_and_mask_flags() -> None:
    good = attr(nl.IFLA_IFNAME | 0x8000, b"eth0\0")  # NLA_F_NESTED set
    assert nl.parse_attrs(good) == [(nl.IFLA_IFNAME, b"eth0\0")]
    too_long = struct.pack("=HH", 200, nl.IFLA_ADDRESS) + b"\1\2"
    too_short = struct.pack("=HH", 2, nl.IFLA_ADDRESS)
    assert nl.parse_attrs(good + too_long + good) == [(nl.IFLA_IFNAME, b"eth0\0")]
    assert nl.parse_attrs(too_short + good) == []
    assert nl.parse_attrs(good + b"\1\2") == [(nl.IFLA_IFNAME, b"eth0\0")]


def test_parse_link() -> None:
    link = nl.parse_link(
        ifinfo(
            7,
            nl.IFF_UP,
            attr(nl.IFLA_ADDRESS, bytes.fromhex("00155d0000a1")),
            attr(nl.IFLA_IFNAME, b"a;b$c\0"),
        )
    )
    assert link == nl.Link(
        index=7, name="a;b$c", flags=nl.IFF_UP, mac=bytes.fromhex("00155d0000a1")
    )
    assert not link.is_loopback
    lo = nl.parse_link(ifinfo(1, nl.IFF_LOOPBACK | nl.IFF_UP, attr(nl.IFLA_IFNAME, b"lo\0")))
    assert lo is not None and lo.is_loopback and lo.mac == b""
    # Non-UTF-8 names come back as os.listdir() would spell them.
    odd = nl.parse_link(ifinfo(3, 0, attr(nl.IFLA_IFNAME, b"e\xfft\0")))
    assert odd is not None and odd.name == os.fsdecode(b"e\xfft")
    assert nl.parse_link(ifinfo(2, 0)) is None  # no name
    assert nl.parse_link(b"\0" * 8) is None  # short header


def test_parse_address_local_and_peer() -> None:
    plain = nl.parse_address(ifaddr(socket.AF_INET6, 64, 3, attr(nl.IFA_ADDRESS, v6("fe80::1"))))
    assert plain == nl.Address(socket.AF_INET6, 64, 3, "fe80::1")
    # Point-to-point: IFA_LOCAL is ours, IFA_ADDRESS the peer (getifaddrs semantics).
    ptp = nl.parse_address(
        ifaddr(
            socket.AF_INET,
            32,
            4,
            attr(nl.IFA_ADDRESS, v4("10.9.9.2")),
            attr(nl.IFA_LOCAL, v4("10.9.9.1")),
            attr(nl.IFA_FLAGS, struct.pack("=I", 0x200)),
        )
    )
    assert ptp == nl.Address(socket.AF_INET, 32, 4, "10.9.9.1", "10.9.9.2", 0x200)
    same = nl.parse_address(
        ifaddr(
            socket.AF_INET,
            24,
            4,
            attr(nl.IFA_ADDRESS, v4("10.1.1.1")),
            attr(nl.IFA_LOCAL, v4("10.1.1.1")),
        )
    )
    assert same is not None and same.address == "10.1.1.1" and same.peer is None
    # A wrong-sized address is ignored, not decoded from neighbouring bytes.
    assert nl.parse_address(ifaddr(socket.AF_INET, 24, 4, attr(nl.IFA_ADDRESS, v6("::1")))) is None
    assert nl.parse_address(ifaddr(socket.AF_PACKET, 0, 4, attr(nl.IFA_ADDRESS, b"\1\2"))) is None
    assert nl.parse_address(b"\0\0") is None


def test_parse_route_single_multipath_and_via() -> None:
    r = nl.parse_route(
        rtmsg(
            socket.AF_INET,
            0,
            nl.RT_TABLE_MAIN,
            nl.RTN_UNICAST,
            attr(nl.RTA_GATEWAY, v4("192.0.2.1")),
            attr(nl.RTA_OIF, struct.pack("=i", 5)),
            attr(nl.RTA_PRIORITY, struct.pack("=I", 100)),
        )
    )
    assert r is not None and r.is_default and not r.multipath
    assert r.nexthops == (nl.NextHop("192.0.2.1", socket.AF_INET, 5),)
    assert r.priority == 100

    mp = nl.parse_route(
        rtmsg(
            socket.AF_INET6,
            0,
            nl.RT_TABLE_MAIN,
            nl.RTN_UNICAST,
            attr(
                nl.RTA_MULTIPATH,
                nexthop(5, attr(nl.RTA_GATEWAY, v6("2001:db8::1")))
                + nexthop(6, attr(nl.RTA_GATEWAY, v6("2001:db8:1::1")))
                + nexthop(7)
                # A hop claiming more bytes than remain ends the list.
                + struct.pack("=HBBi", 64, 0, 0, 8),
            ),
        )
    )
    assert mp is not None and mp.multipath and mp.is_default
    assert mp.nexthops == (
        nl.NextHop("2001:db8::1", socket.AF_INET6, 5),
        nl.NextHop("2001:db8:1::1", socket.AF_INET6, 6),
        nl.NextHop(None, 0, 7),
    )

    # IPv4 route with an IPv6 next hop (RTA_VIA, `via inet6 fe80::1`).
    via = nl.parse_route(
        rtmsg(
            socket.AF_INET,
            0,
            nl.RT_TABLE_MAIN,
            nl.RTN_UNICAST,
            attr(nl.RTA_VIA, struct.pack("=H", socket.AF_INET6) + v6("fe80::1")),
            attr(nl.RTA_OIF, struct.pack("=i", 2)),
        )
    )
    assert via is not None and via.nexthops == (nl.NextHop("fe80::1", socket.AF_INET6, 2),)


def test_parse_route_table_and_type_decide_default() -> None:
    # RTA_TABLE overrides the 8-bit header field (tables above 255).
    other = nl.parse_route(
        rtmsg(socket.AF_INET, 0, 252, nl.RTN_UNICAST, attr(nl.RTA_TABLE, struct.pack("=I", 1000)))
    )
    assert other is not None and other.table == 1000 and not other.is_default
    unreachable = nl.parse_route(rtmsg(socket.AF_INET6, 0, nl.RT_TABLE_MAIN, 7))
    assert unreachable is not None and not unreachable.is_default
    subnet = nl.parse_route(
        rtmsg(
            socket.AF_INET, 24, nl.RT_TABLE_MAIN, nl.RTN_UNICAST, attr(nl.RTA_DST, v4("192.0.2.0"))
        )
    )
    assert subnet is not None and subnet.dst == "192.0.2.0" and not subnet.is_default
    # Truncated attributes: the short OIF is ignored, the bad gateway too.
    odd = nl.parse_route(
        rtmsg(
            socket.AF_INET,
            0,
            nl.RT_TABLE_MAIN,
            nl.RTN_UNICAST,
            attr(nl.RTA_OIF, b"\1\0"),
            attr(nl.RTA_GATEWAY, b"\1\2\3"),
        )
    )
    assert odd is not None and odd.nexthops == (nl.NextHop(None, 0, 0),)
    assert nl.parse_route(b"\0" * 11) is None


# ------------------------------------------------------- real kernel


DUMP_CODE = """
import json
from hvdaemons.kvp import netlink
def asdict(v):
    if isinstance(v, tuple):
        return [asdict(x) for x in v]
    if hasattr(v, "__slots__"):
        return {name: asdict(getattr(v, name)) for name in v.__slots__}
    return v
s = netlink.snapshot()
print(json.dumps({
    "links": [dict(asdict(l), mac=l.mac.hex(":"), lo=l.is_loopback) for l in s.links],
    "addrs": [asdict(a) for a in s.addresses],
    "routes": [dict(asdict(r), default=r.is_default) for r in s.routes],
}))
"""


def test_dump_real_interfaces(netns: NetNs) -> None:
    netns.ip("link", "set", "lo", "up")
    netns.veth("a;b$c", "00:15:5d:00:00:01", "pa", "02:00:00:00:00:01")
    netns.veth("eth1", "00:15:5d:00:00:02", "pb", "02:00:00:00:00:02")
    netns.ip("addr", "add", "192.0.2.10/24", "dev", "a;b$c")
    netns.ip("addr", "add", "10.9.9.1", "peer", "10.9.9.2/32", "dev", "a;b$c")
    netns.ip("-6", "addr", "add", "2001:db8::10/64", "dev", "a;b$c", "nodad")
    netns.ip("-6", "addr", "add", "2001:db8:1::5/64", "dev", "eth1", "nodad")
    netns.ip("route", "add", "default", "via", "192.0.2.1", "dev", "a;b$c")
    netns.ip("route", "add", "default", "via", "192.0.2.254", "dev", "a;b$c", "table", "100")
    netns.ip(
        "-6",
        "route",
        "add",
        "default",
        "nexthop",
        "via",
        "2001:db8::1",
        "dev",
        "a;b$c",
        "nexthop",
        "via",
        "2001:db8:1::1",
        "dev",
        "eth1",
    )
    out = netns.python(DUMP_CODE)

    links = {link["name"]: link for link in out["links"]}
    assert set(links) == {"lo", "a;b$c", "pa", "eth1", "pb"}
    assert links["lo"]["lo"] and not links["a;b$c"]["lo"]
    assert links["a;b$c"]["mac"] == "00:15:5d:00:00:01"
    assert links["eth1"]["mac"] == "00:15:5d:00:00:02"
    idx = {name: link["index"] for name, link in links.items()}
    # Every name and index agrees with what `ip` and sysfs say.
    for name, index in idx.items():
        assert netns.run(["cat", f"/sys/class/net/{name}/ifindex"]).strip() == str(index)

    addrs = [
        (a["family"], a["address"], a["prefixlen"], a["index"], a["peer"]) for a in out["addrs"]
    ]
    assert addrs == [
        (socket.AF_INET, "127.0.0.1", 8, idx["lo"], None),
        (socket.AF_INET, "192.0.2.10", 24, idx["a;b$c"], None),
        (socket.AF_INET, "10.9.9.1", 32, idx["a;b$c"], "10.9.9.2"),
        (socket.AF_INET6, "::1", 128, idx["lo"], None),
        (socket.AF_INET6, "2001:db8::10", 64, idx["a;b$c"], None),
        (socket.AF_INET6, "2001:db8:1::5", 64, idx["eth1"], None),
    ]

    defaults = [r for r in out["routes"] if r["default"]]
    assert [(r["family"], r["multipath"], r["nexthops"]) for r in defaults] == [
        (
            socket.AF_INET,
            False,
            [{"gateway": "192.0.2.1", "gateway_family": socket.AF_INET, "oif": idx["a;b$c"]}],
        ),
        (
            socket.AF_INET6,
            True,
            [
                {"gateway": "2001:db8::1", "gateway_family": socket.AF_INET6, "oif": idx["a;b$c"]},
                {"gateway": "2001:db8:1::1", "gateway_family": socket.AF_INET6, "oif": idx["eth1"]},
            ],
        ),
    ]
    # The default route of table 100 is dumped but is not "default" (not in main).
    table100 = [r for r in out["routes"] if r["table"] == 100]
    assert len(table100) == 1 and table100[0]["dst_len"] == 0
    assert table100[0]["nexthops"][0]["gateway"] == "192.0.2.254"


def test_dump_error_is_oserror() -> None:
    # The kernel answers an unknown message type with NLMSG_ERROR EOPNOTSUPP.
    with nl.RtnlSocket() as rtnl:
        with pytest.raises(OSError) as info:
            rtnl.dump(nl.RTM_NEWLINK + 100, b"\0" * 16)
        assert info.value.errno == errno.EOPNOTSUPP
        # The socket stays usable after an error.
        assert any(link.name == "lo" for link in rtnl.links())
