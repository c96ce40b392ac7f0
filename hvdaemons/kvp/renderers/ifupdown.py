# SPDX-License-Identifier: GPL-2.0-only
"""ifupdown: a stanza file for /etc/network/interfaces.d (interfaces(5)).

Installed as /etc/network/interfaces.d/hyperv-IFNAME.  One "iface" stanza
per address (ifupdown takes one address per stanza); the first stanza of
each family carries that family's first gateway and its DNS servers
(dns-nameservers, for resolvconf).
"""

from __future__ import annotations

import os

from .base import HEADER, Backend, System, text
from .model import IpConfig

INTERFACES = "/etc/network/interfaces"
INTERFACES_D = "/etc/network/interfaces.d"


def render(cfg: IpConfig) -> str:
    name = cfg.ifname
    stanzas = [f"iface {name} inet dhcp"] if cfg.dhcp else []
    for version, family in ((4, "inet"), (6, "inet6")):
        gateways = cfg.gateways_of(version)
        dns = cfg.dns_of(version)
        for n, a in enumerate(cfg.addresses_of(version)):
            stanzas += [f"iface {name} {family} static", f"    address {a.cidr}"]
            if n == 0 and gateways:
                stanzas.append(f"    gateway {gateways[0].expanded}")
            if n == 0 and dns:
                stanzas.append("    dns-nameservers " + " ".join(d.expanded for d in dns))
    # Without DHCP or an address, "auto" still brings the interface up.
    return text([HEADER, f"auto {name}", *(stanzas or [f"iface {name} inet manual"])])


def _ours(system: System, ifname: str) -> str:
    return system.path(os.path.join(INTERFACES_D, f"hyperv-{ifname}"))


def _names_interface(system: System, ifname: str) -> bool:
    """Whether a stanza outside the file we install names the interface."""
    files = [system.path(INTERFACES)]
    files += [f for f in system.files_in(INTERFACES_D) if f != _ours(system, ifname)]
    for path in files:
        try:
            with open(path, encoding="utf-8", errors="surrogateescape") as f:
                for line in f:
                    fields = line.split()
                    if (
                        len(fields) >= 2
                        and (fields[0] in ("iface", "auto") or fields[0].startswith("allow-"))
                        and fields[1] == ifname
                    ):
                        return True
        except OSError:
            continue
    return False


def present(system: System, ifname: str) -> bool:
    return system.is_file(INTERFACES) and system.has_tool("ifup")


def configures(system: System, ifname: str) -> bool:
    """ifupdown is present and already configures this interface."""
    return present(system, ifname) and _names_interface(system, ifname)


def notes(system: System, ifname: str) -> list[str]:
    out = []
    try:
        with open(system.path(INTERFACES), encoding="utf-8", errors="surrogateescape") as f:
            sources = "interfaces.d" in f.read()
    except OSError:
        sources = False
    if not sources:
        out.append(f"{system.path(INTERFACES)} does not source interfaces.d")
    if _names_interface(system, ifname):
        out.append(
            f"{ifname} is also configured elsewhere in {system.path('/etc/network')}; both stanzas apply"
        )
    return out


BACKEND = Backend("ifupdown", render, notes)
