# SPDX-License-Identifier: GPL-2.0-only
"""Finding the file-copy device, its driver and its uio node (hvdaemons.fcopy.discovery).

Real directory trees laid out like /sys, the simulator's among them, and the
udev database of this machine.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from hvdaemons import vmbus
from hvdaemons.fcopy import discovery as D
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


def test_pyudev_discovery_runs_on_this_machine() -> None:
    """No Hyper-V here: the udev database has no file-copy device, and asking does not fail."""
    disc = D.PyudevDiscovery()
    assert disc.fcopy_devices() == []
    disc.drain_events()


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
