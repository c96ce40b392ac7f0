# SPDX-License-Identifier: GPL-2.0-only
"""Where the KVP daemon keeps and finds things.

Defaults are the production values the C daemon compiles in
(KVP_CONFIG_LOC, KVP_SCRIPTS_PATH); tests and the simulator pass others.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KvpPaths:
    # Pool files .kvp_pool_0 .. 4, and the ifcfg/keyfile written for SET_IP_INFO.
    state_dir: str = "/var/lib/hyperv"
    # hv_get_dhcp_info, hv_get_dns_info, hv_set_ifconfig.
    scripts_dir: str = "/usr/libexec/hypervkvpd"
    # Interfaces: <sys_class_net>/<if>/address and <if>/device/device_id.
    sys_class_net: str = "/sys/class/net"
    os_release: str = "/etc/os-release"
    # Fallbacks when os-release is missing, in the reference's order.
    release_files: tuple[str, ...] = ("/etc/SuSE-release", "/etc/redhat-release")
