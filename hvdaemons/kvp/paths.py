# SPDX-License-Identifier: GPL-2.0-only
"""Where the KVP daemon keeps and finds things.

Defaults are the production values the C daemon compiles in
(KVP_CONFIG_LOC, KVP_SCRIPTS_PATH); tests and the simulator pass others.
"""

from __future__ import annotations


class KvpPaths:
    # The class attributes are the production defaults (the command lines
    # show them); an instance may override each.

    # Pool files .kvp_pool_0 .. 4, and the ifcfg/keyfile written for SET_IP_INFO.
    state_dir = "/var/lib/hyperv"
    # hv_get_dhcp_info, hv_get_dns_info, hv_set_ifconfig.
    scripts_dir = "/usr/libexec/hypervkvpd"
    # Interfaces: <sys_class_net>/<if>/address and <if>/device/device_id.
    sys_class_net = "/sys/class/net"
    os_release = "/etc/os-release"
    # Fallbacks when os-release is missing, in the reference's order.
    release_files: tuple[str, ...] = ("/etc/SuSE-release", "/etc/redhat-release")

    def __init__(
        self,
        state_dir: str = state_dir,
        scripts_dir: str = scripts_dir,
        sys_class_net: str = sys_class_net,
        os_release: str = os_release,
        release_files: tuple[str, ...] = release_files,
    ) -> None:
        self.state_dir = state_dir
        self.scripts_dir = scripts_dir
        self.sys_class_net = sys_class_net
        self.os_release = os_release
        self.release_files = release_files
