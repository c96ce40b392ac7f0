# SPDX-License-Identifier: GPL-2.0-only
"""A small rtnetlink client: links, addresses and routes as values (hvdaemons.value).

Replaces what tools/hv/hv_kvp_daemon.c gets from getifaddrs() and from
running `ip route show` through popen(): the same kernel data, read
directly over NETLINK_ROUTE without a fork.  Parsing is pure (bytes in,
values out); RtnlSocket is the only part doing I/O.

Only what KVP needs is decoded.  Malformed or truncated messages and
attributes are skipped rather than trusted: the kernel never sends them,
but a parser must not index past a buffer because of a bad length.
"""

from __future__ import annotations

import errno
import os
import socket
import struct

from .. import _ffi
from ..value import Value

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from collections.abc import Iterator

# Message types, flags and attribute numbers, from the kernel's headers
# (bindings/rtnetlink.cdef.h).
NLMSG_NOOP = _ffi.const("NLMSG_NOOP")
NLMSG_ERROR = _ffi.const("NLMSG_ERROR")
NLMSG_DONE = _ffi.const("NLMSG_DONE")
NLMSG_OVERRUN = _ffi.const("NLMSG_OVERRUN")
NLM_F_REQUEST = _ffi.const("NLM_F_REQUEST")
NLM_F_MULTI = _ffi.const("NLM_F_MULTI")
NLM_F_DUMP_INTR = _ffi.const("NLM_F_DUMP_INTR")
NLM_F_DUMP = _ffi.const("NLM_F_DUMP")
RTM_NEWLINK = _ffi.const("RTM_NEWLINK")
RTM_GETLINK = _ffi.const("RTM_GETLINK")
RTM_NEWADDR = _ffi.const("RTM_NEWADDR")
RTM_GETADDR = _ffi.const("RTM_GETADDR")
RTM_NEWROUTE = _ffi.const("RTM_NEWROUTE")
RTM_GETROUTE = _ffi.const("RTM_GETROUTE")
IFLA_ADDRESS = _ffi.const("IFLA_ADDRESS")
IFLA_IFNAME = _ffi.const("IFLA_IFNAME")
IFA_ADDRESS = _ffi.const("IFA_ADDRESS")
IFA_LOCAL = _ffi.const("IFA_LOCAL")
IFA_FLAGS = _ffi.const("IFA_FLAGS")
RTA_DST = _ffi.const("RTA_DST")
RTA_OIF = _ffi.const("RTA_OIF")
RTA_GATEWAY = _ffi.const("RTA_GATEWAY")
RTA_PRIORITY = _ffi.const("RTA_PRIORITY")
RTA_MULTIPATH = _ffi.const("RTA_MULTIPATH")
RTA_TABLE = _ffi.const("RTA_TABLE")
RTA_VIA = _ffi.const("RTA_VIA")
IFF_UP = _ffi.const("IFF_UP")
IFF_LOOPBACK = _ffi.const("IFF_LOOPBACK")
RT_TABLE_MAIN = _ffi.const("RT_TABLE_MAIN")
RTN_UNICAST = _ffi.const("RTN_UNICAST")

# The top two bits of rta_type are NLA_F_NESTED / NLA_F_NET_BYTEORDER.
_NLA_TYPE_MASK = 0xFFFF & ~(_ffi.const("NLA_F_NESTED") | _ffi.const("NLA_F_NET_BYTEORDER"))

# The formats mirror struct nlmsghdr, rtattr, ifinfomsg, ifaddrmsg, rtmsg and
# rtnexthop (tests/test_abi.py holds them to the compiler's layouts).
_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_RTATTR = struct.Struct("=HH")  # len, type
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # family dst_len src_len tos table proto scope type flags
_RTNEXTHOP = struct.Struct("=HBBi")  # len, flags, hops, ifindex
_U32 = struct.Struct("=I")
_I32 = struct.Struct("=i")
_U16 = struct.Struct("=H")

_ADDR_LEN: dict[int, int] = {socket.AF_INET: 4, socket.AF_INET6: 16}


def _align(n: int) -> int:
    return (n + 3) & ~3


class NlMessage(Value):
    __slots__ = ("type", "flags", "seq", "pid", "payload")

    def __init__(self, type: int, flags: int, seq: int, pid: int, payload: bytes) -> None:
        self.type = type
        self.flags = flags
        self.seq = seq
        self.pid = pid
        self.payload = payload


class Link(Value):
    # mac: the hardware address as the kernel reports it; empty for links without one.
    __slots__ = ("index", "name", "flags", "mac")

    def __init__(self, index: int, name: str, flags: int, mac: bytes) -> None:
        self.index = index
        self.name = name
        self.flags = flags
        self.mac = mac

    @property
    def is_loopback(self) -> bool:
        return bool(self.flags & IFF_LOOPBACK)


class Address(Value):
    # address: the interface's own address: IFA_LOCAL when present, else
    # IFA_ADDRESS, which is what getifaddrs() reports as ifa_addr.
    # peer: IFA_ADDRESS when it differs from IFA_LOCAL (the peer of a
    # point-to-point link).
    __slots__ = ("family", "prefixlen", "index", "address", "peer", "flags")

    def __init__(
        self,
        family: int,
        prefixlen: int,
        index: int,
        address: str,
        peer: str | None = None,
        flags: int = 0,
    ) -> None:
        self.family = family
        self.prefixlen = prefixlen
        self.index = index
        self.address = address
        self.peer = peer
        self.flags = flags


class NextHop(Value):
    # gateway: the gateway address (RTA_GATEWAY, or RTA_VIA which may be of the
    # other family); oif: the output interface index, 0 if the route names none.
    __slots__ = ("gateway", "gateway_family", "oif")

    def __init__(self, gateway: str | None, gateway_family: int, oif: int) -> None:
        self.gateway = gateway
        self.gateway_family = gateway_family
        self.oif = oif


class Route(Value):
    # nexthops: one for an ordinary route, one per path for RTA_MULTIPATH.
    __slots__ = (
        "family",
        "dst_len",
        "dst",
        "table",
        "type",
        "protocol",
        "scope",
        "priority",
        "nexthops",
        "multipath",
    )

    def __init__(
        self,
        family: int,
        dst_len: int,
        dst: str | None,
        table: int,
        type: int,
        protocol: int,
        scope: int,
        priority: int | None,
        nexthops: tuple[NextHop, ...],
        multipath: bool = False,
    ) -> None:
        self.family = family
        self.dst_len = dst_len
        self.dst = dst
        self.table = table
        self.type = type
        self.protocol = protocol
        self.scope = scope
        self.priority = priority
        self.nexthops = nexthops
        self.multipath = multipath

    @property
    def is_default(self) -> bool:
        """A unicast default route of the main table: what `ip route show` lists as `default ...`."""
        return self.dst_len == 0 and self.table == RT_TABLE_MAIN and self.type == RTN_UNICAST


# ---------------------------------------------------------------- parsing


def iter_messages(data: bytes) -> Iterator[NlMessage]:
    """Split a netlink datagram into messages; stop at the first bad length."""
    off = 0
    while off + _NLMSGHDR.size <= len(data):
        length, mtype, flags, seq, pid = _NLMSGHDR.unpack_from(data, off)
        if length < _NLMSGHDR.size or off + length > len(data):
            return
        yield NlMessage(mtype, flags, seq, pid, bytes(data[off + _NLMSGHDR.size : off + length]))
        off += _align(length)


def parse_attrs(buf: bytes, start: int = 0) -> list[tuple[int, bytes]]:
    """(type, payload) pairs of the rtattr list at buf[start:]."""
    attrs: list[tuple[int, bytes]] = []
    off = start
    while off + _RTATTR.size <= len(buf):
        length, atype = _RTATTR.unpack_from(buf, off)
        if length < _RTATTR.size or off + length > len(buf):
            break
        attrs.append((atype & _NLA_TYPE_MASK, bytes(buf[off + _RTATTR.size : off + length])))
        off += _align(length)
    return attrs


def _ntop(family: int, raw: bytes) -> str | None:
    """Text form of an address attribute, or None if its size is wrong for the family."""
    size = _ADDR_LEN.get(family)
    if size is None or len(raw) != size:
        return None
    # libc's inet_ntop: the same text the C daemon prints.
    return socket.inet_ntop(family, raw)


def _cstring(raw: bytes) -> str:
    # Interface names are bytes; surrogateescape matches os.listdir() on sysfs.
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def parse_link(payload: bytes) -> Link | None:
    if len(payload) < _IFINFOMSG.size:
        return None
    _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(payload)
    name: str | None = None
    mac = b""
    for atype, value in parse_attrs(payload, _IFINFOMSG.size):
        if atype == IFLA_IFNAME:
            name = _cstring(value)
        elif atype == IFLA_ADDRESS:
            mac = value
    if not name:
        return None
    return Link(index=index, name=name, flags=flags, mac=mac)


def parse_address(payload: bytes) -> Address | None:
    if len(payload) < _IFADDRMSG.size:
        return None
    family, prefixlen, flags, _scope, index = _IFADDRMSG.unpack_from(payload)
    address: str | None = None
    local: str | None = None
    for atype, value in parse_attrs(payload, _IFADDRMSG.size):
        if atype == IFA_ADDRESS:
            address = _ntop(family, value)
        elif atype == IFA_LOCAL:
            local = _ntop(family, value)
        elif atype == IFA_FLAGS and len(value) >= 4:
            # 32-bit flags supersede the 8-bit header field.
            flags = _U32.unpack_from(value)[0]
    if local is not None:
        peer = address if address is not None and address != local else None
        return Address(family, prefixlen, index, local, peer, flags)
    if address is not None:
        return Address(family, prefixlen, index, address, None, flags)
    return None


def _gateway_attr(atype: int, value: bytes, family: int) -> tuple[str, int] | None:
    if atype == RTA_GATEWAY:
        text = _ntop(family, value)
        return (text, family) if text is not None else None
    if atype == RTA_VIA and len(value) >= 2:
        # struct rtvia: u16 family + address (an IPv6 next hop of an IPv4 route).
        via_family = _U16.unpack_from(value)[0]
        text = _ntop(via_family, value[2:])
        return (text, via_family) if text is not None else None
    return None


def _parse_multipath(buf: bytes, family: int) -> list[NextHop]:
    hops: list[NextHop] = []
    off = 0
    while off + _RTNEXTHOP.size <= len(buf):
        length, _flags, _hops, ifindex = _RTNEXTHOP.unpack_from(buf, off)
        if length < _RTNEXTHOP.size or off + length > len(buf):
            break
        gateway: tuple[str, int] | None = None
        for atype, value in parse_attrs(buf[off + _RTNEXTHOP.size : off + length]):
            found = _gateway_attr(atype, value, family)
            if found is not None:
                gateway = found
        hops.append(
            NextHop(
                gateway=gateway[0] if gateway else None,
                gateway_family=gateway[1] if gateway else 0,
                oif=ifindex,
            )
        )
        off += _align(length)
    return hops


def parse_route(payload: bytes) -> Route | None:
    if len(payload) < _RTMSG.size:
        return None
    (family, dst_len, _src_len, _tos, table, protocol, scope, rtype, _flags) = _RTMSG.unpack_from(
        payload
    )
    dst: str | None = None
    oif = 0
    priority: int | None = None
    gateway: tuple[str, int] | None = None
    multipath: list[NextHop] | None = None
    for atype, value in parse_attrs(payload, _RTMSG.size):
        if atype == RTA_DST:
            dst = _ntop(family, value)
        elif atype == RTA_OIF and len(value) >= 4:
            oif = _I32.unpack_from(value)[0]
        elif atype == RTA_PRIORITY and len(value) >= 4:
            priority = _U32.unpack_from(value)[0]
        elif atype == RTA_TABLE and len(value) >= 4:
            # The 8-bit header field cannot hold table ids above 255.
            table = _U32.unpack_from(value)[0]
        elif atype == RTA_MULTIPATH:
            multipath = _parse_multipath(value, family)
        else:
            found = _gateway_attr(atype, value, family)
            if found is not None:
                gateway = found
    if multipath is not None:
        nexthops = tuple(multipath)
    else:
        nexthops = (
            NextHop(
                gateway=gateway[0] if gateway else None,
                gateway_family=gateway[1] if gateway else 0,
                oif=oif,
            ),
        )
    return Route(
        family=family,
        dst_len=dst_len,
        dst=dst,
        table=table,
        type=rtype,
        protocol=protocol,
        scope=scope,
        priority=priority,
        nexthops=nexthops,
        multipath=multipath is not None,
    )


# ------------------------------------------------------------------ I/O


class RtnlSocket:
    """One NETLINK_ROUTE socket doing dump requests, one at a time."""

    def __init__(self, timeout: float = 5.0) -> None:
        self._sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE
        )
        try:
            self._sock.bind((0, 0))
            self._sock.settimeout(timeout)
        except BaseException:
            self._sock.close()
            raise
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> RtnlSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def dump(self, msg_type: int, header: bytes, *, retries: int = 3) -> list[NlMessage]:
        """Send a dump request and return the reply messages (DONE excluded).

        A dump interrupted by a concurrent change (NLM_F_DUMP_INTR) is
        repeated so callers see one consistent state.
        """
        for _attempt in range(retries):
            messages, interrupted = self._dump_once(msg_type, header)
            if not interrupted:
                return messages
        return messages

    def _dump_once(self, msg_type: int, header: bytes) -> tuple[list[NlMessage], bool]:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        seq = self._seq
        request = (
            _NLMSGHDR.pack(
                _NLMSGHDR.size + len(header), msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq, 0
            )
            + header
        )
        self._sock.send(request)
        out: list[NlMessage] = []
        interrupted = False
        while True:
            for msg in self._recv():
                if msg.seq != seq:
                    continue  # a late answer to an earlier, abandoned request
                if msg.flags & NLM_F_DUMP_INTR:
                    interrupted = True
                if msg.type == NLMSG_DONE:
                    return out, interrupted
                if msg.type == NLMSG_ERROR:
                    code = _I32.unpack_from(msg.payload)[0] if len(msg.payload) >= 4 else -errno.EIO
                    if code == 0:
                        return out, interrupted
                    raise OSError(-code, os.strerror(-code), "rtnetlink dump")
                if msg.type in (NLMSG_NOOP, NLMSG_OVERRUN):
                    continue
                out.append(msg)

    def _recv(self) -> list[NlMessage]:
        # Peek the datagram size first so the buffer always fits it exactly.
        size, _addr = self._sock.recvfrom_into(
            bytearray(16), 16, socket.MSG_PEEK | socket.MSG_TRUNC
        )
        buf = bytearray(max(size, 16))
        n, addr = self._sock.recvfrom_into(buf, len(buf))
        if addr[0] != 0:
            return []  # not from the kernel
        return list(iter_messages(bytes(buf[:n])))

    def links(self) -> list[Link]:
        msgs = self.dump(RTM_GETLINK, _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0))
        return [x for m in msgs if m.type == RTM_NEWLINK if (x := parse_link(m.payload))]

    def addresses(self, family: int = socket.AF_UNSPEC) -> list[Address]:
        """All addresses, in kernel order (IPv4 before IPv6 for AF_UNSPEC, like getifaddrs)."""
        msgs = self.dump(RTM_GETADDR, _IFADDRMSG.pack(family, 0, 0, 0, 0))
        return [x for m in msgs if m.type == RTM_NEWADDR if (x := parse_address(m.payload))]

    def routes(self, family: int) -> list[Route]:
        msgs = self.dump(RTM_GETROUTE, _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0))
        return [x for m in msgs if m.type == RTM_NEWROUTE if (x := parse_route(m.payload))]


class NetState(Value):
    """One read of the kernel's links, addresses and (optionally) routes."""

    __slots__ = ("links", "addresses", "routes")

    def __init__(
        self,
        links: tuple[Link, ...],
        addresses: tuple[Address, ...],
        routes: tuple[Route, ...] = (),
    ) -> None:
        self.links = links
        self.addresses = addresses
        self.routes = routes

    def link_by_name(self, name: str) -> Link | None:
        for link in self.links:
            if link.name == name:
                return link
        return None


def snapshot(*, with_routes: bool = True, timeout: float = 5.0) -> NetState:
    """Links, addresses and IPv4+IPv6 routes of the current network namespace."""
    with RtnlSocket(timeout) as rtnl:
        links = tuple(rtnl.links())
        addresses = tuple(rtnl.addresses())
        routes: tuple[Route, ...] = ()
        if with_routes:
            routes = tuple(rtnl.routes(socket.AF_INET)) + tuple(rtnl.routes(socket.AF_INET6))
    return NetState(links, addresses, routes)
