# SPDX-License-Identifier: GPL-2.0-only
"""Coverage-guided fuzzing (atheris) of the pure decoders: `tox -e atheris`.

Mirrors nothing upstream: test harness.  The first input byte picks a
decoder, the rest is its input.  A decoder may refuse input only with its
documented error (HvError: ProtocolError and its kin) or, for the parsers of
kernel and file data, by returning None or skipping what it cannot read;
any other exception is a finding (atheris stops and saves the input as
crash-*).

The corpus is seeded with golden bytes: messages from the simulator's
encoders (hvsim.protocol), a netlink link, address and route, this
machine's /proc/self/mountinfo and an os-release, pool records.

    python tests/fuzz/atheris_decoders.py CORPUS_DIR -atheris_runs=N  (the installed package)
    (libFuzzer flags after the corpus)
"""

from __future__ import annotations

import os
import struct
import sys
from typing import Callable

import atheris

with atheris.instrument_imports():
    from hvdaemons.errors import HvError
    from hvdaemons.kvp import netlink, osinfo, pool
    from hvdaemons.protocol import fcopy, icmsg, kvp, vss
    from hvdaemons.vss import mounts

from hvsim.protocol import fcopy as sim_fcopy
from hvsim.protocol import icmsg as sim_icmsg
from hvsim.protocol import kvp as sim_kvp
from hvsim.protocol import vss as sim_vss

TARGETS: list[tuple[str, Callable[[bytes], object]]] = [
    ("kvp.decode_request", kvp.decode_request),
    # A view of a whole message (decode_request checks its size first).
    (
        "kvp.decode_ip_value",
        lambda b: kvp.decode_ip_value(b[: kvp.KVP_MSG_SIZE].ljust(kvp.KVP_MSG_SIZE, b"\0")),
    ),
    ("vss.decode_request", vss.decode_request),
    ("fcopy.decode_message(utf16=False)", lambda b: fcopy.decode_message(b, utf16=False)),
    ("fcopy.decode_message(utf16=True)", lambda b: fcopy.decode_message(b, utf16=True)),
    ("fcopy.decode_write_payload", fcopy.decode_write_payload),
    ("icmsg.decode_packet", icmsg.decode_packet),
    ("icmsg.decode_header", icmsg.decode_header),
    ("netlink.parse_attrs", netlink.parse_attrs),
    ("netlink.parse_link", netlink.parse_link),
    ("netlink.parse_address", netlink.parse_address),
    ("netlink.parse_route", netlink.parse_route),
    ("osinfo.parse_os_release", osinfo.parse_os_release),
    ("pool.parse_pool", pool.parse_pool),
    ("mounts.parse_mountinfo", mounts.parse_mountinfo),
]
_INDEX = {name: i for i, (name, _) in enumerate(TARGETS)}


def one_input(data: bytes) -> None:
    if not data:
        return
    _, decode = TARGETS[data[0] % len(TARGETS)]
    try:
        decode(data[1:])
    except HvError:
        pass  # the documented refusal


def _rtattr(kind: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return struct.pack("<HH", n, kind) + payload + bytes(-n % 4)


def seeds() -> dict[str, bytes]:
    """Golden inputs, each prefixed with its decoder's selector byte."""
    ip = kvp.IpValue(
        "{f8615163-df3e-46c5-913f-f2d2f965ed0e}",
        kvp.ADDR_FAMILY_IPV4,
        False,
        "10.0.0.1",
        "255.255.255.0",
    )
    raw = {
        "kvp.decode_request": [
            sim_kvp.encode_set_request(0, "key", "value"),
            sim_kvp.encode_get_request(1, "key"),
            sim_kvp.encode_delete_request(2, "key"),
            sim_kvp.encode_enumerate_request(4, 3),
            sim_kvp.encode_get_ip_info_request("00:15:5D:00:00:01", 0),
            sim_kvp.encode_set_ip_info_request(ip),
        ],
        "kvp.decode_ip_value": [sim_kvp.encode_set_ip_info_request(ip)],
        "vss.decode_request": [sim_vss.encode_request(2), sim_vss.encode_forwarded_message(3)],
        "fcopy.decode_message(utf16=False)": [
            sim_fcopy.encode_start("f", "/tmp", 1, 10, utf16=False),
            sim_fcopy.encode_complete() + bytes(28),
        ],
        "fcopy.decode_message(utf16=True)": [
            sim_fcopy.encode_start("é😀", "/tmp/d", 3, 10, utf16=True),
            sim_fcopy.encode_cancel(),
        ],
        "fcopy.decode_write_payload": [sim_fcopy.encode_write(4096, b"data")],
        "icmsg.decode_packet": [
            sim_icmsg.encode_packet(sim_icmsg.encode_negotiate_request([(3, 0)], [(1, 1)]), 7)
        ],
        "icmsg.decode_header": [sim_icmsg.encode_negotiate_request([(3, 0)], [(1, 0), (1, 1)])],
        "netlink.parse_attrs": [_rtattr(3, b"eth0\0") + _rtattr(1, b"\x02" * 6)],
        "netlink.parse_link": [bytes(16) + _rtattr(3, b"eth0\0") + _rtattr(1, b"\x02" * 6)],
        "netlink.parse_address": [
            struct.pack("<BBBBI", 2, 24, 0, 0, 2) + _rtattr(2, bytes([10, 0, 0, 1]))
        ],
        "netlink.parse_route": [
            struct.pack("<BBBBBBBBI", 2, 0, 0, 0, 254, 3, 0, 1, 0)
            + _rtattr(5, bytes([10, 0, 0, 254]))
            + _rtattr(4, struct.pack("<I", 2))
        ],
        "osinfo.parse_os_release": [b'NAME="Debian GNU/Linux"\nVERSION_ID="12"\nID=debian\n'],
        "pool.parse_pool": [
            b"key".ljust(kvp.MAX_KEY_SIZE, b"\0") + b"value".ljust(kvp.MAX_VALUE_SIZE, b"\0")
        ],
        "mounts.parse_mountinfo": [_read("/proc/self/mountinfo")],
    }
    out = {}
    for name, inputs in raw.items():
        for i, data in enumerate(inputs):
            out[f"{name}-{i}"] = bytes([_INDEX[name]]) + data
    return out


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def main() -> None:
    args = sys.argv[1:]
    corpus = next((a for a in args if not a.startswith("-")), None)
    if corpus is not None:
        os.makedirs(corpus, exist_ok=True)
        for name, data in seeds().items():
            with open(os.path.join(corpus, "seed-" + name), "wb") as f:
                f.write(data)
    # libFuzzer prints the executions, coverage and corpus, and exits.
    atheris.Setup([sys.argv[0], *args], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
