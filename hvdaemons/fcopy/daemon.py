# SPDX-License-Identifier: GPL-2.0-only
"""hv_fcopy_daemon / hv_fcopy_uio_daemon: the host pushes files into the guest.

Mirrors tools/hv/hv_fcopy_daemon.c (the hv_utils char device
/dev/vmbus/hv_fcopy, kernels up to 6.9) and tools/hv/hv_fcopy_uio_daemon.c
(the VMBus channel through uio_hv_generic, kernels from 6.10) in one
executable, installed under both names.  It serves whichever transport the
running kernel offers:

1. --device PATH given, or /dev/vmbus/hv_fcopy present: the char device;
2. a VMBus device of the file-copy class (34d14be3-...) not owned by hv_utils:
   the uio transport (hvdaemons.fcopy.uio binds it to uio_hv_generic if the
   kernel does not);
3. neither yet (the daemon started before the driver, or the host's Guest
   Service Interface is off): wait, saying so once, until one appears.

Syslog idents are upstream's: HV_FCOPY for the char device, HV_UIO_FCOPY for
uio.  File handling (both transports) is hvdaemons.fcopy.writer.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import struct
import sys
from collections.abc import Sequence

from .. import _ffi, cli
from .. import log as hvlog
from ..errors import ChannelReset, ProtocolError
from ..protocol.fcopy import (
    E_FAIL,
    S_OK,
    CancelCopy,
    CompleteCopy,
    FcopyDecodeError,
    FcopyOp,
    StartCopy,
    WriteData,
    decode_kernel,
    encode_status,
    write_payload,
)
from ..service import Service, Stopper
from ..transport import READ_SIZE, FdChannel
from . import uio
from .writer import FileCopier

log = logging.getLogger(__name__)

LEGACY_DEVICE = "/dev/vmbus/hv_fcopy"
LEGACY_IDENT = "HV_FCOPY"
UIO_IDENT = "HV_UIO_FCOPY"
PROGS = ("hv_fcopy_daemon", "hv_fcopy_uio_daemon")
# The hv_utils driver owns the file-copy channel on kernels with the char device.
HV_UTILS_DRIVER = "hv_utils"
RESCAN_INTERVAL = 1.0

_REGISTRATION = struct.pack("<i", _ffi.const("FCOPY_CURRENT_VERSION"))
_WRITE_OP = struct.pack("<I", FcopyOp.WRITE)
_OK_REPLY = encode_status(S_OK)


class FcopyHandler:
    """hvdaemons.service.Handler for /dev/vmbus/hv_fcopy: one int status per message."""

    def __init__(self, copier: FileCopier) -> None:
        self.copier = copier
        self._bad_logged = False

    def registration(self) -> bytes | None:
        return _REGISTRATION

    def registration_reply(self, msg: bytes) -> bool:
        if len(msg) != 4:
            raise ProtocolError("invalid version negotiation")
        log.info("kernel module version: %u", struct.unpack("<I", msg)[0])
        return True

    def handle(self, msg: bytes) -> bytes | None:
        if not msg:
            return None  # PumpChannel woke up with nothing pending
        status = self.status(msg)
        return _OK_REPLY if status == S_OK else encode_status(status)

    def status(self, msg: bytes) -> int:
        """Carry out one request; the status for the host."""
        try:
            if msg[:4] == _WRITE_OP:
                # Nearly every message during a copy: no dataclass, no copy of the data.
                return self.copier.write(*write_payload(msg))
            req = decode_kernel(msg)
        except FcopyDecodeError as e:
            # One line per copy: a host repeating the mistake gets statuses, not a flood.
            if not self._bad_logged:
                log.error("%s", e)
                self._bad_logged = True
            return self.copier.reject(E_FAIL)
        if isinstance(req, WriteData):
            return self.copier.write(req.offset, req.data)
        if isinstance(req, StartCopy):
            self._bad_logged = False
            return self.copier.start(req)
        if isinstance(req, CompleteCopy):
            return self.copier.complete()
        assert isinstance(req, CancelCopy)
        return self.copier.cancel()

    def failure_reply(self, msg: bytes) -> bytes | None:
        self.copier.reject(E_FAIL)
        return encode_status(E_FAIL)

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
    when the stop pipe woke it with nothing pending; the handler answers
    that with nothing.  Device errors raise as from FdChannel.read().
    """

    def __init__(self, path: str, copier: FileCopier, wake_fd: int) -> None:
        super().__init__(path=path)
        self._copier = copier
        self._wake_fd = wake_fd
        self._pump = _ffi.FcopyPump(READ_SIZE)

    def read(self) -> bytes:
        file_fd = self._copier.data_fd
        if file_fd < 0:
            return super().read()
        try:
            return self._pump.run(self.fileno(), file_fd, self._wake_fd)
        except ConnectionResetError as e:
            raise ChannelReset("end of file on the device") from e


def run_legacy(device: str, stopper: Stopper, copier: FileCopier | None = None) -> int:
    """Serve the char device (or a socket speaking its protocol) until stopped."""
    copier = copier if copier is not None else FileCopier()
    channel = PumpChannel(device, copier, stopper.fileno())
    service = Service(channel, FcopyHandler(copier), stopper=stopper, device_name=device)
    return service.run()


def choose_transport(legacy_path: str, discovery: uio.Discovery, stopper: Stopper) -> str | None:
    """ "legacy" or "uio" once the kernel offers one; None if stopped while waiting."""
    announced = False
    while not stopper.requested:
        if os.path.exists(legacy_path):
            return "legacy"
        for vmbus_dir in discovery.fcopy_devices():
            # hv_utils owns the channel on <= 6.9: its char device is on the way.
            return "legacy" if uio.driver_name(vmbus_dir) == HV_UTILS_DRIVER else "uio"
        if not announced:
            log.info(
                "waiting for %s or a file-copy VMBus device (class %s)",
                legacy_path,
                uio.FCOPY_CLASS_ID,
            )
            announced = True
        fds = [stopper.fileno()]
        wake = discovery.wake_fd()
        if wake is not None:
            fds.append(wake)
        try:
            ready, _, _ = select.select(fds, [], [], RESCAN_INTERVAL)
        except InterruptedError:
            continue
        if wake is not None and wake in ready:
            discovery.drain_events()
        if stopper.fileno() in ready:
            stopper.drain()
    return None


def serve(args: argparse.Namespace, stopper: Stopper, ident: str) -> int:
    log.info("starting; pid is:%d", os.getpid())
    if args.device is not None:
        transport: str | None = "legacy"
    else:
        discovery = uio.make_discovery(args.sysfs_root, args.dev_root)
        transport = choose_transport(LEGACY_DEVICE, discovery, stopper)
    if transport is None:
        return 0
    wanted = LEGACY_IDENT if transport == "legacy" else UIO_IDENT
    if wanted != ident:
        hvlog.setup(wanted, foreground=bool(args.no_daemon))
    if transport == "legacy":
        return run_legacy(args.device or LEGACY_DEVICE, stopper)
    return uio.run(args, stopper)


def parser(prog: str) -> argparse.ArgumentParser:
    p = cli.parser(prog, "Hyper-V host-to-guest file copy daemon (char device or uio)", None)
    p.add_argument(
        "--device",
        action=cli.ExistingDevice,
        default=None,
        metavar="PATH",
        help=f"use the char-device transport at PATH (a device, or a SOCK_SEQPACKET socket "
        f"serving its protocol); default: {LEGACY_DEVICE} if present, else uio",
    )
    uio.add_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    prog = name if name in PROGS else PROGS[0]
    args = parser(prog).parse_args(argv)
    ident = UIO_IDENT if prog == "hv_fcopy_uio_daemon" else LEGACY_IDENT
    return cli.run(prog, ident, args, lambda stopper: serve(args, stopper, ident))


if __name__ == "__main__":
    sys.exit(main())
