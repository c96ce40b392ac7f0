# SPDX-License-Identifier: GPL-2.0-only
"""VSS messages as the kernel side builds and reads them (drivers/hv/hv_snapshot.c).

The daemon side is hvdaemons.protocol.vss.  Pure: bytes in, ints and bytes out.
"""

from __future__ import annotations

import struct

from hvdaemons import _ffi
from hvdaemons.errors import ProtocolError
from hvdaemons.protocol.vss import MSG_SIZE, VssOp

# The reply's status is the `error` member, in host byte order.
_STATUS = struct.Struct("=I")
_STATUS_SIZE = _ffi.field_size("struct hv_vss_msg", "error")


def encode_registration_reply() -> bytes:
    """The kernel's answer to VSS_OP_REGISTER1: its version, a bare u32."""
    return _STATUS.pack(VssOp.REGISTER1)


def encode_request(op: int, flags: int = 0) -> bytes:
    """A request as the kernel builds it (host side of the simulator)."""
    msg = bytearray(MSG_SIZE)
    msg[0] = op
    off = _ffi.offsetof("struct hv_vss_msg", "vss_cf")
    struct.pack_into("=I", msg, off, flags)
    return bytes(msg)


def decode_status_reply(data: bytes) -> int:
    """The status of a daemon's reply (host side of the simulator)."""
    if len(data) < _STATUS_SIZE:
        raise ProtocolError(f"{len(data)}-byte VSS reply")
    (status,) = _STATUS.unpack_from(data)
    return int(status)
