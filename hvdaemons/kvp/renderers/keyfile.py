# SPDX-License-Identifier: GPL-2.0-only
"""NetworkManager keyfiles: the one every hv_set_ifconfig receives, and the profile installed.

handoff_text() is the file kvp_set_ip_info() in tools/hv/hv_kvp_daemon.c
(Linux >= 6.10) writes to /var/lib/hyperv/IFNAME.nmconnection, in the same
layout, except that lists use NetworkManager's own syntax (`dns=a;b;`) and
each family gets its first gateway only (`gateway=` takes one address),
where the reference joins them with commas.  render() adds what makes it a
usable, preferred profile in /etc/NetworkManager/system-connections.
"""

from __future__ import annotations

from ...log import get
from .base import Backend, System, text
from .model import IpConfig

log = get(__name__)


def _escape(value: str) -> str:
    # GKeyFile unescapes backslashes in values.
    return value.replace("\\", "\\\\")


def _section(cfg: IpConfig, version: int) -> list[str]:
    name = f"ipv{version}"
    lines = ["", f"[{name}]"]
    # An address without a subnet is left out: a keyfile address needs a prefix.
    written = [a for a in cfg.addresses_of(version) if a.prefix is not None]
    lines += [f"address{n}={a.ip.text}/{a.prefix}" for n, a in enumerate(written, 1)]
    if version == 4:
        method = "auto" if cfg.dhcp else ("manual" if written else "disabled")
    else:
        # dhcp_enabled is IPv4 only; without addresses let SLAAC work.
        method = "manual" if written else "auto"
    lines.append(f"method={method}")
    gateways = cfg.gateways_of(version)
    if gateways:
        lines.append(f"gateway={gateways[0].text}")
        if len(gateways) > 1:
            log.info(
                "SET_IP_INFO: keyfile takes one %s gateway; ignoring %s",
                name,
                ";".join(g.text for g in gateways[1:]),
            )
    dns = cfg.dns_of(version)
    if dns:
        lines.append("dns=" + "".join(f"{d.text};" for d in dns))
    return lines


def handoff_text(cfg: IpConfig) -> str:
    """/var/lib/hyperv/IFNAME.nmconnection."""
    lines = ["", "[connection]", f"interface-name={_escape(cfg.ifname)}"]
    lines += ["", "[ethernet]", f"mac-address={cfg.mac}"]
    lines += _section(cfg, 4) + _section(cfg, 6)
    return text(lines)


def render(cfg: IpConfig) -> str:
    name = _escape(cfg.ifname)
    profile = [
        f"id=hyperv-{name}",
        "type=ethernet",
        "autoconnect=true",
        # Preferred over a distribution's generic profile for the same NIC.
        "autoconnect-priority=100",
    ]
    out = []
    for line in handoff_text(cfg).splitlines():
        out.append(line)
        if line == f"interface-name={name}":
            out += profile
    return text(out)


def running(system: System, ifname: str) -> bool:
    """NetworkManager runs (its state directory alone outlives a stopped daemon)."""
    if not (system.is_dir("/run/NetworkManager") and system.has_tool("nmcli")):
        return False
    return (
        system.tool_output(["nmcli", "-t", "-f", "RUNNING", "general"]) or ""
    ).strip() == "running"


BACKEND = Backend("nm", render)
