# SPDX-License-Identifier: GPL-2.0-only
"""netplan: a YAML file for the interface (netplan's "version: 2" schema).

Installed as /etc/netplan/90-hyperv-IFNAME.yaml (mode 0600: netplan warns
about readable files), late in the order so that it overrides a
distribution's file for the same interface.  Strings are double-quoted
YAML scalars.
"""

from __future__ import annotations

from .base import HEADER, Backend, System, text
from .model import IpConfig


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(cfg: IpConfig) -> str:
    lines = [HEADER, "network:", "  version: 2", "  ethernets:", f"    {_quoted(cfg.ifname)}:"]
    lines.append(f"      dhcp4: {'true' if cfg.dhcp else 'false'}")
    addresses = [a.cidr for v in (4, 6) for a in cfg.addresses_of(v)]
    if addresses:
        lines.append("      addresses:")
        lines += [f"        - {_quoted(a)}" for a in addresses]
    # One default route per family, through its first gateway.
    gateways = [gws[0] for gws in (cfg.gateways_of(4), cfg.gateways_of(6)) if gws]
    if gateways:
        lines.append("      routes:")
        for gw in gateways:
            lines += ["        - to: default", f"          via: {_quoted(gw.expanded)}"]
    if cfg.dns:
        lines += ["      nameservers:", "        addresses:"]
        lines += [f"          - {_quoted(d.expanded)}" for d in cfg.dns]
    return text(lines)


def present(system: System, ifname: str) -> bool:
    """netplan is installed and has a configuration to add to."""
    return system.has_tool("netplan") and any(
        path.endswith(".yaml") for path in system.files_in("/etc/netplan")
    )


BACKEND = Backend("netplan", render)
