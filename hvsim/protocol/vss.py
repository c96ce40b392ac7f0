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
_RESERVED = _ffi.offsetof("struct hv_vss_msg", "vss_hdr", "reserved")
RESERVED_SIZE = _ffi.field_size("struct hv_vss_msg", "vss_hdr", "reserved")


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


def encode_host_message(
    op: int, *, flags: int = 0, reserved: bytes = b"", lun_info: int = 0, size: int | None = None
) -> bytes:
    """The body of a host's ICMSGTYPE_VSS packet: a struct hv_vss_msg, then lun_info bytes.

    reserved fills vss_hdr.reserved; size, if given, cuts the body to that
    many bytes (a malformed packet).
    """
    msg = bytearray(encode_request(op, flags))
    if len(reserved) > RESERVED_SIZE:
        raise ValueError(f"vss_hdr.reserved holds {RESERVED_SIZE} bytes")
    msg[_RESERVED : _RESERVED + len(reserved)] = reserved
    body = bytes(msg) + bytes(lun_info)
    return body if size is None else body[:size]


def encode_forwarded_message(op: int) -> bytes:
    """What vss_send_op() hands to the daemon: a zeroed hv_vss_msg carrying only the op."""
    msg = bytearray(MSG_SIZE)
    msg[0] = op
    return bytes(msg)
