# SPDX-License-Identifier: GPL-2.0-only
"""What the guest reports about its IP configuration: GET_IP_INFO and the auto pool's address lists.

Mirrors kvp_mac_to_ip_info(), kvp_get_ip_info() and kvp_get_ipconfig_info()
in tools/hv/hv_kvp_daemon.c (Linux 6.1-6.17).  Output strings match the
reference byte for byte, except where noted below; addresses, prefixes and
routes come from rtnetlink instead of getifaddrs() and `ip route`
pipelines.  SET_IP_INFO is hvdaemons.kvp.ipinject.

Deliberate differences from the reference:

* The interface is matched exactly (no name-prefix match: eth1 is not eth10),
  and the MAC compare ignores case and accepts '-' or no separators.
* gate_way lists only the default routes leaving through the adapter itself
  (per-interface, like <= 6.13), read from the kernel, including every
  next hop of a multipath route; >= 6.14 lists the default gateways of all
  interfaces, which tells the host nothing about this adapter.  Duplicates
  are dropped.
* Every string is kept below the kernel's UTF-16 limits (whole entries
  only), so the host never receives a string cut off without terminator.
* The helpers run through hvdaemons.kvp.helper (argv, timeout, bounded
  output); a missing, failing or hanging helper gives a logged default.
  hv_get_dns_info gets the interface name (as >= 6.14 and RHEL do).
"""

from __future__ import annotations

import socket

from ..log import get
from ..protocol.kvp import (
    ADDR_FAMILY_IPV4,
    ADDR_FAMILY_IPV6,
    HOST_VALUE_UNITS,
    MAX_GATEWAY_SIZE,
    MAX_IP_ADDR_SIZE,
    IpValue,
)
from ..protocol.status import HvStatus
from . import helper, netlink, nics
from .paths import KvpPaths

log = get(__name__)

# Helpers must finish well within the kernel's 30 s KVP timeout
# (HV_UTIL_TIMEOUT); two of them run per GET_IP_INFO.
GET_HELPER_TIMEOUT = 5.0

# Longest strings that survive the kernel's UTF-8 -> UTF-16 conversion with
# their terminator (hv_kvp.c: MAX_IP_ADDR_SIZE, MAX_GATEWAY_SIZE units; the
# ENUMERATE value: HV_KVP_EXCHANGE_MAX_VALUE_SIZE / 2 - 2 units).  UTF-8
# never has fewer bytes than UTF-16 units, so byte lengths are safe bounds.
_IP_ADDR_MAX = MAX_IP_ADDR_SIZE - 1
_SUB_NET_MAX = MAX_IP_ADDR_SIZE - 1
_GATE_WAY_MAX = MAX_GATEWAY_SIZE - 1
_DNS_ADDR_MAX = MAX_IP_ADDR_SIZE - 1
_ENUM_VALUE_MAX = HOST_VALUE_UNITS


# ------------------------------------------------------------ GET_IP_INFO


class _Joined:
    """A ';'-joined list that refuses entries which would pass a byte limit."""

    def __init__(self, limit: int, *, trailing: bool = False) -> None:
        self.limit = limit
        self.trailing = trailing
        self.items: list[str] = []
        self._size = 0

    def text(self) -> str:
        if self.trailing:
            return "".join(f"{item};" for item in self.items)
        return ";".join(self.items)

    def _cost(self, item: str) -> int:
        separator = 1 if self.items or self.trailing else 0
        return len(item.encode("utf-8", "surrogateescape")) + separator

    def fits(self, item: str) -> bool:
        return self._size + self._cost(item) <= self.limit

    def add(self, item: str) -> bool:
        if not self.fits(item):
            return False
        self._size += self._cost(item)
        self.items.append(item)
        return True


def _prefix_to_netmask4(prefixlen: int) -> str:
    prefixlen = max(0, min(prefixlen, 32))
    mask = (0xFFFFFFFF << (32 - prefixlen)) & 0xFFFFFFFF
    return socket.inet_ntop(socket.AF_INET, mask.to_bytes(4, "big"))


def _link_addresses(state: netlink.NetState, link: netlink.Link) -> list[netlink.Address]:
    if link.is_loopback:
        # The reference skips loopback-flagged getifaddrs entries.
        return []
    return [
        a
        for a in state.addresses
        if a.index == link.index and a.family in (socket.AF_INET, socket.AF_INET6)
    ]


def _gateways(state: netlink.NetState, ifindex: int) -> list[str]:
    """Default-route gateways leaving through ifindex: IPv4 routes first, then IPv6."""
    found: list[str] = []
    for family in (socket.AF_INET, socket.AF_INET6):
        for route in state.routes:
            if route.family != family or not route.is_default:
                continue
            for hop in route.nexthops:
                if hop.oif == ifindex and hop.gateway is not None and hop.gateway not in found:
                    found.append(hop.gateway)
    return found


def _helper_output(name: str, ifname: str, paths: KvpPaths, timeout: float) -> bytes | None:
    """What hv_get_dns_info or hv_get_dhcp_info printed for ifname.

    None if it was killed or never started: its output may be incomplete.
    A helper that failed may still have printed something: that is used,
    as the reference (popen) does.
    """
    argv = [helper.script(paths, name), ifname]
    result = helper.run(argv, timeout)
    if result.failure:
        log.error("GET_IP_INFO: %s %s", helper.command_text(argv), result.failure)
    return None if result.returncode is None else result.stdout


def _dns_servers(ifname: str, paths: KvpPaths, timeout: float) -> str:
    dns = _Joined(_DNS_ADDR_MAX, trailing=True)
    output = _helper_output("hv_get_dns_info", ifname, paths, timeout) or b""
    for raw in output.decode("utf-8", "replace").splitlines():
        line = raw.strip()
        if line and not dns.add(line):
            break
    return dns.text()


def _dhcp_enabled(ifname: str, paths: KvpPaths, timeout: float) -> bool:
    output = _helper_output("hv_get_dhcp_info", ifname, paths, timeout) or b""
    return output.split(b"\n", 1)[0].startswith(b"Enabled")


def _gather(
    adapter_id: str,
    state: netlink.NetState,
    link: netlink.Link,
    addrs: list[netlink.Address],
    paths: KvpPaths,
    timeout: float,
) -> IpValue:
    ips = _Joined(_IP_ADDR_MAX)
    subnets = _Joined(_SUB_NET_MAX)
    family = 0
    for a in addrs:
        if a.family == socket.AF_INET:
            subnet = _prefix_to_netmask4(a.prefixlen)
            bit = ADDR_FAMILY_IPV4
        else:
            subnet = f"/{a.prefixlen}"
            bit = ADDR_FAMILY_IPV6
        # Address and subnet lists stay in lock-step: the host pairs them by position.
        if not (ips.fits(a.address) and subnets.fits(subnet)):
            log.warning("GET_IP_INFO: too many addresses on %s; list truncated", link.name)
            break
        ips.add(a.address)
        subnets.add(subnet)
        family |= bit
    gateways = _Joined(_GATE_WAY_MAX, trailing=True)
    for gw in _gateways(state, link.index):
        if not gateways.add(gw):
            break
    return IpValue(
        adapter_id=adapter_id,
        addr_family=family,
        dhcp_enabled=_dhcp_enabled(link.name, paths, timeout),
        ip_addr=ips.text(),
        sub_net=subnets.text(),
        gate_way=gateways.text(),
        dns_addr=_dns_servers(link.name, paths, timeout),
    )


def get_ip_info(
    adapter_id: str,
    addr_family: int,
    paths: KvpPaths,
    *,
    timeout: float = GET_HELPER_TIMEOUT,
) -> tuple[HvStatus, IpValue | None]:
    """KVP_OP_GET_IP_INFO: (HV status, info) for the adapter with MAC adapter_id.

    addr_family is ignored, as by the reference: both families are always
    reported and addr_family in the answer says which were seen.
    """
    del addr_family
    if not nics.mac_key(adapter_id):
        log.error("GET_IP_INFO: empty adapter id")
        return HvStatus.E_FAIL, None
    candidates = nics.by_mac(paths, adapter_id)
    if not candidates:
        log.info("GET_IP_INFO: no interface has MAC address %s", adapter_id)
        return HvStatus.E_FAIL, None
    try:
        state = netlink.snapshot()
    except OSError as e:
        log.error("GET_IP_INFO: cannot read network state: %s", e)
        return HvStatus.E_FAIL, None
    # A VF shares the synthetic NIC's MAC but has no address: take the first
    # match with an address, else the last match (as the reference's loop ends).
    chosen: tuple[netlink.Link, list[netlink.Address]] | None = None
    for name in candidates:
        link = state.link_by_name(name)
        if link is None:
            continue  # vanished between the sysfs scan and the netlink dump
        chosen = (link, _link_addresses(state, link))
        if chosen[1]:
            break
    if chosen is None:
        log.info("GET_IP_INFO: interface with MAC address %s vanished", adapter_id)
        return HvStatus.E_FAIL, None
    info = _gather(adapter_id, state, chosen[0], chosen[1], paths, timeout)
    return HvStatus.S_OK, info


def address_lists() -> tuple[str, str]:
    """(NetworkAddressIPv4, NetworkAddressIPv6) for the auto pool.

    Every address of every non-loopback interface in getifaddrs() order,
    ';'-joined.  Capped at whole addresses within what the kernel passes to
    the host for an ENUMERATE value (1022 UTF-16 units), where the reference
    would let the kernel cut the last address in half.
    """
    try:
        state = netlink.snapshot(with_routes=False)
    except OSError as e:
        log.error("cannot read interface addresses: %s", e)
        return "", ""
    loopback = {link.index for link in state.links if link.is_loopback}
    lists: dict[int, _Joined] = {
        socket.AF_INET: _Joined(_ENUM_VALUE_MAX),
        socket.AF_INET6: _Joined(_ENUM_VALUE_MAX),
    }
    for a in state.addresses:
        joined = lists.get(a.family)
        if joined is None or a.index in loopback:
            continue
        joined.add(a.address)
    return lists[socket.AF_INET].text(), lists[socket.AF_INET6].text()
