# SPDX-License-Identifier: GPL-2.0-only
"""Finding the file-copy device, its driver and its uio node (hvdaemons.fcopy.discovery).

Real directory trees laid out like /sys, the simulator's among them, and the
kernel's own uevents on this machine.
"""

from __future__ import annotations

import os
import select
import socket
import stat
import threading
import uuid
from pathlib import Path

import pytest

from hvdaemons import log, vmbus
from hvdaemons.fcopy import discovery as D
from hvdaemons.service import Stopper
from hvsim import uio as sim_uio
from tests.support.fcopy import find_uio_device, vmbus_device

KVP_CLASS_ID = "a9a0f4e7-5a45-4d96-b827-8a841e8c03e6"


def bind_uio(sysfs: Path, dev: Path, name: str, size: int) -> None:
    (dev / "uio" / name).mkdir(parents=True)
    maps = sysfs / "class" / "uio" / name / "maps" / "map0"
    maps.mkdir(parents=True)
    (maps / "size").write_text(f"0x{size:x}\n")


def test_found_by_class_not_by_instance(tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    vmbus_device(sysfs, "11111111-2222-3333-4444-555555555555", KVP_CLASS_ID)
    other = vmbus_device(
        sysfs, "66666666-2222-3333-4444-555555555555", vmbus.FCOPY_CLASS_ID.upper()
    )
    bind_uio(sysfs, other, "uio4", 0xA000)
    disc = D.SysfsDiscovery(str(sysfs), "/devroot")
    assert disc.fcopy_devices() == [str(other)]
    dev = find_uio_device(disc)
    assert dev == D.UioDevice(str(other), "uio4", "/devroot/uio4", 0xA000)
    assert dev.ring_size == 0x5000


def test_fixed_instance_is_a_fallback_when_class_id_is_unreadable(tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    dev = vmbus_device(sysfs, vmbus.FCOPY_INSTANCE_ID, None)
    assert D.SysfsDiscovery(str(sysfs)).fcopy_devices() == [str(dev)]


def test_map_size_is_hex_text(tmp_path: Path) -> None:
    d = tmp_path / "maps" / "map0"
    d.mkdir(parents=True)
    (d / "size").write_text("0x8000\n")
    assert D.map_size(str(tmp_path)) == 0x8000
    (d / "size").write_text("garbage\n")
    assert D.map_size(str(tmp_path)) is None


def test_nothing_there(tmp_path: Path) -> None:
    assert find_uio_device(D.make_discovery(str(tmp_path), str(tmp_path))) is None


def test_driver_name_is_the_link_target(tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    unbound = vmbus_device(sysfs, "00000000-1111-2222-3333-444444444444")
    owned = vmbus_device(sysfs, vmbus.FCOPY_INSTANCE_ID, driver=vmbus.HV_UTILS_DRIVER)
    assert D.driver_name(str(unbound)) is None
    assert D.driver_name(str(owned)) == "hv_utils"
    assert D.driver_name(str(tmp_path / "gone")) is None


# A device whose uevent file any test may write: the kernel then broadcasts a
# "change" uevent for /dev/null, tagged with our UUID (SYNTH_UUID), which
# changes nothing (Documentation/ABI/testing/sysfs-uevent).
NULL_UEVENT = "/sys/devices/virtual/mem/null/uevent"


def synthesize_uevent() -> None:
    fd = os.open(NULL_UEVENT, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, f"change {uuid.uuid4()} HVDAEMONSTEST=1".encode())
    finally:
        os.close(fd)


def readable(fd: int, timeout: float) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


def test_on_the_real_sys_a_wait_listens_to_the_kernels_uevents(tmp_path: Path) -> None:
    disc = D.make_discovery()
    assert isinstance(disc, D.SysfsDiscovery)
    assert disc.wake_fd() is None  # nothing opened before the first scan
    disc.fcopy_devices()  # a Hyper-V guest may have one: what matters is the socket
    fd = disc.wake_fd()
    assert fd is not None
    # Its own socket: a netlink one, of the kernel's uevent protocol.
    probe = socket.socket(fileno=os.dup(fd))
    try:
        assert probe.family == socket.AF_NETLINK
        assert probe.proto == D.NETLINK_KOBJECT_UEVENT
    finally:
        probe.close()
    stopper = Stopper()
    waited = threading.Event()

    def wait() -> None:
        stopper.wait(3600, disc)
        waited.set()

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    synthesize_uevent()
    # An hour's wait ends on the uevent (the timeout only guards against a hang).
    assert waited.wait(60), "a uevent did not end the wait"
    waiter.join()
    assert not stopper.requested
    # Serving a channel, the daemon closes it; the next scan listens again.
    disc.close()
    assert disc.wake_fd() is None
    with pytest.raises(OSError):
        os.fstat(fd)
    disc.fcopy_devices()
    assert disc.wake_fd() is not None
    disc.close()


def test_uevents_are_drained_and_an_overrun_is_not_an_error() -> None:
    uevents = D.KernelUevents()
    try:
        synthesize_uevent()
        assert readable(uevents.fileno(), 60)
        assert uevents.drain() >= 1
        # The smallest receive buffer the kernel allows, and more uevents than
        # it holds: the kernel drops the rest and says ENOBUFS on the next read.
        tiny = socket.socket(fileno=os.dup(uevents.fileno()))
        tiny.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
        tiny.close()
        for _ in range(200):
            synthesize_uevent()
        assert readable(uevents.fileno(), 60)
        assert uevents.drain() >= 1  # did not raise
        synthesize_uevent()
        assert readable(uevents.fileno(), 60)  # still receiving after the overrun
        assert uevents.drain(limit=1) == 1
    finally:
        uevents.close()


def test_another_tree_rescans_by_timer_only(tmp_path: Path) -> None:
    disc = D.make_discovery(str(tmp_path / "sys"), str(tmp_path / "dev"))
    assert disc.fcopy_devices() == []
    assert disc.wake_fd() is None
    disc.drain_events()
    disc.close()


def test_without_netlink_the_scan_still_works(tmp_path: Path, logs: log.Capture) -> None:
    """A sandbox without AF_NETLINK: the socket cannot be had, the scan goes on, by timer."""

    def refused() -> D.KernelUevents:
        raise PermissionError(1, "Operation not permitted")

    sysfs = tmp_path / "sys"
    vmbus_device(sysfs, "11111111-2222-3333-4444-555555555555", class_id=vmbus.FCOPY_CLASS_ID)
    disc = D.SysfsDiscovery(str(sysfs), str(tmp_path / "dev"), refused)
    assert len(disc.fcopy_devices()) == 1
    assert disc.wake_fd() is None
    assert len(disc.fcopy_devices()) == 1  # asked once, not at every scan
    assert logs.messages(log.DEBUG) == [
        "no kernel uevents ([Errno 1] Operation not permitted); rescanning by timer"
    ]


def test_the_simulators_tree_looks_like_the_kernels(tmp_path: Path) -> None:
    sim = sim_uio.UioSim(str(tmp_path / "sim"), "7.2")
    try:
        sim.offer()
        dev = find_uio_device(D.make_discovery(sim.sysfs, sim.dev))
        assert dev is not None
        assert dev.name == "uio1"  # not uio0, which belongs to another device
        assert dev.map_size == 2 * 0x5000
        assert stat.S_ISSOCK(os.stat(dev.node).st_mode)
        assert D.driver_name(dev.vmbus_dir) == vmbus.UIO_DRIVER
        assert (
            Path(sim.vmbus_dir) / "modalias"
        ).read_text() == "vmbus:e34bd134e4dec8419ae76b174977c192\n"
    finally:
        sim.close()
