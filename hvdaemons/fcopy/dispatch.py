# SPDX-License-Identifier: GPL-2.0-only
"""One file-copy request, from either transport, carried out by the FileCopier.

Mirrors the switch on hdr.operation in the main loops of
tools/hv/hv_fcopy_daemon.c and tools/hv/hv_fcopy_uio_daemon.c.  Both
transports hand over the message from its struct hv_fcopy_hdr on and send back
the status returned here; they differ only in how names are encoded (UTF-8
from the hv_utils char device, UTF-16LE straight from the host).  The WRITEs
of a running copy usually never get here: the transports' C fast paths serve
them, and hand over anything unusual.
"""

from __future__ import annotations

import struct

from ..log import Once, get
from ..protocol.fcopy import (
    CancelCopy,
    CompleteCopy,
    FcopyDecodeError,
    FcopyOp,
    StartCopy,
    decode_message,
    decode_write_payload,
)
from ..protocol.status import HvStatus
from .writer import FileCopier

log = get(__name__)

_WRITE_OP = struct.pack("<I", FcopyOp.WRITE)


class Dispatch:
    """Calls the FileCopier for one message and returns the host's status."""

    def __init__(self, copier: FileCopier, *, utf16: bool) -> None:
        self.copier = copier
        self._utf16 = utf16
        # One line per copy: a host repeating a mistake gets statuses, not a flood.
        self._bad = Once(log)

    def status(self, msg: bytes) -> int:
        """Carry out one message (from its hv_fcopy_hdr on); the status for the host."""
        copier = self.copier
        try:
            if msg[:4] == _WRITE_OP:
                # Most messages of a copy (those the C fast paths leave to us among
                # them): no dataclass, no copy of the data.
                return copier.write(*decode_write_payload(msg))
            req = decode_message(msg, utf16=self._utf16)
            if isinstance(req, StartCopy):
                self._bad.reset()
                return copier.start(req)
            if isinstance(req, CompleteCopy):
                return copier.complete()
            # A WRITE never gets this far: its op took the first branch.
            assert isinstance(req, CancelCopy)
            return copier.cancel()
        except FcopyDecodeError as e:
            self._bad(log.ERROR, "%s", e)
            # Data may be missing now: the copy fails as a failed WRITE would.
            return copier.reject(HvStatus.E_FAIL)
        except Exception:  # a bug must fail the request and its copy, not the daemon
            log.exception("file copy request failed")
            return copier.reject(HvStatus.E_FAIL)
