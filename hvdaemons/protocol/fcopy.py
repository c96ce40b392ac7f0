# SPDX-License-Identifier: GPL-2.0-only
"""File-copy (FCopy) messages: bytes in, values (hvdaemons.value) out, and back.

Mirrors the message handling of tools/hv/hv_fcopy_daemon.c (legacy
/dev/vmbus/hv_fcopy, where the kernel has already turned the names into
UTF-8) and tools/hv/hv_fcopy_uio_daemon.c (raw host messages with UTF-16LE
names).  Layouts and
constants come from <linux/hyperv.h> through _ffi; nothing here touches a
file descriptor.  The host's and the kernel's encoders are the simulator's
(hvsim.protocol.fcopy).

Unlike the reference daemons, names are decoded strictly: UTF-16 with full
surrogate-pair handling (a lone surrogate is refused), UTF-8 validated, and a
WRITE whose size exceeds the fragment or the bytes actually received is
refused instead of copying whatever lies beyond the message.
"""

from __future__ import annotations

import enum
import struct

from .. import _ffi
from ..errors import ProtocolError
from ..value import Value

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Union

START_SIZE = _ffi.sizeof("struct hv_start_fcopy")  # 1088
WRITE_SIZE = _ffi.sizeof("struct hv_do_fcopy")  # 6196
HDR_SIZE = _ffi.sizeof("struct hv_fcopy_hdr")  # 36
W_MAX_PATH = _ffi.const("W_MAX_PATH")  # 260 UTF-16 code units per name field
DATA_FRAGMENT = _ffi.const("DATA_FRAGMENT")  # 6144

NAME_FIELD_SIZE = _ffi.field_size("struct hv_start_fcopy", "file_name")  # 520 bytes
OFF_FILE_NAME = _ffi.offsetof("struct hv_start_fcopy", "file_name")
OFF_PATH_NAME = _ffi.offsetof("struct hv_start_fcopy", "path_name")
OFF_COPY_FLAGS = _ffi.offsetof("struct hv_start_fcopy", "copy_flags")
OFF_FILE_SIZE = _ffi.offsetof("struct hv_start_fcopy", "file_size")
OFF_W_OFFSET = _ffi.offsetof("struct hv_do_fcopy", "offset")
OFF_W_SIZE = _ffi.offsetof("struct hv_do_fcopy", "size")
OFF_W_DATA = _ffi.offsetof("struct hv_do_fcopy", "data")

# loff_t is a signed 64-bit count: pwrite(2) refuses data that would end beyond it.
MAX_FILE_OFFSET = (1 << 63) - 1

FCOPY_CURRENT_VERSION = _ffi.const("FCOPY_CURRENT_VERSION")
OVER_WRITE = _ffi.const("OVER_WRITE")
CREATE_PATH = _ffi.const("CREATE_PATH")

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class FcopyOp(enum.IntEnum):
    """enum hv_fcopy_op, values from the kernel header."""

    START = _ffi.const("START_FILE_COPY")
    WRITE = _ffi.const("WRITE_TO_FILE")
    COMPLETE = _ffi.const("COMPLETE_FCOPY")
    CANCEL = _ffi.const("CANCEL_FCOPY")


class FcopyDecodeError(ProtocolError):
    """A file-copy message that cannot be honoured; the host gets HV_E_FAIL."""


class UnknownOperation(FcopyDecodeError):
    def __init__(self, op: int) -> None:
        super().__init__(f"Unknown operation: {op}")
        self.op = op


class StartCopy(Value):
    """START_FILE_COPY: create path_name/file_name."""

    __slots__ = ("file_name", "path_name", "flags", "file_size")

    def __init__(self, file_name: str, path_name: str, flags: int = 0, file_size: int = 0) -> None:
        self.file_name = file_name
        self.path_name = path_name
        self.flags = flags
        self.file_size = file_size

    @property
    def overwrite(self) -> bool:
        return bool(self.flags & OVER_WRITE)

    @property
    def create_path(self) -> bool:
        return bool(self.flags & CREATE_PATH)


class WriteData(Value):
    """WRITE_TO_FILE: data (at most one fragment) at a file offset."""

    __slots__ = ("offset", "data")

    def __init__(self, offset: int, data: bytes) -> None:
        self.offset = offset
        self.data = data


class CompleteCopy(Value):
    """COMPLETE_FCOPY: the host has sent every fragment."""

    __slots__ = ()


class CancelCopy(Value):
    """CANCEL_FCOPY: the host gave up (or the guest hibernates)."""

    __slots__ = ()


if TYPE_CHECKING:
    FcopyMessage = Union[StartCopy, WriteData, CompleteCopy, CancelCopy]


# -- decoding ---------------------------------------------------------------


def decode_operation(msg: bytes) -> int:
    """The op of a message (first u32), or raise FcopyDecodeError if there is none."""
    if len(msg) < 4:
        raise FcopyDecodeError(f"message of {len(msg)} bytes has no operation")
    op: int = _U32.unpack_from(msg)[0]
    return op


def decode_utf8_name(field: bytes, what: str) -> str:
    """A name as the legacy kernel delivers it: UTF-8 up to the first NUL."""
    end = field.find(b"\0")
    raw = field if end < 0 else field[:end]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FcopyDecodeError(
            f"{what} is not valid UTF-8 ({e.reason} at byte {e.start})"
        ) from None


def decode_utf16_name(field: bytes, what: str) -> str:
    """A name as the host sends it: UTF-16LE up to the first NUL code unit.

    Surrogate pairs become one code point; a lone surrogate is refused (the
    reference UIO daemon mangles every non-ASCII unit instead).  A field
    filled without a terminator is taken whole, as the kernel's
    utf16s_to_utf8s(…, W_MAX_PATH, …) does.
    """
    end = len(field) - len(field) % 2
    for i in range(0, end, 2):
        if field[i] == 0 and field[i + 1] == 0:
            end = i
            break
    try:
        return field[:end].decode("utf-16-le")
    except UnicodeDecodeError as e:
        raise FcopyDecodeError(
            f"{what} is not valid UTF-16 ({e.reason} at code unit {e.start // 2})"
        ) from None


def _decode_start(msg: bytes, utf16: bool) -> StartCopy:
    if len(msg) < START_SIZE:
        raise FcopyDecodeError(f"START_FILE_COPY of {len(msg)} bytes, need {START_SIZE}")
    decode_name = decode_utf16_name if utf16 else decode_utf8_name
    return StartCopy(
        file_name=decode_name(msg[OFF_FILE_NAME : OFF_FILE_NAME + NAME_FIELD_SIZE], "file_name"),
        path_name=decode_name(msg[OFF_PATH_NAME : OFF_PATH_NAME + NAME_FIELD_SIZE], "path_name"),
        flags=_U32.unpack_from(msg, OFF_COPY_FLAGS)[0],
        file_size=_U64.unpack_from(msg, OFF_FILE_SIZE)[0],
    )


_W_OFFSET_SIZE = struct.Struct("<QI")
assert OFF_W_SIZE == OFF_W_OFFSET + 8


def decode_write_payload(msg: bytes) -> tuple[int, memoryview]:
    """(offset, data) of a WRITE_TO_FILE without copying the data: the daemons' hot path.

    Validates like decode_message(): size at most one fragment and within the message,
    the last byte within a file offset (loff_t).  The C fast paths check the
    same (fast_write() in bindings/fcopy.c, fast_write_ok() in bindings/ring.c);
    tests/protocol/test_fcopy_write.py holds all three to one table.
    """
    if len(msg) < OFF_W_DATA:
        raise FcopyDecodeError(f"WRITE_TO_FILE of {len(msg)} bytes, need at least {OFF_W_DATA}")
    offset, size = _W_OFFSET_SIZE.unpack_from(msg, OFF_W_OFFSET)
    if size > DATA_FRAGMENT:
        raise FcopyDecodeError(
            f"WRITE_TO_FILE of {size} bytes exceeds the {DATA_FRAGMENT}-byte fragment"
        )
    if OFF_W_DATA + size > len(msg):
        raise FcopyDecodeError(
            f"WRITE_TO_FILE claims {size} bytes but only {len(msg) - OFF_W_DATA} arrived"
        )
    if offset > MAX_FILE_OFFSET - size:
        raise FcopyDecodeError(
            f"WRITE_TO_FILE of {size} bytes at offset {offset} is beyond the largest file offset"
        )
    return offset, memoryview(msg)[OFF_W_DATA : OFF_W_DATA + size]


def _decode_write(msg: bytes) -> WriteData:
    offset, data = decode_write_payload(msg)
    return WriteData(offset, bytes(data))


def decode_message(msg: bytes, *, utf16: bool) -> FcopyMessage:
    """Decode one FCopy message (starting at its hv_fcopy_hdr).

    utf16=False: names in the UTF-8 form the legacy kernel delivers on
    /dev/vmbus/hv_fcopy; True: the host's UTF-16LE, as the uio transport
    receives them.  COMPLETE and CANCEL need only the op: the legacy kernel
    delivers them with 28 stale trailing bytes, and its hibernation CANCEL is
    a bare header (drivers/hv/hv_fcopy.c, fcopy_send_data() and
    hv_fcopy_pre_suspend(); docs/protocol.md).
    """
    op = decode_operation(msg)
    if op == FcopyOp.WRITE:
        return _decode_write(msg)
    if op == FcopyOp.START:
        return _decode_start(msg, utf16)
    if op == FcopyOp.COMPLETE:
        return CompleteCopy()
    if op == FcopyOp.CANCEL:
        return CancelCopy()
    raise UnknownOperation(op)


# -- the legacy char device's registration and replies ---------------------------

_VERSION = struct.Struct("<i")


def encode_registration() -> bytes:
    """What the legacy daemon writes after open(): FCOPY_CURRENT_VERSION as an int."""
    return _VERSION.pack(FCOPY_CURRENT_VERSION)


def decode_registration_reply(data: bytes) -> int:
    """The kernel's version from its 4-byte registration reply."""
    if len(data) != 4:
        raise ProtocolError("invalid version negotiation")
    version: int = _U32.unpack(data)[0]
    return version


def encode_status_reply(status: int) -> bytes:
    """The legacy daemon's 4-byte reply (an int holding the HRESULT)."""
    return _U32.pack(status & 0xFFFFFFFF)
