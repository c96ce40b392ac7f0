# SPDX-License-Identifier: GPL-2.0-only
"""Network interfaces as sysfs shows them: by MAC address, by VMBus device GUID.

Mirrors the /sys/class/net scans of kvp_mac_to_if_name() (GET_IP_INFO: the
host names the adapter by MAC) and kvp_get_if_name() (SET_IP_INFO: by the
synthetic NIC's device GUID) in tools/hv/hv_kvp_daemon.c.  Both compare
more leniently than the reference: the MAC without case or separators, the
GUID without case or braces.
"""

from __future__ import annotations

import os

from ..log import get
from .paths import KvpPaths

log = get(__name__)

# str.translate, not re: re costs a daemon 0.2-0.4 MiB of RSS for its life.
_MAC_SEPARATORS = str.maketrans("", "", ":.-")


def interfaces(paths: KvpPaths) -> list[str]:
    try:
        names = os.listdir(paths.sys_class_net)
    except OSError as e:
        log.error("cannot list %s: %s", paths.sys_class_net, e.strerror or e)
        return []
    # The reference takes readdir() order; sorting makes the choice among
    # interfaces sharing a MAC (or a GUID) repeatable.
    return sorted(names)


def _first_line(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            data = f.read(4096)
    except OSError:
        return None
    return data.split(b"\n", 1)[0].decode("utf-8", "replace").strip()


def mac_key(text: str) -> str:
    return text.strip().translate(_MAC_SEPARATORS).upper()


def mac_of(paths: KvpPaths, ifname: str) -> str | None:
    """The interface's MAC address as sysfs prints it, None if unreadable."""
    return _first_line(os.path.join(paths.sys_class_net, ifname, "address")) or None


def by_mac(paths: KvpPaths, mac: str) -> list[str]:
    """Every interface with that MAC (a VF shares its synthetic NIC's)."""
    wanted = mac_key(mac)
    if not wanted:
        return []
    return [name for name in interfaces(paths) if mac_key(mac_of(paths, name) or "") == wanted]


def _guid_key(text: str) -> str:
    return text.strip().strip("{}").strip().lower()


def by_guid(paths: KvpPaths, guid: str) -> str | None:
    """The interface whose VMBus device has that GUID (device/device_id)."""
    wanted = _guid_key(guid)
    if not wanted:
        return None
    for name in interfaces(paths):
        found = _first_line(os.path.join(paths.sys_class_net, name, "device", "device_id"))
        if found is not None and _guid_key(found) == wanted:
            return name
    return None
