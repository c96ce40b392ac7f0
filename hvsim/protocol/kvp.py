# SPDX-License-Identifier: GPL-2.0-only
"""KVP as the kernel side sees it: the messages drivers/hv/hv_kvp.c builds
for the daemon, and how it reads the daemon's replies before answering the
host.

Moved out of hvdaemons.protocol.kvp (the daemon side), which supplies the
layout (offsets from <linux/hyperv.h> through hvdaemons._ffi): the
encode_*_request functions build the zero-filled messages hv_kvp.c hands to
the daemon (UTF-8 strings converted from the host's UTF-16, key_size/value_size
rules, REG_U32/REG_U64 printed as decimal text), and decode_reply() interprets a
daemon's reply the way hv_kvp.c does before answering the host (status at
offset 0; ENUMERATE key at 20 and value at 532; GET value at 532).

Pure: bytes in, dataclasses and bytes out.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from hvdaemons import _ffi
from hvdaemons.errors import HvError, ProtocolError
from hvdaemons.protocol.kvp import (
    ADDR_FAMILY_NONE,
    HOST_KEY_UNITS,
    HOST_VALUE_UNITS,
    IP_ADAPTER_ID,
    IP_ADDR,
    IP_ADDR_FAMILY,
    IP_DHCP_ENABLED,
    IP_DNS_ADDR,
    IP_GATE_WAY,
    IP_SUB_NET,
    KVP_MSG_SIZE,
    MAX_ADAPTER_ID_SIZE,
    MAX_GATEWAY_SIZE,
    MAX_IP_ADDR_SIZE,
    MAX_KEY_SIZE,
    MAX_VALUE_SIZE,
    OFF_DEL_KEY,
    OFF_DEL_KEY_SIZE,
    OFF_ENUM_INDEX,
    OFF_ENUM_KEY,
    OFF_ENUM_VALUE,
    OFF_KV_KEY,
    OFF_KV_KEY_SIZE,
    OFF_KV_VALUE,
    OFF_KV_VALUE_SIZE,
    OFF_OP,
    OFF_POOL,
    OFF_REG_VERSION,
    OFF_STATUS,
    IpValue,
    KvpOp,
    cstring,
)
from hvdaemons.protocol.status import HvStatus


class RegType(enum.IntEnum):
    """Value types on the host wire (REG_SZ etc.)."""

    SZ = _ffi.const("REG_SZ")
    U32 = _ffi.const("REG_U32")
    U64 = _ffi.const("REG_U64")


_U32 = struct.Struct("<I")


def decode_status_reply(reply: bytes) -> int:
    """The status a reply carries (the error field, unsigned)."""
    status: int = _U32.unpack_from(reply, OFF_STATUS)[0]
    return status


# -- building requests ----------------------------------------------------------------


def utf16_to_kernel_utf8(text: str, maxout: int) -> bytes:
    """What hv_kvp.c's utf16s_to_utf8s() makes of a host string.

    Stops at the first NUL; lone surrogates are dropped; a character whose
    UTF-8 form no longer fits in maxout bytes is skipped (the kernel moves on
    and may still fit a later, shorter one).
    """
    out = bytearray()
    for ch in text:
        if ch == "\0":
            break
        if 0xD800 <= ord(ch) <= 0xDFFF:
            continue
        enc = ch.encode("utf-8")
        if len(out) + len(enc) > maxout:
            if len(enc) == 1:
                break  # ASCII: the kernel stops when the output is full
            continue
        out += enc
    return bytes(out)


def _kernel_msg(op: int, pool: int) -> bytearray:
    msg = bytearray(KVP_MSG_SIZE)
    msg[OFF_OP] = op
    msg[OFF_POOL] = pool
    return msg


def _kernel_key(msg: bytearray, size_off: int, key_off: int, key: str) -> None:
    data = utf16_to_kernel_utf8(key, MAX_KEY_SIZE - 1)
    msg[key_off : key_off + len(data)] = data
    _U32.pack_into(msg, size_off, len(data) + 1)


def encode_get_request(pool: int, key: str) -> bytes:
    """GET as hv_kvp.c sends it: key and key_size only (value_size and value_type stay 0)."""
    msg = _kernel_msg(KvpOp.GET, pool)
    _kernel_key(msg, OFF_KV_KEY_SIZE, OFF_KV_KEY, key)
    return bytes(msg)


def encode_set_request(
    pool: int, key: str, value: str | int | None, value_type: int = RegType.SZ
) -> bytes:
    """SET as hv_kvp.c sends it.

    REG_SZ: UTF-8 of the value (at most 2047 bytes), value_size = length + 1;
    REG_U32 / REG_U64: the number as unsigned decimal text ("%u", "%llu");
    any other type: no value, value_size 0.  value_type itself is not
    passed on (it stays 0).
    """
    msg = _kernel_msg(KvpOp.SET, pool)
    data: bytes | None = None
    if value_type == RegType.SZ:
        data = utf16_to_kernel_utf8(str(value if value is not None else ""), MAX_VALUE_SIZE - 1)
    elif value_type == RegType.U32:
        data = b"%d" % (int(value or 0) & 0xFFFFFFFF)
    elif value_type == RegType.U64:
        data = b"%d" % (int(value or 0) & 0xFFFFFFFFFFFFFFFF)
    if data is not None:
        msg[OFF_KV_VALUE : OFF_KV_VALUE + len(data)] = data
        _U32.pack_into(msg, OFF_KV_VALUE_SIZE, len(data) + 1)
    _kernel_key(msg, OFF_KV_KEY_SIZE, OFF_KV_KEY, key)
    return bytes(msg)


def encode_delete_request(pool: int, key: str) -> bytes:
    msg = _kernel_msg(KvpOp.DELETE, pool)
    _kernel_key(msg, OFF_DEL_KEY_SIZE, OFF_DEL_KEY, key)
    return bytes(msg)


def encode_enumerate_request(pool: int, index: int) -> bytes:
    msg = _kernel_msg(KvpOp.ENUMERATE, pool)
    _U32.pack_into(msg, OFF_ENUM_INDEX, index & 0xFFFFFFFF)
    return bytes(msg)


def _kernel_ip(msg: bytearray, field: tuple[int, int], text: str, maxout: int) -> None:
    off, _size = field
    data = utf16_to_kernel_utf8(text, maxout)
    msg[off : off + len(data)] = data


def encode_get_ip_info_request(
    adapter_id: str, addr_family: int = ADDR_FAMILY_NONE, pool: int = 0
) -> bytes:
    """GET_IP_INFO as hv_kvp.c sends it: adapter_id (<= 128 bytes) and addr_family."""
    msg = _kernel_msg(KvpOp.GET_IP_INFO, pool)
    _kernel_ip(msg, IP_ADAPTER_ID, adapter_id, MAX_ADAPTER_ID_SIZE)
    msg[IP_ADDR_FAMILY[0]] = addr_family & 0xFF
    return bytes(msg)


def encode_set_ip_info_request(value: IpValue, pool: int = 0) -> bytes:
    """SET_IP_INFO as hv_kvp.c sends it (UTF-8 limits: 1024/1024/512/1024, adapter 128)."""
    msg = _kernel_msg(KvpOp.SET_IP_INFO, pool)
    _kernel_ip(msg, IP_ADDR, value.ip_addr, MAX_IP_ADDR_SIZE)
    _kernel_ip(msg, IP_SUB_NET, value.sub_net, MAX_IP_ADDR_SIZE)
    _kernel_ip(msg, IP_GATE_WAY, value.gate_way, MAX_GATEWAY_SIZE)
    _kernel_ip(msg, IP_DNS_ADDR, value.dns_addr, MAX_IP_ADDR_SIZE)
    msg[IP_DHCP_ENABLED[0]] = 1 if value.dhcp_enabled else 0
    _kernel_ip(msg, IP_ADAPTER_ID, value.adapter_id, MAX_ADAPTER_ID_SIZE)
    msg[IP_ADDR_FAMILY[0]] = value.addr_family & 0xFF
    return bytes(msg)


def encode_registration_reply(op: int = KvpOp.REGISTER1, version: bytes = b"3.1") -> bytes:
    """The kernel's registration reply: op and HV_DRV_VERSION ("3.1")."""
    msg = _kernel_msg(op, 0)
    msg[OFF_REG_VERSION : OFF_REG_VERSION + len(version)] = version
    return bytes(msg)


# -- reading replies ------------------------------------------------------------------


class KernelConversionError(HvError):
    """utf8s_to_utf16s() failed: the kernel answers the host HV_E_FAIL."""


def kernel_utf8_to_utf16(data: bytes, maxout: int) -> str:
    """What hv_kvp.c's utf8s_to_utf16s() makes of a daemon string, as text.

    At most maxout UTF-16 units (a pair is not split); an invalid sequence
    before that limit is an error.
    """
    try:
        text = data.decode("utf-8")
        bad = False
    except UnicodeDecodeError as e:
        text = data[: e.start].decode("utf-8")
        bad = True
    units = 0
    for i, ch in enumerate(text):
        need = 2 if ord(ch) > 0xFFFF else 1
        if units + need > maxout:
            return text[:i]
        units += need
    if bad and units < maxout:
        raise KernelConversionError("invalid UTF-8 in the daemon's reply")
    return text


@dataclass(frozen=True)
class HostReply:
    """What the host receives for one request.

    status: the status the kernel sends (HV_E_FAIL when it could not
    convert the daemon's strings).  key/value: ENUMERATE's item, GET's value
    (None otherwise or on failure).  ip: GET_IP_INFO's answer.
    """

    status: int
    key: str | None = None
    value: str | None = None
    ip: IpValue | None = None


def _kernel_string(reply: bytes, off: int) -> bytes:
    # strlen() on the daemon's buffer: the string may run past its array.
    return cstring(reply, off, len(reply))


def decode_reply(op: int, reply: bytes) -> HostReply:
    """Interpret a daemon's reply the way hv_kvp.c does (REGISTER1 daemons).

    The status is the error field.  Only on success does the kernel look at
    the rest: ENUMERATE key from offset 20 (<= 254 UTF-16 units) and value
    from 532 (<= 1022); GET only the value, from 532; GET_IP_INFO the
    address strings (<= 1024/1024/512/1024 units, adapter id 128).
    """
    if len(reply) < KVP_MSG_SIZE:
        raise ProtocolError(f"reply of {len(reply)} bytes: the kernel refuses it (EINVAL)")
    status = decode_status_reply(reply)
    if status != HvStatus.S_OK:
        return HostReply(status)
    try:
        if op == KvpOp.ENUMERATE:
            key = kernel_utf8_to_utf16(_kernel_string(reply, OFF_ENUM_KEY), HOST_KEY_UNITS)
            value = kernel_utf8_to_utf16(_kernel_string(reply, OFF_ENUM_VALUE), HOST_VALUE_UNITS)
            return HostReply(status, key=key, value=value)
        if op == KvpOp.GET:
            value = kernel_utf8_to_utf16(_kernel_string(reply, OFF_ENUM_VALUE), HOST_VALUE_UNITS)
            return HostReply(status, value=value)
        if op == KvpOp.GET_IP_INFO:

            def field(f: tuple[int, int], maxout: int) -> str:
                return kernel_utf8_to_utf16(_kernel_string(reply, f[0]), maxout)

            ip = IpValue(
                adapter_id=field(IP_ADAPTER_ID, MAX_ADAPTER_ID_SIZE),
                addr_family=reply[IP_ADDR_FAMILY[0]],
                dhcp_enabled=bool(reply[IP_DHCP_ENABLED[0]]),
                ip_addr=field(IP_ADDR, MAX_IP_ADDR_SIZE),
                sub_net=field(IP_SUB_NET, MAX_IP_ADDR_SIZE),
                gate_way=field(IP_GATE_WAY, MAX_GATEWAY_SIZE),
                dns_addr=field(IP_DNS_ADDR, MAX_IP_ADDR_SIZE),
            )
            return HostReply(status, ip=ip)
    except KernelConversionError:
        return HostReply(HvStatus.E_FAIL)
    return HostReply(status)
