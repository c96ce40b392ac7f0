# SPDX-License-Identifier: GPL-2.0-only
"""Binding the file-copy VMBus device to uio_hv_generic when the kernel does not.

tools/hv/hv_fcopy_uio_daemon.c leaves this to the administrator (a udev rule
or a shell writing new_id); the daemon does it itself, once, idempotently.
"""

from __future__ import annotations

import errno
import os
import time

from ..log import Once, get
from ..vmbus import FCOPY_CLASS_ID, UIO_DRIVER
from .discovery import driver_name

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Callable

log = get(__name__)

# Time for uio_hv_generic to bind after new_id (or by itself on >= 7.2 kernels).
BIND_GRACE = 1.0
BIND_RETRY = 5.0


def write_attribute(path: str, data: bytes) -> None:
    """One write() to a sysfs attribute (O_NONBLOCK: harmless there, and it keeps
    the simulator's new_id FIFO from blocking us when nobody reads it)."""
    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def run_modprobe(module: str) -> None:
    # Imported here: only an unbound device on an older kernel gets this far.
    import subprocess

    subprocess.run(
        ["modprobe", module], check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


class Binder:
    """Attach the file-copy class to uio_hv_generic through new_id, once, idempotently.

    Kernels before the "bind FCopy by default" change (7.2, stable 6.12.101)
    have no ID table in uio_hv_generic; later ones bind by themselves, so a
    device without a driver is first given BIND_GRACE seconds.  EEXIST (the
    dynamic ID is already there) is success.  A device bound to another
    driver (hv_utils on <= 6.9) is left alone.
    """

    def __init__(
        self,
        sysfs_root: str,
        modprobe: Callable[[str], None] | None = run_modprobe,
        clock: Callable[[], float] = time.monotonic,
        write_attr: Callable[[str, bytes], None] = write_attribute,
    ) -> None:
        self.sysfs_root = sysfs_root
        self._modprobe = modprobe
        self._write_attr = write_attr
        self._clock = clock
        self._first_seen: dict[str, float] = {}
        self._written = False
        self._next_try = 0.0
        self._once = Once(log)

    def driver_dir(self) -> str:
        return os.path.join(self.sysfs_root, "bus", "vmbus", "drivers", UIO_DRIVER)

    def bind(self, vmbus_dir: str) -> None:
        if os.path.isdir(os.path.join(vmbus_dir, "uio")):
            return
        name = driver_name(vmbus_dir)
        if name is not None:
            if name != UIO_DRIVER:
                self._once(
                    log.WARNING,
                    "%s is bound to %s, not %s",
                    vmbus_dir,
                    name,
                    UIO_DRIVER,
                    key=vmbus_dir,
                )
            return
        now = self._clock()
        first = self._first_seen.setdefault(vmbus_dir, now)
        if now - first < BIND_GRACE:
            return  # a kernel that binds by default gets its chance first
        if self._written or now < self._next_try:
            # The dynamic ID is in place (it outlives rescinds): binding is
            # the kernel's job now.  Failed attempts are retried slowly.
            return
        self._next_try = now + BIND_RETRY
        if not os.path.isdir(self.driver_dir()) and self._modprobe is not None:
            self._modprobe(UIO_DRIVER)
        self.write_new_id()

    def write_new_id(self) -> bool:
        """Write the class GUID to uio_hv_generic's new_id; True if it is (now) there."""
        path = os.path.join(self.driver_dir(), "new_id")
        try:
            self._write_attr(path, FCOPY_CLASS_ID.encode())
        except OSError as e:
            if e.errno == errno.EEXIST:
                self._written = True
                return True
            self._once(
                log.ERROR,
                "cannot bind %s via %s: %s",
                FCOPY_CLASS_ID,
                path,
                os.strerror(e.errno or 0),
            )
            return False
        self._written = True
        log.info("asked %s to bind the file-copy device", UIO_DRIVER)
        return True
