# SPDX-License-Identifier: GPL-2.0-only
"""systemd-networkd: a .network file (systemd.network(5)) for the interface.

Installed as /etc/systemd/network/05-hyperv-IFNAME.network, ahead of a
distribution's catch-all files.  Unlike the other backends, every gateway
is kept: each Gateway= adds a default route.
"""

from __future__ import annotations

import re

from .base import HEADER, Backend, System, text
from .model import IpConfig


def _match_name(ifname: str) -> str:
    """ifname as a [Match] Name= value that matches it and nothing else.

    networkd splits the value into words (quotes and backslashes escape,
    as in extract_first_word()), then matches each as a shell glob, where
    a leading "!" inverts: escape for the glob, then for the word.  The
    shell hv_set_ifconfig wrote the name as it was, which never matched a
    name with a quote or a backslash.
    """
    glob = re.sub(r"([\\*?\[])", r"\\\1", ifname)
    if glob.startswith("!"):
        glob = "\\" + glob
    return re.sub(r"([\\'\"\s])", r"\\\1", glob)


def render(cfg: IpConfig) -> str:
    lines = [HEADER, "[Match]", f"Name={_match_name(cfg.ifname)}", "", "[Network]"]
    lines.append("DHCP=ipv4" if cfg.dhcp else "DHCP=no")
    lines += [f"Address={a.cidr}" for v in (4, 6) for a in cfg.addresses_of(v)]
    lines += [f"Gateway={g.expanded}" for v in (4, 6) for g in cfg.gateways_of(v)]
    lines += [f"DNS={d.expanded}" for d in cfg.dns]
    return text(lines)


def running(system: System, ifname: str) -> bool:
    return system.exists("/run/systemd/netif/state") and system.has_tool("networkctl")


BACKEND = Backend("networkd", render)
