# SPDX-License-Identifier: GPL-2.0-only
"""VMBus packets and the IC (integration component) framework, as bytes.

Mirrors the packet descriptor of include/linux/hyperv.h (struct
vmpacket_descriptor), the IC headers (struct vmbuspipe_hdr, struct
icmsg_hdr) and vmbus_prep_negotiate_resp() of drivers/hv/channel_mgmt.c,
which tools/hv/hv_fcopy_uio_daemon.c copies.  The layouts are
bindings/vmbus.cdef.h's, through _ffi; docs/protocol.md describes the
messages.

Pure: bytes in, values (hvdaemons.value) and bytes out.  A response is the request's
payload with status and icflags changed, never longer or shorter.  The
host's side (requests, packets) is the simulator's: hvsim.protocol.icmsg.
"""

from __future__ import annotations

import struct

from .. import _ffi
from ..errors import ProtocolError
from ..value import Value
from .status import HvStatus

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from collections.abc import Sequence

# struct vmpacket_descriptor: type, offset8, len8, flags, trans_id.
DESC = struct.Struct("<HHHHQ")
DESC_SIZE = _ffi.sizeof("struct vmpacket_descriptor")  # 16
VM_PKT_DATA_INBAND = _ffi.const("VM_PKT_DATA_INBAND")

# struct vmbuspipe_hdr, then struct icmsg_hdr: all of them at once.
ICMSG_HDR = struct.Struct("<IIHHHHHHIBBH")
PIPE_HDR_SIZE = _ffi.sizeof("struct vmbuspipe_hdr")  # 8
ICMSG_HDR_SIZE = PIPE_HDR_SIZE + _ffi.sizeof("struct icmsg_hdr")  # 28
# Offsets in an IC payload (from the pipe header on).
ICMSGSIZE_OFFSET = PIPE_HDR_SIZE + _ffi.offsetof("struct icmsg_hdr", "icmsgsize")  # 18
STATUS_OFFSET = PIPE_HDR_SIZE + _ffi.offsetof("struct icmsg_hdr", "status")  # 20
TRANSACTION_ID_OFFSET = PIPE_HDR_SIZE + _ffi.offsetof("struct icmsg_hdr", "ictransaction_id")
ICFLAGS_OFFSET = PIPE_HDR_SIZE + _ffi.offsetof("struct icmsg_hdr", "icflags")  # 25
# The struct formats mirror the C structs (tests/test_abi.py holds every field to them).
assert DESC.size == DESC_SIZE and ICMSG_HDR.size == ICMSG_HDR_SIZE

ICMSGTYPE_NEGOTIATE = _ffi.const("ICMSGTYPE_NEGOTIATE")
ICMSGTYPE_HEARTBEAT = _ffi.const("ICMSGTYPE_HEARTBEAT")
ICMSGTYPE_FCOPY = _ffi.const("ICMSGTYPE_FCOPY")

ICMSGHDRFLAG_TRANSACTION = _ffi.const("ICMSGHDRFLAG_TRANSACTION")
ICMSGHDRFLAG_REQUEST = _ffi.const("ICMSGHDRFLAG_REQUEST")
ICMSGHDRFLAG_RESPONSE = _ffi.const("ICMSGHDRFLAG_RESPONSE")

# The kernel's sanity limits on the negotiate counts (MAX_FW/SRV_VERSIONS).
MAX_VERSIONS = 100
# struct icmsg_negotiate up to its versions, and one version.
NEGOTIATE_FIXED = _ffi.offsetof("struct icmsg_negotiate", "icversion_data")  # 8
VERSION_SIZE = _ffi.sizeof("struct ic_version")  # 4
# The two counts must be present.
NEGOTIATE_MIN = ICMSG_HDR_SIZE + _ffi.offsetof("struct icmsg_negotiate", "reserved")
# icmsgsize of every negotiate reply: the fixed part and the two versions chosen.
NEGOTIATE_RESP_SIZE = NEGOTIATE_FIXED + 2 * VERSION_SIZE  # 16

Version = tuple[int, int]

_UTIL_FW_VERSION = _ffi.const("UTIL_FW_VERSION")  # major << 16 | minor
# File copy preference lists (hv_fcopy_uio_daemon.c: fw_versions[] holds
# UTIL_FW_VERSION, fcopy_versions[] WIN8_SRV_VERSION, 1.1).
FCOPY_FW_VERSIONS: tuple[Version, ...] = ((_UTIL_FW_VERSION >> 16, _UTIL_FW_VERSION & 0xFFFF),)
FCOPY_SVC_VERSIONS: tuple[Version, ...] = ((1, 1),)


class Packet(Value):
    """One VMBus packet as read from a ring (trailer excluded)."""

    __slots__ = ("type", "flags", "trans_id", "payload")

    def __init__(self, type: int, flags: int, trans_id: int, payload: bytes) -> None:
        self.type = type
        self.flags = flags
        self.trans_id = trans_id
        self.payload = payload


def decode_packet(raw: bytes) -> Packet:
    """Split a packet into descriptor fields and payload (padding kept)."""
    if len(raw) < DESC_SIZE:
        raise ProtocolError(f"packet of {len(raw)} bytes is shorter than its descriptor")
    ptype, offset8, len8, flags, trans_id = DESC.unpack_from(raw)
    start, end = offset8 * 8, len8 * 8
    if start < DESC_SIZE or end < start or end > len(raw):
        raise ProtocolError(f"packet descriptor offset8={offset8} len8={len8} for {len(raw)} bytes")
    return Packet(ptype, flags, trans_id, raw[start:end])


class IcHeader(Value):
    """vmbuspipe_hdr + icmsg_hdr of an IC message."""

    __slots__ = (
        "pipe_flags",
        "pipe_msgsize",
        "framework",
        "msgtype",
        "msg_version",
        "msgsize",
        "status",
        "transaction_id",
        "icflags",
    )

    def __init__(
        self,
        pipe_flags: int,
        pipe_msgsize: int,
        framework: Version,
        msgtype: int,
        msg_version: Version,
        msgsize: int,
        status: int,
        transaction_id: int,
        icflags: int,
    ) -> None:
        self.pipe_flags = pipe_flags
        self.pipe_msgsize = pipe_msgsize
        self.framework = framework
        self.msgtype = msgtype
        self.msg_version = msg_version
        self.msgsize = msgsize
        self.status = status
        self.transaction_id = transaction_id
        self.icflags = icflags

    @property
    def is_response(self) -> bool:
        return bool(self.icflags & ICMSGHDRFLAG_RESPONSE)


def decode_header(payload: bytes) -> IcHeader:
    """The IC headers at the start of a packet payload."""
    if len(payload) < ICMSG_HDR_SIZE:
        raise ProtocolError(f"IC message of {len(payload)} bytes is shorter than its headers")
    (pflags, psize, fmaj, fmin, mtype, vmaj, vmin, msize, status, tid, icflags, _res) = (
        ICMSG_HDR.unpack_from(payload)
    )
    return IcHeader(pflags, psize, (fmaj, fmin), mtype, (vmaj, vmin), msize, status, tid, icflags)


def body(payload: bytes) -> bytes:
    """The message body after the IC headers."""
    return payload[ICMSG_HDR_SIZE:]


def encode_status_reply(payload: bytes, status: int) -> bytes:
    """The reply to a request: same bytes and length, status set, icflags TRANSACTION|RESPONSE."""
    if len(payload) < ICMSG_HDR_SIZE:
        raise ProtocolError(f"IC message of {len(payload)} bytes is shorter than its headers")
    out = bytearray(payload)
    struct.pack_into("<I", out, STATUS_OFFSET, status & 0xFFFFFFFF)
    out[ICFLAGS_OFFSET] = ICMSGHDRFLAG_TRANSACTION | ICMSGHDRFLAG_RESPONSE
    return bytes(out)


class Negotiated(Value):
    """The reply to a negotiate request, and the versions chosen (None: no common version)."""

    __slots__ = ("reply", "framework", "service")

    def __init__(self, reply: bytes, framework: Version | None, service: Version | None) -> None:
        self.reply = reply
        self.framework = framework
        self.service = service

    @property
    def ok(self) -> bool:
        return self.framework is not None and self.service is not None


def _pick(ours: Sequence[Version], theirs: Sequence[Version]) -> Version | None:
    for version in ours:
        if version in theirs:
            return version
    return None


def negotiate(
    payload: bytes,
    fw_versions: Sequence[Version] = FCOPY_FW_VERSIONS,
    svc_versions: Sequence[Version] = FCOPY_SVC_VERSIONS,
) -> Negotiated:
    """Answer an ICMSGTYPE_NEGOTIATE payload the way vmbus_prep_negotiate_resp() does.

    Our versions are tried in preference order against everything the host
    offers.  Status is 0 on a match and HV_E_FAIL otherwise, as the uio
    reference sets it.  Nothing is written beyond the request's length.
    """
    if len(payload) < ICMSG_HDR_SIZE:
        raise ProtocolError(f"negotiate of {len(payload)} bytes is shorter than its headers")
    if len(payload) < NEGOTIATE_MIN:
        # The kernel gives up before touching the body or icmsgsize.
        return Negotiated(encode_status_reply(payload, HvStatus.E_FAIL), None, None)
    out = bytearray(payload)
    struct.pack_into("<H", out, ICMSGSIZE_OFFSET, NEGOTIATE_RESP_SIZE)
    base = ICMSG_HDR_SIZE
    fw_count, svc_count = struct.unpack_from("<HH", out, base)
    fw: Version | None = None
    svc: Version | None = None
    data = base + NEGOTIATE_FIXED
    if (
        fw_count <= MAX_VERSIONS
        and svc_count <= MAX_VERSIONS
        and data + VERSION_SIZE * (fw_count + svc_count) <= len(out)
    ):
        offered = [
            struct.unpack_from("<HH", out, data + VERSION_SIZE * i)
            for i in range(fw_count + svc_count)
        ]
        fw = _pick(fw_versions, offered[:fw_count])
        if fw is not None:
            svc = _pick(svc_versions, offered[fw_count:])
    ok = fw is not None and svc is not None
    struct.pack_into("<HH", out, base, int(ok), int(ok))
    if ok and data + 2 * VERSION_SIZE <= len(out):
        assert fw is not None and svc is not None
        struct.pack_into("<HHHH", out, data, fw[0], fw[1], svc[0], svc[1])
    reply = encode_status_reply(bytes(out), HvStatus.S_OK if ok else HvStatus.E_FAIL)
    return Negotiated(reply, fw if ok else None, svc if ok else None)
