# SPDX-License-Identifier: GPL-2.0-only
"""The hv_utils char-device transport of file copy: /dev/vmbus/hv_fcopy (kernels up to 6.9).

Mirrors tools/hv/hv_fcopy_daemon.c: register with FCOPY_CURRENT_VERSION,
then one message per read() and one int status per write(), in
hvdaemons.service's loop (which reopens the device after a reset, e.g. a
hibernation).  The messages go to the shared dispatch; the WRITEs of a running
copy are answered in C by _ffi.FcopyPump.
"""

from __future__ import annotations

from .. import _ffi
from ..errors import ChannelReset
from ..log import get
from ..notify import STATUS_INTERVAL, StatusLine, watchdog_interval
from ..protocol.fcopy import (
    decode_registration_reply,
    encode_registration,
    encode_status_reply,
)
from ..protocol.status import HvStatus
from ..service import Service, Stopper
from ..transport import READ_SIZE, FdChannel
from .dispatch import Dispatch
from .writer import FileCopier

log = get(__name__)

# The pump hands a long copy back to the service loop after this many WRITEs
# (6 MiB), and after a watchdog interval without a message, so that the loop
# keeps pinging systemd's watchdog and the copy's progress shows.
PUMP_BATCH = 1024

DEVICE = "/dev/vmbus/hv_fcopy"
IDENT = "HV_FCOPY"

_REGISTRATION = encode_registration()
_OK_REPLY = encode_status_reply(HvStatus.S_OK)


class FcopyHandler:
    """hvdaemons.service.Handler for /dev/vmbus/hv_fcopy: one int status per message."""

    def __init__(self, copier: FileCopier) -> None:
        self.copier = copier
        # Bound once: this runs for every request the C pump leaves to Python.
        self._status = Dispatch(copier, utf16=False).status

    def registration(self) -> bytes | None:
        return _REGISTRATION

    def registration_reply(self, msg: bytes) -> bool:
        log.info("kernel module version: %u", decode_registration_reply(msg))
        return True

    def handle(self, msg: bytes) -> bytes | None:
        if not msg:
            return None  # PumpChannel woke up with nothing pending
        status = self._status(msg)
        return _OK_REPLY if status == HvStatus.S_OK else encode_status_reply(status)

    def failure_reply(self, msg: bytes) -> bytes | None:
        self.copier.reject(HvStatus.E_FAIL)
        return encode_status_reply(HvStatus.E_FAIL)

    def reset(self) -> None:
        # The kernel answered the host HV_E_FAIL; that copy is over.
        self.copier.abort()

    def stop(self) -> None:
        self.copier.abort()


class PumpChannel(FdChannel):
    """The device channel, with WRITEs of a running copy answered in C.

    While the copier has a file open, read() lets _ffi.FcopyPump serve the
    stream of WRITE_TO_FILE messages (read, pwrite, reply 0: what the C daemon
    does per message) and returns only the first message it did not answer,
    which the handler then treats as usual, failures included.  It returns b""
    when the stop pipe woke it, or the pump handed back a long copy (see
    PUMP_BATCH), with nothing pending; the handler answers that with nothing.  Device errors raise as from FdChannel.read().
    """

    def __init__(
        self, path: str, copier: FileCopier, wake_fd: int, *, timeout: float | None = None
    ) -> None:
        super().__init__(path=path)
        self._copier = copier
        self._wake_fd = wake_fd
        self._pump = _ffi.FcopyPump(READ_SIZE)
        # How long the pump may wait for a message (None: as long as it takes).
        self._timeout_ms = -1 if timeout is None else max(1, int(timeout * 1000))

    def read(self) -> bytes:
        file_fd = self._copier.data_fd
        if file_fd < 0:
            return super().read()
        try:
            msg = self._pump.run(
                self.fileno(), file_fd, self._wake_fd, self._timeout_ms, PUMP_BATCH
            )
        except ConnectionResetError as e:
            raise ChannelReset("end of file on the device") from e
        self._copier.note_progress()
        return msg


def run(device: str, copier: FileCopier, stopper: Stopper, status: StatusLine | None = None) -> int:
    """Serve the char device (or a socket speaking its protocol) until stopped."""
    # The pump comes back at least this often: to ping the watchdog, and to
    # bring the progress line up to date while the host pauses.
    timeout = watchdog_interval()
    if copier.reports_progress:
        timeout = min(timeout or STATUS_INTERVAL, STATUS_INTERVAL)
    channel = PumpChannel(device, copier, stopper.fileno(), timeout=timeout)
    service = Service(
        channel, FcopyHandler(copier), stopper=stopper, device_name=device, status=status
    )
    return service.run()
