# SPDX-License-Identifier: GPL-2.0-only
"""Binding the file-copy device to uio_hv_generic (hvdaemons.fcopy.binding).

Real directory trees laid out like /sys; the clock and, for the errno cases
a plain file cannot produce, the attribute writer are injected.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hvdaemons import log
from hvdaemons.fcopy import binding as B
from hvdaemons.fcopy.discovery import driver_name
from hvdaemons.vmbus import FCOPY_CLASS_ID, FCOPY_INSTANCE_ID, UIO_DRIVER
from tests.support.fcopy import vmbus_device


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
    dev = vmbus_device(sysfs, FCOPY_INSTANCE_ID)
    (sysfs / "bus" / "vmbus" / "drivers" / "uio_hv_generic").mkdir(parents=True)
    return sysfs, dev


def test_new_id_written_once_after_the_grace_period(tree: tuple[Path, Path]) -> None:
    sysfs, dev = tree
    clock, writes = Clock(), Writes()
    binder = B.Binder(str(sysfs), None, clock, writes)
    binder.bind(str(dev))
    assert writes.calls == []  # a kernel binding by default gets its chance
    clock.now += B.BIND_GRACE
    binder.bind(str(dev))
    new_id = str(sysfs / "bus/vmbus/drivers/uio_hv_generic/new_id")
    assert writes.calls == [(new_id, FCOPY_CLASS_ID.encode())]
    clock.now += 60
    binder.bind(str(dev))  # not bound yet: still not written twice
    assert len(writes.calls) == 1


def past_the_grace_period(tree: tuple[Path, Path], error: int) -> tuple[B.Binder, Clock, Writes]:
    """A Binder that has seen the unbound device BIND_GRACE ago; new_id writes fail with error."""
    sysfs, dev = tree
    clock, writes = Clock(), Writes(error)
    binder = B.Binder(str(sysfs), None, clock, writes)
    binder.bind(str(dev))
    clock.now += B.BIND_GRACE
    return binder, clock, writes


def test_eexist_means_the_id_is_there(
    tree: tuple[Path, Path], logs: log.Capture
) -> None:
    dev = tree[1]
    binder, clock, writes = past_the_grace_period(tree, errno.EEXIST)
    binder.bind(str(dev))
    clock.now += 60
    binder.bind(str(dev))
    assert len(writes.calls) == 1
    assert not logs.messages(log.WARNING)


def test_failed_write_logged_once_and_retried_slowly(
    tree: tuple[Path, Path], logs: log.Capture
) -> None:
    dev = tree[1]
    binder, clock, writes = past_the_grace_period(tree, errno.ENODEV)
    for _ in range(10):
        binder.bind(str(dev))
        clock.now += 1.0
    assert len(writes.calls) == 2  # at the grace period's end and BIND_RETRY later
    assert len([r for r in logs.records if "cannot bind" in r.message]) == 1


def test_already_bound_or_other_driver_is_left_alone(
    tree: tuple[Path, Path], logs: log.Capture
) -> None:
    sysfs, dev = tree
    clock, writes = Clock(), Writes()
    binder = B.Binder(str(sysfs), None, clock, writes)
    hv_utils = sysfs / "bus" / "vmbus" / "drivers" / "hv_utils"
    hv_utils.mkdir()
    (dev / "driver").symlink_to(hv_utils)
    clock.now += 10
    binder.bind(str(dev))
    binder.bind(str(dev))
    assert writes.calls == []
    assert len([m for m in logs.messages(log.WARNING) if "hv_utils" in m]) == 1
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
    tree: tuple[Path, Path], logs: log.Capture
) -> None:
    """A rescind removes <dev>/driver while the daemon looks at it: not there, not an error.

    os.path.realpath() (lstat, then readlink) raised ENOENT in between, which
    killed the daemon right after a rescind.
    """
    sysfs, dev = tree
    binder = B.Binder(str(sysfs), None, Clock(), Writes())
    link, target = dev / "driver", os.path.relpath(binder.driver_dir(), dev)
    flapper = subprocess.Popen(
        [sys.executable, "-c", _FLAPPING_LINK, str(link), target], stdout=subprocess.PIPE
    )
    try:
        assert flapper.stdout is not None
        flapper.stdout.readline()  # flapping from now on
        for _ in range(20000):
            binder.bind(str(dev))
            assert driver_name(str(dev)) in (None, UIO_DRIVER)
        assert flapper.poll() is None, "the link stopped flapping"
    finally:
        flapper.kill()
        flapper.wait()
        if flapper.stdout is not None:
            flapper.stdout.close()
    # Not "bound to driver" either (realpath of a vanished link).
    assert not logs.messages(log.WARNING)


def test_modprobe_when_the_driver_is_not_loaded(tree: tuple[Path, Path]) -> None:
    sysfs, dev = tree
    (sysfs / "bus" / "vmbus" / "drivers" / "uio_hv_generic").rmdir()
    loaded: list[str] = []
    clock, writes = Clock(), Writes()
    binder = B.Binder(str(sysfs), loaded.append, clock, writes)
    binder.bind(str(dev))
    clock.now += B.BIND_GRACE
    binder.bind(str(dev))
    assert loaded == ["uio_hv_generic"]
    assert len(writes.calls) == 1


def test_real_fifo_without_a_reader_does_not_block(tree: tuple[Path, Path]) -> None:
    """The attribute writer never blocks (the simulator's new_id is a FIFO)."""
    sysfs, _dev = tree
    fifo = sysfs / "bus" / "vmbus" / "drivers" / "uio_hv_generic" / "new_id"
    os.mkfifo(fifo)
    with pytest.raises(OSError) as e:
        B.write_attribute(str(fifo), b"x")
    assert e.value.errno == errno.ENXIO
