# SPDX-License-Identifier: GPL-2.0-only
"""KVP messages (struct hv_kvp_msg, 7432 bytes): decode, and build replies.

Mirrors the message handling of tools/hv/hv_kvp_daemon.c: every offset and
constant comes from <linux/hyperv.h> through _ffi.

decode_request() turns a message into a Value (hvdaemons.value); the
encode_*_reply functions build the reply the way the reference does, from the message *as
received*: the status overwrites bytes 0-3 (the error field overlays the
header) and everything else stays as the kernel sent it, except the fields
the operation fills in.  The kernel side (drivers/hv/hv_kvp.c) is the
simulator's: hvsim.protocol.kvp.

Strings between kernel and daemon are NUL-terminated UTF-8 byte strings.
The daemon side keeps them as bytes (pool files are byte-exact); text is
decoded only where a helper needs it (IP fields, decoded with
surrogateescape so nothing is lost).
"""

from __future__ import annotations

import enum
import struct

from .. import _ffi
from ..errors import ProtocolError
from ..value import Value
from .status import HvStatus

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Union

_M = "struct hv_kvp_msg"

KVP_MSG_SIZE = _ffi.sizeof(_M)  # 7432
MAX_KEY_SIZE = _ffi.const("HV_KVP_EXCHANGE_MAX_KEY_SIZE")  # 512
MAX_VALUE_SIZE = _ffi.const("HV_KVP_EXCHANGE_MAX_VALUE_SIZE")  # 2048
# A pool file record is the key and value arrays back to back (struct
# kvp_record in hv_kvp_daemon.c): 2560 bytes.
RECORD_SIZE = MAX_KEY_SIZE + MAX_VALUE_SIZE
POOL_COUNT = _ffi.const("KVP_POOL_COUNT")  # 5
# GET_IP_INFO's addr_family bits (the daemon reports the families it found).
ADDR_FAMILY_IPV4 = _ffi.const("ADDR_FAMILY_IPV4")
ADDR_FAMILY_IPV6 = _ffi.const("ADDR_FAMILY_IPV6")
ADDR_FAMILY_NONE = _ffi.const("ADDR_FAMILY_NONE")
# The most drivers/hv/hv_kvp.c passes between daemon and host, in UTF-16 code
# units: the kvp_ip_val strings (process_ib_ipinfo()), and the key and value
# of an ENUMERATE or GET answer (kvp_respond_to_host(), utf8s_to_utf16s()).
MAX_ADAPTER_ID_SIZE = _ffi.const("MAX_ADAPTER_ID_SIZE")
MAX_IP_ADDR_SIZE = _ffi.const("MAX_IP_ADDR_SIZE")
MAX_GATEWAY_SIZE = _ffi.const("MAX_GATEWAY_SIZE")
HOST_KEY_UNITS = MAX_KEY_SIZE // 2 - 2  # 254
HOST_VALUE_UNITS = MAX_VALUE_SIZE // 2 - 2  # 1022


class KvpOp(enum.IntEnum):
    """enum hv_kvp_exchg_op, plus the current registration op."""

    GET = _ffi.const("KVP_OP_GET")
    SET = _ffi.const("KVP_OP_SET")
    DELETE = _ffi.const("KVP_OP_DELETE")
    ENUMERATE = _ffi.const("KVP_OP_ENUMERATE")
    GET_IP_INFO = _ffi.const("KVP_OP_GET_IP_INFO")
    SET_IP_INFO = _ffi.const("KVP_OP_SET_IP_INFO")
    REGISTER1 = _ffi.const("KVP_OP_REGISTER1")


class KvpPool(enum.IntEnum):
    """enum hv_kvp_exchg_pool."""

    EXTERNAL = _ffi.const("KVP_POOL_EXTERNAL")
    GUEST = _ffi.const("KVP_POOL_GUEST")
    AUTO = _ffi.const("KVP_POOL_AUTO")
    AUTO_EXTERNAL = _ffi.const("KVP_POOL_AUTO_EXTERNAL")
    AUTO_INTERNAL = _ffi.const("KVP_POOL_AUTO_INTERNAL")


# -- offsets -------------------------------------------------------------------

OFF_STATUS = _ffi.offsetof(_M, "error")
OFF_OP = _ffi.offsetof(_M, "kvp_hdr", "operation")
OFF_POOL = _ffi.offsetof(_M, "kvp_hdr", "pool")

# GET and SET share one view (kvp_get.data / kvp_set.data).
OFF_KV_VALUE_TYPE = _ffi.offsetof(_M, "body", "kvp_set", "data", "value_type")  # 4
OFF_KV_KEY_SIZE = _ffi.offsetof(_M, "body", "kvp_set", "data", "key_size")  # 8
OFF_KV_VALUE_SIZE = _ffi.offsetof(_M, "body", "kvp_set", "data", "value_size")  # 12
OFF_KV_KEY = _ffi.offsetof(_M, "body", "kvp_set", "data", "key")  # 16
OFF_KV_VALUE = _ffi.offsetof(_M, "body", "kvp_set", "data", "value")  # 528

OFF_DEL_KEY_SIZE = _ffi.offsetof(_M, "body", "kvp_delete", "key_size")  # 4
OFF_DEL_KEY = _ffi.offsetof(_M, "body", "kvp_delete", "key")  # 8

# The ENUMERATE view is 4 bytes further on: index comes first.
OFF_ENUM_INDEX = _ffi.offsetof(_M, "body", "kvp_enum_data", "index")  # 4
OFF_ENUM_KEY = _ffi.offsetof(_M, "body", "kvp_enum_data", "data", "key")  # 20
OFF_ENUM_VALUE = _ffi.offsetof(_M, "body", "kvp_enum_data", "data", "value")  # 532

# The key and value arrays are adjacent in both views (replies rely on it).
assert OFF_ENUM_KEY + MAX_KEY_SIZE == OFF_ENUM_VALUE and OFF_KV_KEY + MAX_KEY_SIZE == OFF_KV_VALUE

OFF_REG_VERSION = _ffi.offsetof(_M, "body", "kvp_register", "version")  # 4
REG_VERSION_SIZE = _ffi.field_size(_M, "body", "kvp_register", "version")  # 512


def _ip(field: str) -> tuple[int, int]:
    return (
        _ffi.offsetof(_M, "body", "kvp_ip_val", field),
        _ffi.field_size(_M, "body", "kvp_ip_val", field),
    )


# (offset, size in bytes) of each kvp_ip_val field: declared as u16 arrays,
# but between kernel and daemon they hold NUL-terminated UTF-8.
IP_ADAPTER_ID = _ip("adapter_id")  # (4, 256)
IP_ADDR_FAMILY = _ip("addr_family")  # (260, 1)
IP_DHCP_ENABLED = _ip("dhcp_enabled")  # (261, 1)
IP_ADDR = _ip("ip_addr")  # (262, 2048)
IP_SUB_NET = _ip("sub_net")  # (2310, 2048)
IP_GATE_WAY = _ip("gate_way")  # (4358, 1024)
IP_DNS_ADDR = _ip("dns_addr")  # (5382, 2048)

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


# -- small helpers ---------------------------------------------------------------


def cstring(buf: bytes, start: int, end: int) -> bytes:
    """The bytes from start up to the first NUL before end (or up to end)."""
    nul = buf.find(b"\0", start, end)
    return buf[start : (end if nul < 0 else nul)]


def _u32(buf: bytes, off: int) -> int:
    value: int = _U32.unpack_from(buf, off)[0]
    return value


def _put(buf: bytearray, off: int, size: int, data: bytes) -> None:
    """Write data NUL-terminated and zero-padded into a size-byte field."""
    if len(data) >= size:
        data = data[: size - 1]
    buf[off : off + size] = data + bytes(size - len(data))


def _put_str(buf: bytearray, off: int, limit: int, data: bytes) -> None:
    """strcpy(): data and one NUL, nothing else touched (data must fit limit - 1)."""
    data = data[: limit - 1]
    buf[off : off + len(data) + 1] = data + b"\0"


# -- daemon side: requests ---------------------------------------------------------


class GetRequest(Value):
    """KVP_OP_GET.  key: the key's bytes up to its NUL (within key_size)."""

    __slots__ = ("pool", "key", "key_size", "value_size")

    def __init__(self, pool: int, key: bytes, key_size: int, value_size: int) -> None:
        self.pool = pool
        self.key = key
        self.key_size = key_size
        self.value_size = value_size


class SetRequest(Value):
    """KVP_OP_SET.  key/value: bytes up to the NUL within key_size/value_size."""

    __slots__ = ("pool", "key", "value", "key_size", "value_size", "value_type")

    def __init__(
        self, pool: int, key: bytes, value: bytes, key_size: int, value_size: int, value_type: int
    ) -> None:
        self.pool = pool
        self.key = key
        self.value = value
        self.key_size = key_size
        self.value_size = value_size
        self.value_type = value_type


class DeleteRequest(Value):
    """KVP_OP_DELETE."""

    __slots__ = ("pool", "key", "key_size")

    def __init__(self, pool: int, key: bytes, key_size: int) -> None:
        self.pool = pool
        self.key = key
        self.key_size = key_size


class EnumerateRequest(Value):
    """KVP_OP_ENUMERATE: the index-th record of pool (u32 from the host)."""

    __slots__ = ("pool", "index")

    def __init__(self, pool: int, index: int) -> None:
        self.pool = pool
        self.index = index


class IpValue(Value):
    """struct hv_kvp_ipaddr_value as kernel and daemon exchange it (UTF-8 strings).

    The address fields are ';'-separated lists.  hvdaemons.kvp.ipinfo uses
    it as its IpInfo.
    """

    __slots__ = (
        "adapter_id",
        "addr_family",
        "dhcp_enabled",
        "ip_addr",
        "sub_net",
        "gate_way",
        "dns_addr",
    )

    def __init__(
        self,
        adapter_id: str,
        addr_family: int,
        dhcp_enabled: bool,
        ip_addr: str = "",
        sub_net: str = "",
        gate_way: str = "",
        dns_addr: str = "",
    ) -> None:
        self.adapter_id = adapter_id
        self.addr_family = addr_family
        self.dhcp_enabled = dhcp_enabled
        self.ip_addr = ip_addr
        self.sub_net = sub_net
        self.gate_way = gate_way
        self.dns_addr = dns_addr


class GetIpInfoRequest(Value):
    """KVP_OP_GET_IP_INFO: adapter_id is the MAC address the host asks about."""

    __slots__ = ("adapter_id", "addr_family")

    def __init__(self, adapter_id: str, addr_family: int) -> None:
        self.adapter_id = adapter_id
        self.addr_family = addr_family


class SetIpInfoRequest(Value):
    """KVP_OP_SET_IP_INFO: adapter_id is the NIC's device GUID."""

    __slots__ = ("value",)

    def __init__(self, value: IpValue) -> None:
        self.value = value


class RegisterReply(Value):
    """The kernel's answer to our registration (op 100, or a second one)."""

    __slots__ = ("op", "version")

    def __init__(self, op: int, version: bytes) -> None:
        self.op = op
        self.version = version


class OtherRequest(Value):
    """An operation the daemon does not know."""

    __slots__ = ("op", "pool")

    def __init__(self, op: int, pool: int) -> None:
        self.op = op
        self.pool = pool


if TYPE_CHECKING:
    Request = Union[
        GetRequest,
        SetRequest,
        DeleteRequest,
        EnumerateRequest,
        GetIpInfoRequest,
        SetIpInfoRequest,
        RegisterReply,
        OtherRequest,
    ]


def _ip_str(msg: bytes, field: tuple[int, int]) -> str:
    off, size = field
    return cstring(msg, off, off + size).decode("utf-8", "surrogateescape")


def decode_ip_value(msg: bytes) -> IpValue:
    """The kvp_ip_val view of a message."""
    return IpValue(
        adapter_id=_ip_str(msg, IP_ADAPTER_ID),
        addr_family=msg[IP_ADDR_FAMILY[0]],
        dhcp_enabled=bool(msg[IP_DHCP_ENABLED[0]]),
        ip_addr=_ip_str(msg, IP_ADDR),
        sub_net=_ip_str(msg, IP_SUB_NET),
        gate_way=_ip_str(msg, IP_GATE_WAY),
        dns_addr=_ip_str(msg, IP_DNS_ADDR),
    )


def _key(msg: bytes, off: int, size: int) -> bytes:
    # The reference compares the first key_size bytes (the key and its NUL):
    # the key is what lies before the NUL within key_size, at most the array.
    return cstring(msg, off, off + min(size, MAX_KEY_SIZE))


def decode_request(msg: bytes) -> Request:
    """Decode one kernel -> daemon message.  Raises ProtocolError if it is not 7432 bytes.

    Sizes are reported as received; whether they are acceptable is the
    daemon's decision (the reference answers HV_S_CONT to oversized ones).
    """
    if len(msg) != KVP_MSG_SIZE:
        raise ProtocolError(f"message of {len(msg)} bytes, expected {KVP_MSG_SIZE}")
    op, pool = msg[OFF_OP], msg[OFF_POOL]
    if op == KvpOp.GET or op == KvpOp.SET:
        key_size = _u32(msg, OFF_KV_KEY_SIZE)
        value_size = _u32(msg, OFF_KV_VALUE_SIZE)
        key = _key(msg, OFF_KV_KEY, key_size)
        if op == KvpOp.GET:
            return GetRequest(pool, key, key_size, value_size)
        value = cstring(msg, OFF_KV_VALUE, OFF_KV_VALUE + min(value_size, MAX_VALUE_SIZE))
        value_type = _u32(msg, OFF_KV_VALUE_TYPE)
        return SetRequest(pool, key, value, key_size, value_size, value_type)
    if op == KvpOp.DELETE:
        key_size = _u32(msg, OFF_DEL_KEY_SIZE)
        return DeleteRequest(pool, _key(msg, OFF_DEL_KEY, key_size), key_size)
    if op == KvpOp.ENUMERATE:
        return EnumerateRequest(pool, _u32(msg, OFF_ENUM_INDEX))
    if op == KvpOp.GET_IP_INFO:
        return GetIpInfoRequest(_ip_str(msg, IP_ADAPTER_ID), msg[IP_ADDR_FAMILY[0]])
    if op == KvpOp.SET_IP_INFO:
        return SetIpInfoRequest(decode_ip_value(msg))
    if op == KvpOp.REGISTER1:
        version = cstring(msg, OFF_REG_VERSION, OFF_REG_VERSION + REG_VERSION_SIZE)
        return RegisterReply(op, version)
    return OtherRequest(op, pool)


# -- daemon side: replies ------------------------------------------------------------


def encode_registration() -> bytes:
    """What the daemon writes after open(): a zeroed message with op REGISTER1."""
    msg = bytearray(KVP_MSG_SIZE)
    msg[OFF_OP] = KvpOp.REGISTER1
    return bytes(msg)


def _as_reply(msg: bytes) -> bytearray:
    # The reference answers in the buffer it read into: a message of the
    # wrong length is cut or zero-padded to the size the kernel accepts.
    buf = bytearray(msg[:KVP_MSG_SIZE])
    if len(buf) < KVP_MSG_SIZE:
        buf += bytes(KVP_MSG_SIZE - len(buf))
    return buf


def encode_status_reply(msg: bytes, status: int) -> bytes:
    """The message as received with status in the error field (SET, DELETE, failures)."""
    if len(msg) == KVP_MSG_SIZE:
        return b"".join((_U32.pack(status & 0xFFFFFFFF), memoryview(msg)[OFF_STATUS + 4 :]))
    buf = _as_reply(msg)
    _U32.pack_into(buf, OFF_STATUS, status & 0xFFFFFFFF)
    return bytes(buf)


_S_OK = _U32.pack(HvStatus.S_OK)
_ZEROS = bytes(MAX_VALUE_SIZE)


def encode_get_reply(msg: bytes, value: bytes) -> bytes:
    """HV_S_OK and the found value where the kernel reads a GET answer.

    Deliberate difference (docs/protocol.md, "The answer to a GET"): the
    reference copies value_size (always 0 from the kernel) bytes to
    kvp_get.data.value at offset 528, so the host gets an empty value; the
    kernel reads the answer from the ENUMERATE view at offset 532
    (drivers/hv/hv_kvp.c, kvp_respond_to_host()).  We write the value there,
    NUL-terminated and zero-padded over the 2048-byte field, and clear
    528-531 so nothing else looks like a string at 528.
    """
    value = value[: MAX_VALUE_SIZE - 1]
    mv = memoryview(_as_reply(msg) if len(msg) != KVP_MSG_SIZE else msg)
    return b"".join(
        (
            _S_OK,
            mv[OFF_STATUS + 4 : OFF_KV_VALUE],
            _ZEROS[: OFF_ENUM_VALUE - OFF_KV_VALUE],
            value,
            _ZEROS[: MAX_VALUE_SIZE - len(value)],
            mv[OFF_ENUM_VALUE + MAX_VALUE_SIZE :],
        )
    )


def encode_enumerate_record_reply(msg: bytes, key_field: bytes, value_field: bytes) -> bytes:
    """HV_S_OK and a pool record: the full 512-byte key and 2048-byte value arrays.

    As the reference does (memcpy of both arrays), so whatever follows the
    terminators in the record reaches the kernel too.
    """
    if len(key_field) != MAX_KEY_SIZE or len(value_field) != MAX_VALUE_SIZE:
        raise ValueError("a record's key and value arrays are 512 and 2048 bytes")
    mv = memoryview(_as_reply(msg) if len(msg) != KVP_MSG_SIZE else msg)
    return b"".join(
        (
            _S_OK,
            mv[OFF_STATUS + 4 : OFF_ENUM_KEY],
            key_field,
            value_field,
            mv[OFF_ENUM_VALUE + MAX_VALUE_SIZE :],
        )
    )


def encode_enumerate_strings_reply(msg: bytes, key: bytes, value: bytes) -> bytes:
    """HV_S_OK and a synthesized (auto pool) item, strcpy()'d as the reference does.

    Only the strings and their terminators are written; a longer string is
    cut to fit its array.
    """
    buf = _as_reply(msg)
    _U32.pack_into(buf, OFF_STATUS, HvStatus.S_OK)
    _put_str(buf, OFF_ENUM_KEY, MAX_KEY_SIZE, key)
    _put_str(buf, OFF_ENUM_VALUE, MAX_VALUE_SIZE, value)
    return bytes(buf)


def _put_ip(buf: bytearray, field: tuple[int, int], text: str) -> None:
    off, size = field
    _put(buf, off, size, text.encode("utf-8", "surrogateescape"))


def encode_ip_value(buf: bytearray, value: IpValue) -> None:
    """Fill the kvp_ip_val view: each string NUL-terminated and zero-padded."""
    _put_ip(buf, IP_ADAPTER_ID, value.adapter_id)
    buf[IP_ADDR_FAMILY[0]] = value.addr_family & 0xFF
    buf[IP_DHCP_ENABLED[0]] = 1 if value.dhcp_enabled else 0
    _put_ip(buf, IP_ADDR, value.ip_addr)
    _put_ip(buf, IP_SUB_NET, value.sub_net)
    _put_ip(buf, IP_GATE_WAY, value.gate_way)
    _put_ip(buf, IP_DNS_ADDR, value.dns_addr)


def encode_ip_info_reply(msg: bytes, status: int, value: IpValue | None) -> bytes:
    """GET_IP_INFO's reply: status, and the adapter's configuration if there is one."""
    buf = _as_reply(msg)
    _U32.pack_into(buf, OFF_STATUS, status & 0xFFFFFFFF)
    if value is not None:
        encode_ip_value(buf, value)
    return bytes(buf)
