# SPDX-License-Identifier: GPL-2.0-only
"""The seven Hyper-V integration services and what serves each in a Linux guest.

Class GUIDs are hvdaemons.vmbus's; names are Hyper-V Manager's
("Integration Services" page of the VM settings), as tools/hv/lsvmbus
prints them.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import vmbus


@dataclass(frozen=True)
class Service:
    key: str  # short name used in --json and on the command line
    name: str  # as Hyper-V Manager shows it
    class_id: str | None  # VMBus class GUID; None: no VMBus device in a Linux guest
    component: str  # what serves it in the guest
    impact: str  # what stops working while it is off
    daemon: str | None = None  # upstream program name, if a daemon is needed
    unit: str | None = None  # our systemd unit
    misc: str | None = None  # hv_utils transport device (misc subsystem name)
    note: str = ""


SERVICES: tuple[Service, ...] = (
    Service(
        "heartbeat",
        "Heartbeat",
        vmbus.HEARTBEAT_CLASS_ID,
        "hv_utils kernel module",
        "the host cannot tell that the guest is alive (heartbeat 'No contact'); "
        "monitoring and cluster failover on the host act on that",
    ),
    Service(
        "shutdown",
        "Operating system shutdown",
        vmbus.SHUTDOWN_CLASS_ID,
        "hv_utils kernel module",
        "the host cannot shut the guest down cleanly (Stop-VM, host shutdown): "
        "it can only turn it off",
    ),
    Service(
        "timesync",
        "Time synchronization",
        vmbus.TIMESYNC_CLASS_ID,
        "hv_utils kernel module",
        "the clock is not set from the host after boot, restore or live migration, "
        "and there is no Hyper-V PTP clock for chrony",
    ),
    Service(
        "kvp",
        "Data Exchange",
        vmbus.KVP_CLASS_ID,
        "hv_kvp_daemon",
        "the host sees no IP addresses, host name or OS version of the guest, cannot "
        "inject IP settings, and no key/value data is exchanged",
        daemon="hv_kvp_daemon",
        unit="hv-kvp-daemon.service",
        misc="vmbus/hv_kvp",
    ),
    Service(
        "vss",
        "Backup (volume shadow copy)",
        vmbus.VSS_CLASS_ID,
        "hv_vss_daemon",
        "host backups and production checkpoints of the running guest are not "
        "application-consistent (the host falls back to a crash-consistent or saved-state copy)",
        daemon="hv_vss_daemon",
        unit="hv-vss-daemon.service",
        misc="vmbus/hv_vss",
    ),
    Service(
        "fcopy",
        "Guest services",
        vmbus.FCOPY_CLASS_ID,
        "hv_fcopy_daemon",
        "Copy-VMFile from the host into the guest fails",
        daemon="hv_fcopy_daemon",
        unit="hv-fcopy-daemon.service",
        misc="vmbus/hv_fcopy",
    ),
    Service(
        "psdirect",
        "PowerShell Direct",
        None,
        "none: no Linux side",
        "nothing in a Linux guest: PowerShell Direct sessions (Enter-PSSession -VMName) "
        "target Windows guests",
        note="no Linux side: it runs over Hyper-V sockets, no VMBus device class, no daemon",
    ),
)

# Upstream and distribution names of each daemon's process (/proc/PID/comm
# holds at most 15 characters: hv_fcopy_uio_daemon shows as hv_fcopy_uio_da).
PROCESS_NAMES: dict[str, tuple[str, ...]] = {
    "hv_kvp_daemon": ("hv_kvp_daemon", "hypervkvpd"),
    "hv_vss_daemon": ("hv_vss_daemon", "hypervvssd"),
    "hv_fcopy_daemon": ("hv_fcopy_daemon", "hv_fcopy_uio_da", "hypervfcopyd"),
}


def by_key(key: str) -> Service:
    for s in SERVICES:
        if s.key == key:
            return s
    raise KeyError(key)
