# SPDX-License-Identifier: GPL-2.0-only
"""ifcfg files: the one every hv_set_ifconfig receives, and network-scripts'.

handoff_text() is the file kvp_set_ip_info() in tools/hv/hv_kvp_daemon.c
writes to /var/lib/hyperv/ifcfg-IFNAME, line for line (ifcfg-style names,
IPv6 fully expanded).  render() is what gets installed as
/etc/sysconfig/network-scripts/ifcfg-IFNAME for initscripts' network-scripts
(ifup/ifdown), with the names those read (PREFIXn, IPV6ADDR_SECONDARIES)
and every value a sourcing shell could misread quoted.
"""

from __future__ import annotations

from .base import HEADER, Backend, System, text
from .model import IpConfig, ip_or_none


def _numbered(
    items: list[tuple[int, str]], v4: str, v6: str, *, v4_first_plain: bool = False
) -> list[str]:
    """NAME=value lines with the reference's counters, one per family.

    IPv4 entries count from 0 (IPADDR0, IPADDR1), except gateways, whose
    first is unnumbered (GATEWAY, GATEWAY1); the first IPv6 entry is
    unnumbered, the next count from 1 (IPV6ADDR, IPV6ADDR_1).
    """
    counters = {4: 0, 6: 0}
    lines = []
    for version, value in items:
        n = counters[version]
        counters[version] += 1
        if version == 4:
            name = v4 if v4_first_plain and n == 0 else f"{v4}{n}"
        else:
            name = v6 if n == 0 else f"{v6}_{n}"
        lines.append(f"{name}={value}")
    return lines


def _netmask(mask: str) -> tuple[int, str]:
    # An IPv6 mask is expanded like an address; a prefix length ("64") is
    # written as sent, under the IPv6 names.
    ip = ip_or_none(mask)
    if ip is None:
        return 6, mask
    return ip.version, ip.expanded


def handoff_text(cfg: IpConfig) -> str:
    """/var/lib/hyperv/ifcfg-IFNAME, as the reference writes it."""
    lines = [f"HWADDR={cfg.mac}", f"DEVICE={cfg.ifname}"]
    lines.append(f"BOOTPROTO={'dhcp' if cfg.dhcp else 'none'}")
    lines += _numbered([(a.ip.version, a.ip.expanded) for a in cfg.addresses], "IPADDR", "IPV6ADDR")
    lines += _numbered([_netmask(m) for m in cfg.netmasks], "NETMASK", "IPV6NETMASK")
    lines += _numbered(
        [(g.version, g.expanded) for g in cfg.gateways],
        "GATEWAY",
        "IPV6_DEFAULTGW",
        v4_first_plain=True,
    )
    # Both families share the DNS counter, from 1.
    lines += [f"DNS{n}={d.expanded}" for n, d in enumerate(cfg.dns, 1)]
    return text(lines)


def _sh(value: str) -> str:
    """A single-quoted shell word: network-scripts source this file."""
    return "'" + value.replace("'", "'\\''") + "'"


def render(cfg: IpConfig) -> str:
    lines = [HEADER, f"DEVICE={_sh(cfg.ifname)}"]
    if cfg.mac:
        lines.append(f"HWADDR={_sh(cfg.mac)}")
    lines += ["TYPE=Ethernet", "ONBOOT=yes", f"BOOTPROTO={'dhcp' if cfg.dhcp else 'none'}"]
    for n, a in enumerate(cfg.addresses_of(4)):
        lines += [f"IPADDR{n}={a.ip.expanded}", f"PREFIX{n}={a.prefix_or_default}"]
    gw4 = cfg.gateways_of(4)
    if gw4:
        lines.append(f"GATEWAY={gw4[0].expanded}")
    lines.append("IPV6INIT=yes")
    v6 = [a.cidr for a in cfg.addresses_of(6)]
    if v6:
        lines.append(f"IPV6ADDR={v6[0]}")
    if v6[1:]:
        lines.append(f"IPV6ADDR_SECONDARIES={_sh(' '.join(v6[1:]))}")
    gw6 = cfg.gateways_of(6)
    if gw6:
        lines.append(f"IPV6_DEFAULTGW={gw6[0].expanded}")
    lines += [f"DNS{n}={d.expanded}" for n, d in enumerate(cfg.dns, 1)]
    lines += ["PEERDNS=yes", "NM_CONTROLLED=no"]
    return text(lines)


def present(system: System, ifname: str) -> bool:
    return system.is_dir("/etc/sysconfig/network-scripts")


BACKEND = Backend("ifcfg", render)
