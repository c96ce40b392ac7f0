# SPDX-License-Identifier: GPL-2.0-only
"""Finding the file-copy device and binding it to uio_hv_generic (hvdaemons.fcopy.uio).

Real directory trees laid out like /sys; the clock and, for the errno cases
a plain file cannot produce, the attribute writer are injected.
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hvdaemons.fcopy import uio

FCOPY = uio.FCOPY_CLASS_ID
INSTANCE = uio.FCOPY_INSTANCE_ID


def vmbus_device(sysfs: Path, instance: str, class_id: str | None) -> Path:
    d = sysfs / "bus" / "vmbus" / "devices" / instance
    d.mkdir(parents=True)
    if class_id is not None:
        (d / "class_id").write_text("{" + class_id + "}\n")
    (d / "device_id").write_text("{" + instance + "}\n")
    return d


def bind_uio(sysfs: Path, dev: Path, name: str, size: int) -> None:
    (dev / "uio" / name).mkdir(parents=True)
    maps = sysfs / "class" / "uio" / name / "maps" / "map0"
    maps.mkdir(parents=True)
    (maps / "size").write_text(f"0x{size:x}\n")


def test_found_by_class_not_by_instance(tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    vmbus_device(
        sysfs, "11111111-2222-3333-4444-555555555555", "a9a0f4e7-5a45-4d96-b827-8a841e8c03e6"
    )
    other = vmbus_device(sysfs, "66666666-2222-3333-4444-555555555555", FCOPY.upper())
    bind_uio(sysfs, other, "uio4", 0xA000)
    disc = uio.SysfsDiscovery(str(sysfs), "/devroot")
    assert disc.fcopy_devices() == [str(other)]
    dev = uio.find_uio_device(str(sysfs), "/devroot", disc)
    assert dev == uio.UioDevice(str(other), "uio4", "/devroot/uio4", 0xA000)
    assert dev.ring_size == 0x5000


def test_fixed_instance_is_a_fallback_when_class_id_is_unreadable(tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    dev = vmbus_device(sysfs, INSTANCE, None)
    assert uio.SysfsDiscovery(str(sysfs)).fcopy_devices() == [str(dev)]


def test_map_size_is_hex_text(tmp_path: Path) -> None:
    d = tmp_path / "maps" / "map0"
    d.mkdir(parents=True)
    (d / "size").write_text("0x8000\n")
    assert uio.map_size(str(tmp_path)) == 0x8000
    (d / "size").write_text("garbage\n")
    assert uio.map_size(str(tmp_path)) is None


def test_nothing_there(tmp_path: Path) -> None:
    assert uio.find_uio_device(str(tmp_path), str(tmp_path)) is None


def test_pyudev_discovery_runs_on_this_machine() -> None:
    """No Hyper-V here: the udev database has no file-copy device, and asking does not fail."""
    disc = uio.PyudevDiscovery()
    assert disc.fcopy_devices() == []
    disc.drain_events()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Writes:
    def __init__(self, error: int = 0) -> None:
        self.calls: list[tuple[str, bytes]] = []
        self.error = error

    def __call__(self, path: str, data: bytes) -> None:
        self.calls.append((path, data))
        if self.error:
            raise OSError(self.error, os.strerror(self.error))


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    sysfs = tmp_path / "sys"
    dev = vmbus_device(sysfs, INSTANCE, FCOPY)
    (sysfs / "bus" / "vmbus" / "drivers" / "uio_hv_generic").mkdir(parents=True)
    return sysfs, dev


def test_new_id_written_once_after_the_grace_period(tree: tuple[Path, Path]) -> None:
    sysfs, dev = tree
    clock, writes = Clock(), Writes()
    binder = uio.Binder(str(sysfs), None, clock, writes)
    binder.bind(str(dev))
    assert writes.calls == []  # a kernel binding by default gets its chance
    clock.now += uio.BIND_GRACE
    binder.bind(str(dev))
    new_id = str(sysfs / "bus/vmbus/drivers/uio_hv_generic/new_id")
    assert writes.calls == [(new_id, FCOPY.encode())]
    clock.now += 60
    binder.bind(str(dev))  # not bound yet: still not written twice
    assert len(writes.calls) == 1


def test_eexist_means_the_id_is_there(
    tree: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    sysfs, dev = tree
    clock, writes = Clock(), Writes(errno.EEXIST)
    binder = uio.Binder(str(sysfs), None, clock, writes)
    binder.bind(str(dev))
    clock.now += uio.BIND_GRACE
    with caplog.at_level(logging.INFO):
        binder.bind(str(dev))
        clock.now += 60
        binder.bind(str(dev))
    assert len(writes.calls) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_failed_write_logged_once_and_retried_slowly(
    tree: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    sysfs, dev = tree
    clock, writes = Clock(), Writes(errno.ENODEV)
    binder = uio.Binder(str(sysfs), None, clock, writes)
    binder.bind(str(dev))
    clock.now += uio.BIND_GRACE
    with caplog.at_level(logging.INFO):
        for _ in range(10):
            binder.bind(str(dev))
            clock.now += 1.0
    assert len(writes.calls) == 2  # at the grace period's end and BIND_RETRY later
    assert len([r for r in caplog.records if "cannot bind" in r.getMessage()]) == 1


def test_already_bound_or_other_driver_is_left_alone(
    tree: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    sysfs, dev = tree
    clock, writes = Clock(), Writes()
    binder = uio.Binder(str(sysfs), None, clock, writes)
    hv_utils = sysfs / "bus" / "vmbus" / "drivers" / "hv_utils"
    hv_utils.mkdir()
    (dev / "driver").symlink_to(hv_utils)
    clock.now += 10
    with caplog.at_level(logging.WARNING):
        binder.bind(str(dev))
        binder.bind(str(dev))
    assert writes.calls == []
    assert len([r for r in caplog.records if "hv_utils" in r.getMessage()]) == 1
    (dev / "driver").unlink()
    (dev / "uio").mkdir()
    binder.bind(str(dev))
    assert writes.calls == []


# Creates and removes PATH -> TARGET as fast as it can, as rescinds and re-offers do.
_FLAPPING_LINK = """
import os, sys
path, target = sys.argv[1:]
print(flush=True)
while True:
    os.symlink(target, path)
    os.unlink(path)
"""


def test_driver_link_vanishing_under_the_scan(
    tree: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """A rescind removes <dev>/driver while the daemon looks at it: not there, not an error.

    os.path.realpath() (lstat, then readlink) raised ENOENT in between, which
    killed the daemon right after a rescind.
    """
    sysfs, dev = tree
    binder = uio.Binder(str(sysfs), None, Clock(), Writes())
    link, target = dev / "driver", os.path.relpath(binder.driver_dir(), dev)
    flapper = subprocess.Popen(
        [sys.executable, "-c", _FLAPPING_LINK, str(link), target], stdout=subprocess.PIPE
    )
    try:
        assert flapper.stdout is not None
        flapper.stdout.readline()  # flapping from now on
        with caplog.at_level(logging.WARNING):
            for _ in range(20000):
                binder.bind(str(dev))
                assert uio.driver_name(str(dev)) in (None, uio.UIO_DRIVER)
        assert flapper.poll() is None, "the link stopped flapping"
    finally:
        flapper.kill()
        flapper.wait()
        if flapper.stdout is not None:
            flapper.stdout.close()
    assert not caplog.records  # not "bound to driver" either (realpath of a vanished link)


def test_modprobe_when_the_driver_is_not_loaded(tree: tuple[Path, Path]) -> None:
    sysfs, dev = tree
    (sysfs / "bus" / "vmbus" / "drivers" / "uio_hv_generic").rmdir()
    loaded: list[str] = []
    clock, writes = Clock(), Writes()
    binder = uio.Binder(str(sysfs), loaded.append, clock, writes)
    binder.bind(str(dev))
    clock.now += uio.BIND_GRACE
    binder.bind(str(dev))
    assert loaded == ["uio_hv_generic"]
    assert len(writes.calls) == 1


def test_real_fifo_without_a_reader_does_not_block(tree: tuple[Path, Path]) -> None:
    """The attribute writer never blocks (the simulator's new_id is a FIFO)."""
    sysfs, _dev = tree
    fifo = sysfs / "bus" / "vmbus" / "drivers" / "uio_hv_generic" / "new_id"
    os.mkfifo(fifo)
    with pytest.raises(OSError) as e:
        uio.write_attribute(str(fifo), b"x")
    assert e.value.errno == errno.ENXIO
