# SPDX-License-Identifier: GPL-2.0-only
"""Which network configuration system SET_IP_INFO configures: the first present.

The order hv_set_ifconfig has always documented: netplan (it renders for
NetworkManager or networkd itself), ifupdown when it already configures
the interface (a Debian desktop where NetworkManager leaves ifupdown's
interfaces alone), NetworkManager, systemd-networkd, ifupdown, ifcfg.
HV_KVP_NETSTACK in the environment names one and skips the detection.
"""

from __future__ import annotations

from ...log import get
from . import ifcfg, ifupdown, keyfile, netplan, networkd
from .base import Backend, Probe, System

log = get(__name__)

ORDER: tuple[tuple[Probe, Backend], ...] = (
    (netplan.present, netplan.BACKEND),
    (ifupdown.configures, ifupdown.BACKEND),
    (keyfile.running, keyfile.BACKEND),
    (networkd.running, networkd.BACKEND),
    (ifupdown.present, ifupdown.BACKEND),
    (ifcfg.present, ifcfg.BACKEND),
)
BY_NAME: dict[str, Backend] = {backend.name: backend for _, backend in ORDER}


def select(system: System, ifname: str) -> Backend | None:
    """The backend to configure ifname with, None if there is none (logged)."""
    if system.netstack:
        backend = BY_NAME.get(system.netstack)
        if backend is None:
            log.error(
                "unknown HV_KVP_NETSTACK '%s' (known: %s)", system.netstack, " ".join(BY_NAME)
            )
        return backend
    for probe, backend in ORDER:
        if probe(system, ifname):
            return backend
    log.warning("no supported network configuration system found for %s", ifname)
    return None
