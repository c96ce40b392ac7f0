# SPDX-License-Identifier: GPL-2.0-only
"""File-copy messages as the host and the legacy kernel send them.

The encoders of hv_start_fcopy / hv_do_fcopy / bare headers that Hyper-V
(UTF-16LE names) and drivers/hv/hv_fcopy.c (UTF-8 names) build, and the
legacy daemon's 4-byte status reply as the kernel reads it.  The daemon side
(decoding, the status reply) is hvdaemons.protocol.fcopy, which supplies the
layout.  Pure: bytes in, bytes out.
"""

from __future__ import annotations

import struct

from hvdaemons.errors import ProtocolError
from hvdaemons.protocol.fcopy import (
    DATA_FRAGMENT,
    HDR_SIZE,
    NAME_FIELD_SIZE,
    OFF_COPY_FLAGS,
    OFF_FILE_NAME,
    OFF_FILE_SIZE,
    OFF_PATH_NAME,
    OFF_W_DATA,
    OFF_W_OFFSET,
    OFF_W_SIZE,
    START_SIZE,
    WRITE_SIZE,
    FcopyOp,
)

_I32 = struct.Struct("<i")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


def encode_header(op: int) -> bytes:
    """A 36-byte hv_fcopy_hdr (service ids zero, as the legacy kernel builds them)."""
    return _U32.pack(op) + bytes(HDR_SIZE - 4)


def _name_field(name: str | bytes, utf16: bool) -> bytes:
    if isinstance(name, bytes):
        raw = name  # already the field's content (tests: invalid encodings)
    elif utf16:
        # surrogatepass lets tests build lone surrogates from "\ud800".
        raw = name.encode("utf-16-le", "surrogatepass")
    else:
        raw = name.encode("utf-8", "surrogatepass")
    if len(raw) > NAME_FIELD_SIZE:
        raise ValueError(f"name of {len(raw)} bytes does not fit the {NAME_FIELD_SIZE}-byte field")
    return raw + bytes(NAME_FIELD_SIZE - len(raw))


def encode_start(
    file_name: str | bytes,
    path_name: str | bytes,
    flags: int = 0,
    file_size: int = 0,
    *,
    utf16: bool,
) -> bytes:
    """A 1088-byte hv_start_fcopy; utf16=True is the host's form, False the legacy kernel's.

    bytes names are stored as given (zero-padded), str names encoded.
    """
    msg = bytearray(START_SIZE)
    msg[0:HDR_SIZE] = encode_header(FcopyOp.START)
    msg[OFF_FILE_NAME : OFF_FILE_NAME + NAME_FIELD_SIZE] = _name_field(file_name, utf16)
    msg[OFF_PATH_NAME : OFF_PATH_NAME + NAME_FIELD_SIZE] = _name_field(path_name, utf16)
    _U32.pack_into(msg, OFF_COPY_FLAGS, flags)
    _U64.pack_into(msg, OFF_FILE_SIZE, file_size)
    return bytes(msg)


def encode_write(offset: int, data: bytes, *, size: int | None = None) -> bytes:
    """A full 6196-byte hv_do_fcopy; size overrides the size field (tests: lies)."""
    if len(data) > DATA_FRAGMENT:
        raise ValueError(f"fragment of {len(data)} bytes, at most {DATA_FRAGMENT}")
    msg = bytearray(WRITE_SIZE)
    msg[0:HDR_SIZE] = encode_header(FcopyOp.WRITE)
    _U64.pack_into(msg, OFF_W_OFFSET, offset)
    _U32.pack_into(msg, OFF_W_SIZE, len(data) if size is None else size)
    msg[OFF_W_DATA : OFF_W_DATA + len(data)] = data
    return bytes(msg)


def encode_complete() -> bytes:
    return encode_header(FcopyOp.COMPLETE)


def encode_cancel() -> bytes:
    return encode_header(FcopyOp.CANCEL)


def decode_registration(msg: bytes) -> int:
    """The version a legacy daemon registers with (an int); ProtocolError if msg is no registration."""
    if len(msg) != 4:
        raise ProtocolError(f"registration of {len(msg)} bytes, need 4")
    version: int = _I32.unpack(msg)[0]
    return version


def encode_registration_reply(version: int) -> bytes:
    """hv_fcopy.c's answer to a registration: the version, echoed."""
    return _U32.pack(version)


def decode_status_reply(reply: bytes) -> int:
    if len(reply) != 4:
        raise ProtocolError(f"status reply of {len(reply)} bytes, need 4")
    status: int = _U32.unpack(reply)[0]
    return status
