# SPDX-License-Identifier: GPL-2.0-only
"""What SET_IP_INFO asks for, validated once for every renderer.

Mirrors the checks of kvp_set_ip_info() and its helpers in
tools/hv/hv_kvp_daemon.c: every address, gateway and DNS entry must be an
IPv4 or IPv6 address (else HV_INVALIDARG), and each address pairs with the
subnet at the same position of sub_net.  Stricter than the reference where
it wrote garbage: a netmask must be an address or a prefix length ("64",
"/64"), and a pair's mask must suit the address's family.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass

from ...errors import HvError
from ...protocol.kvp import IpValue


class InvalidArgument(HvError):
    """An address or mask from the host that cannot be configured (HV_INVALIDARG)."""


@dataclass(frozen=True)
class Ip:
    """One address of the request, as the host sent it (without blanks)."""

    text: str
    version: int  # 4 or 6
    packed: bytes

    @property
    def expanded(self) -> str:
        """IPv4 as sent; IPv6 as 8 groups of 4 lower-case digits, the ifcfg form
        of the reference's expand_ipv6()."""
        if self.version == 4:
            return self.text
        return ":".join(self.packed[i : i + 2].hex() for i in range(0, 16, 2))


# The prefix of an address the host sent no subnet for, in the configuration
# systems that need one (what hv_set_ifconfig has always used).
DEFAULT_PREFIX = {4: 24, 6: 64}


@dataclass(frozen=True)
class Address:
    ip: Ip
    # From the sub_net entry at the same position; None when sub_net is shorter.
    prefix: int | None

    @property
    def prefix_or_default(self) -> int:
        return DEFAULT_PREFIX[self.ip.version] if self.prefix is None else self.prefix

    @property
    def cidr(self) -> str:
        """ADDRESS/PREFIX, the address in its ifcfg form."""
        return f"{self.ip.expanded}/{self.prefix_or_default}"


@dataclass(frozen=True)
class IpConfig:
    """One interface's configuration as the host injects it."""

    ifname: str
    mac: str  # upper case, as sysfs gives it upper-cased
    dhcp: bool
    addresses: tuple[Address, ...]  # in the host's order
    netmasks: tuple[str, ...]  # the sub_net entries: an IPv4 mask, an IPv6 mask or a prefix length
    gateways: tuple[Ip, ...]
    dns: tuple[Ip, ...]

    def addresses_of(self, version: int) -> list[Address]:
        return [a for a in self.addresses if a.ip.version == version]

    def gateways_of(self, version: int) -> list[Ip]:
        return [g for g in self.gateways if g.version == version]

    def dns_of(self, version: int) -> list[Ip]:
        return [d for d in self.dns if d.version == version]


PREFIX_LENGTH = re.compile(r"/?([0-9]{1,3})")


def entries(text: str) -> list[str]:
    """The ';'-separated entries of a field.

    parse_ip_val_buffer() splits at ';' and strips leading spaces; we also
    strip trailing blanks and skip empty entries instead of stopping there.
    """
    return [e.strip() for e in text.split(";") if e.strip()]


def ip_or_none(text: str) -> Ip | None:
    for version, family in ((4, socket.AF_INET), (6, socket.AF_INET6)):
        try:
            return Ip(text, version, socket.inet_pton(family, text))
        except (OSError, ValueError):
            continue
    return None


def _ip(text: str, what: str) -> Ip:
    ip = ip_or_none(text)
    if ip is None:
        raise InvalidArgument(f"{what} {text!r} is not an IPv4 or IPv6 address")
    return ip


def _leading_ones(raw: bytes) -> int:
    n = 0
    for byte in raw:
        if byte == 0xFF:
            n += 8
            continue
        while byte & 0x80:
            n += 1
            byte = (byte << 1) & 0xFF
        break
    return n


def _netmask(text: str) -> str:
    if ip_or_none(text) is None and not PREFIX_LENGTH.fullmatch(text):
        # The reference writes any non-address netmask verbatim; only prefix
        # lengths get through here.
        raise InvalidArgument(f"netmask {text!r} is not an IPv4 or IPv6 address")
    return text


def _prefix(address: Ip, mask: str) -> int:
    """The prefix length of mask for address (kvp_subnet_to_plen() and the IPv6 case)."""
    m = ip_or_none(mask)
    if address.version == 4:
        if m is None or m.version != 4:
            raise InvalidArgument(f"subnet {mask!r} is not an IPv4 netmask")
        return _leading_ones(m.packed)
    digits = PREFIX_LENGTH.fullmatch(mask)
    if digits is not None:
        plen = int(digits.group(1))
    elif m is not None and m.version == 6:
        plen = _leading_ones(m.packed)
    else:
        raise InvalidArgument(f"subnet {mask!r} is not an IPv6 prefix length")
    if plen > 128:
        raise InvalidArgument(f"IPv6 prefix length {plen} is out of range")
    return plen


def parse(ifname: str, mac: str, value: IpValue) -> IpConfig:
    """The request for interface ifname (MAC mac).  Raises InvalidArgument."""
    ips = [_ip(e, "address") for e in entries(value.ip_addr)]
    masks = [_netmask(e) for e in entries(value.sub_net)]
    addresses = tuple(
        Address(ip, _prefix(ip, masks[i]) if i < len(masks) else None) for i, ip in enumerate(ips)
    )
    return IpConfig(
        ifname=ifname,
        mac=mac,
        dhcp=value.dhcp_enabled,
        addresses=addresses,
        netmasks=tuple(masks),
        gateways=tuple(_ip(e, "gateway") for e in entries(value.gate_way)),
        dns=tuple(_ip(e, "dns") for e in entries(value.dns_addr)),
    )
