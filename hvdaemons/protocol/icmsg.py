# SPDX-License-Identifier: GPL-2.0-only
"""VMBus packets and the IC (integration component) framework, as bytes.

Mirrors the packet descriptor of include/linux/hyperv.h (struct
vmpacket_descriptor), the IC headers (struct vmbuspipe_hdr, struct
icmsg_hdr) and vmbus_prep_negotiate_resp() of drivers/hv/channel_mgmt.c,
which tools/hv/hv_fcopy_uio_daemon.c copies.  See spec fcopy.md 3.4-3.5.

Pure: bytes in, dataclasses and bytes out.  A response is the request's
payload with status and icflags changed, never longer or shorter.  The
host's side (requests, packets) is the simulator's: hvsim.protocol.icmsg.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import ProtocolError
from .status import HvStatus

# struct vmpacket_descriptor: type, offset8, len8, flags, trans_id.
DESC = struct.Struct("<HHHHQ")
DESC_SIZE = DESC.size  # 16
VM_PKT_DATA_INBAND = 6

# struct vmbuspipe_hdr (8 bytes) + struct icmsg_hdr (20 bytes).
PIPE_HDR_SIZE = 8
ICMSG_HDR = struct.Struct("<IIHHHHHHIBBH")
ICMSG_HDR_SIZE = ICMSG_HDR.size  # 28
STATUS_OFFSET = 20
ICFLAGS_OFFSET = 25
ICMSGSIZE_OFFSET = 18

ICMSGTYPE_NEGOTIATE = 0
ICMSGTYPE_HEARTBEAT = 1
ICMSGTYPE_KVPEXCHANGE = 2
ICMSGTYPE_SHUTDOWN = 3
ICMSGTYPE_TIMESYNC = 4
ICMSGTYPE_VSS = 5
ICMSGTYPE_FCOPY = 7

ICMSGHDRFLAG_TRANSACTION = 1
ICMSGHDRFLAG_REQUEST = 2
ICMSGHDRFLAG_RESPONSE = 4

# The kernel's sanity limits on the negotiate counts (MAX_FW/SRV_VERSIONS).
MAX_VERSIONS = 100
# struct icmsg_negotiate up to and including the reserved word.
NEGOTIATE_FIXED = 8
NEGOTIATE_MIN = ICMSG_HDR_SIZE + 4  # the two counts must be present
NEGOTIATE_RESP_SIZE = 16  # icmsgsize of every negotiate reply

Version = tuple[int, int]

# File copy preference lists (hv_fcopy_uio_daemon.c: FW_VER_COUNT/FCOPY_VER_COUNT).
FCOPY_FW_VERSIONS: tuple[Version, ...] = ((3, 0),)
FCOPY_SVC_VERSIONS: tuple[Version, ...] = ((1, 1),)


@dataclass(frozen=True)
class Packet:
    """One VMBus packet as read from a ring (trailer excluded)."""

    type: int
    flags: int
    trans_id: int
    payload: bytes


def decode_packet(raw: bytes) -> Packet:
    """Split a packet into descriptor fields and payload (padding kept)."""
    if len(raw) < DESC_SIZE:
        raise ProtocolError(f"packet of {len(raw)} bytes is shorter than its descriptor")
    ptype, offset8, len8, flags, trans_id = DESC.unpack_from(raw)
    start, end = offset8 * 8, len8 * 8
    if start < DESC_SIZE or end < start or end > len(raw):
        raise ProtocolError(f"packet descriptor offset8={offset8} len8={len8} for {len(raw)} bytes")
    return Packet(ptype, flags, trans_id, raw[start:end])


@dataclass(frozen=True)
class IcHeader:
    """vmbuspipe_hdr + icmsg_hdr of an IC message."""

    pipe_flags: int
    pipe_msgsize: int
    framework: Version
    msgtype: int
    msg_version: Version
    msgsize: int
    status: int
    transaction_id: int
    icflags: int

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


@dataclass(frozen=True)
class Negotiated:
    reply: bytes
    framework: Version | None  # None: no common version
    service: Version | None

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
        and data + 4 * (fw_count + svc_count) <= len(out)
    ):
        offered = [
            struct.unpack_from("<HH", out, data + 4 * i) for i in range(fw_count + svc_count)
        ]
        fw = _pick(fw_versions, offered[:fw_count])
        if fw is not None:
            svc = _pick(svc_versions, offered[fw_count:])
    ok = fw is not None and svc is not None
    struct.pack_into("<HH", out, base, int(ok), int(ok))
    if ok and data + 8 <= len(out):
        assert fw is not None and svc is not None
        struct.pack_into("<HHHH", out, data, fw[0], fw[1], svc[0], svc[1])
    reply = encode_status_reply(bytes(out), HvStatus.S_OK if ok else HvStatus.E_FAIL)
    return Negotiated(reply, fw if ok else None, svc if ok else None)
