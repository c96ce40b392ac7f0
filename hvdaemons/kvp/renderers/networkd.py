# SPDX-License-Identifier: GPL-2.0-only
"""systemd-networkd: a .network file (systemd.network(5)) for the interface.

Installed as /etc/systemd/network/05-hyperv-IFNAME.network, ahead of a
distribution's catch-all files.  Unlike the other backends, every gateway
is kept: each Gateway= adds a default route.
"""

from __future__ import annotations

from .base import HEADER, Backend, System, text
from .model import IpConfig


def render(cfg: IpConfig) -> str:
    lines = [HEADER, "[Match]", f"Name={cfg.ifname}", "", "[Network]"]
    lines.append("DHCP=ipv4" if cfg.dhcp else "DHCP=no")
    lines += [f"Address={a.cidr}" for v in (4, 6) for a in cfg.addresses_of(v)]
    lines += [f"Gateway={g.expanded}" for v in (4, 6) for g in cfg.gateways_of(v)]
    lines += [f"DNS={d.expanded}" for d in cfg.dns]
    return text(lines)


def running(system: System, ifname: str) -> bool:
    return system.exists("/run/systemd/netif/state") and system.has_tool("networkctl")


BACKEND = Backend("networkd", render)
