# SPDX-License-Identifier: GPL-2.0-only
"""VSS messages (struct hv_vss_msg) as bytes.

Mirrors the message handling of tools/hv/hv_vss_daemon.c and the kernel
side of drivers/hv/hv_snapshot.c (vss_handle_handshake(), vss_on_msg();
docs/protocol.md): a 12-byte
registration with VSS_OP_REGISTER1, a 4-byte u32 kernel reply, then 12-byte
requests answered by 12-byte replies whose first four bytes (the `error`
union member) carry the status.

Pure: bytes in, values (hvdaemons.value) and bytes out.
"""

from __future__ import annotations

import enum
import struct

from .. import _ffi
from ..errors import ProtocolError
from ..value import Value
from .status import HvStatus

MSG_SIZE = _ffi.sizeof("struct hv_vss_msg")  # 12
# The kernel's registration reply is a bare u32, its version, not a message
# (hv_snapshot.c, vss_handle_handshake(); docs/protocol.md, "Registration").
REGISTRATION_REPLY_SIZE = 4
# `error` overlays vss_hdr.operation; both are host byte order, as the C
# daemon writes them.  HV_E_FAIL is above INT_MAX, so pack it unsigned.
_STATUS = struct.Struct("=I")
_STATUS_SIZE = _ffi.field_size("struct hv_vss_msg", "error")


class VssOp(enum.IntEnum):
    """VSS_OP_* of <linux/hyperv.h>, the prefix dropped."""

    CREATE = _ffi.const("VSS_OP_CREATE")
    DELETE = _ffi.const("VSS_OP_DELETE")
    HOT_BACKUP = _ffi.const("VSS_OP_HOT_BACKUP")
    GET_DM_INFO = _ffi.const("VSS_OP_GET_DM_INFO")
    BU_COMPLETE = _ffi.const("VSS_OP_BU_COMPLETE")
    FREEZE = _ffi.const("VSS_OP_FREEZE")
    THAW = _ffi.const("VSS_OP_THAW")
    AUTO_RECOVER = _ffi.const("VSS_OP_AUTO_RECOVER")
    COUNT = _ffi.const("VSS_OP_COUNT")
    REGISTER = _ffi.const("VSS_OP_REGISTER")
    REGISTER1 = _ffi.const("VSS_OP_REGISTER1")


class VssRequest(Value):
    """One kernel -> daemon request."""

    __slots__ = ("op", "raw")

    def __init__(self, op: int, raw: bytes) -> None:
        self.op = op
        self.raw = raw

    @property
    def name(self) -> str:
        return op_name(self.op)


def op_name(op: int) -> str:
    try:
        return VssOp(op).name
    except ValueError:
        return str(op)


def encode_registration() -> bytes:
    """The 12-byte message that registers a daemon (VSS_OP_REGISTER1, rest zero).

    Legacy VSS_OP_REGISTER (128) gets no reply and never makes current
    kernels READY, so it is never sent.
    """
    msg = bytearray(MSG_SIZE)
    msg[0] = VssOp.REGISTER1
    return bytes(msg)


def decode_registration_reply(data: bytes) -> int:
    """The kernel's version from its 4-byte registration reply."""
    if len(data) != REGISTRATION_REPLY_SIZE:
        raise ProtocolError(f"invalid version negotiation: {len(data)}-byte reply, expected 4")
    (version,) = struct.unpack("=I", data)
    return int(version)


def decode_request(data: bytes) -> VssRequest:
    if len(data) != MSG_SIZE:
        raise ProtocolError(f"{len(data)}-byte VSS message, expected {MSG_SIZE}")
    return VssRequest(op=data[0], raw=bytes(data))


def encode_status_reply(req: bytes, status: int) -> bytes:
    """The 12-byte reply: the request with `error` set to status.

    The C daemon writes its request buffer back with only `error` changed,
    so bytes 4..11 echo the request (all zero from a real kernel).
    """
    body = bytes(req[:MSG_SIZE]).ljust(MSG_SIZE, b"\0")
    return _STATUS.pack(status & 0xFFFFFFFF) + body[_STATUS_SIZE:]


__all__ = [
    "MSG_SIZE",
    "REGISTRATION_REPLY_SIZE",
    "HvStatus",
    "VssOp",
    "VssRequest",
    "decode_registration_reply",
    "decode_request",
    "encode_registration",
    "encode_status_reply",
    "op_name",
]
