# SPDX-License-Identifier: GPL-2.0-only
"""Simulated host and hv_utils kernel side of file copy (legacy /dev/vmbus/hv_fcopy).

Mirrors drivers/hv/hv_fcopy.c (Linux <= 6.9) as seen by the daemon: the
host's messages carry UTF-16LE names; the kernel copies each IC payload
into its receive buffer and hands the daemon (fcopy_send_data(),
hv_fcopy_pre_suspend(); docs/protocol.md)

* START: a freshly built 1088-byte hv_start_fcopy with the names converted by
  utf16s_to_utf8s() (at most 259 bytes, lone surrogates and characters that
  no longer fit silently dropped, as the kernel does);
* WRITE: always 6196 bytes from the receive buffer;
* COMPLETE, CANCEL, anything else: the IC payload length counted from the
  FCopy header, i.e. 28 stale receive-buffer bytes after the 36-byte header;
* on hibernation a bare 36-byte CANCEL whose reply the kernel refuses.

The host side (FcopyHost.copy_file) sends START, the fragments, then
COMPLETE (or CANCEL), as Copy-VMFile does.  `hvsim fcopy --dir D copy SRC
DEST` drives a running `hvsim serve`; `hvsim demo fcopy` runs the real
hv_fcopy_daemon against it.
"""

from __future__ import annotations

import argparse
import os
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from hvdaemons import _ffi
from hvdaemons.protocol import fcopy as proto
from hvdaemons.protocol import icmsg
from hvdaemons.protocol.status import HvStatus, describe

from . import launch, uio
from .chardev import HV_UTIL_TIMEOUT, ChardevKernel
from .demo import Part, wait_registered
from .protocol import fcopy as sim_fcopy
from .protocol import icmsg as sim_icmsg
from .server import Json, SimServer, call, stop_daemon

# hv_util.c allocates the service's receive buffer as two Hyper-V pages.
RECV_BUFFER = 2 * _ffi.const("HV_HYP_PAGE_SIZE")
ICMSG_HDR = icmsg.ICMSG_HDR_SIZE  # vmbuspipe_hdr + icmsg_hdr
_NAME_UNITS = proto.W_MAX_PATH


def utf16s_to_utf8s(field: bytes, maxout: int) -> bytes:
    """The kernel's fs/nls utf16s_to_utf8s() on a little-endian field, output limit maxout."""
    units = struct.unpack(f"<{len(field) // 2}H", field[: len(field) - len(field) % 2])
    out = bytearray()
    i = 0
    while i < len(units) and maxout > 0:
        u = units[i]
        if u == 0:
            break
        i += 1
        if u <= 0x7F:
            out.append(u)
            maxout -= 1
            continue
        if 0xD800 <= u <= 0xDFFF:
            if u >= 0xDC00:
                continue  # a low surrogate first: ignored
            if i >= len(units):
                break
            v = units[i]
            if not 0xDC00 <= v <= 0xDFFF:
                continue  # high surrogate without its pair: ignored
            u = 0x10000 + ((u & 0x3FF) << 10) + (v & 0x3FF)
            i += 1
        enc = chr(u).encode("utf-8")
        if len(enc) > maxout:
            continue  # utf32_to_utf8() has no room: ignored, the loop goes on
        out += enc
        maxout -= len(enc)
    return bytes(out)


def kernel_start(host_body: bytes) -> bytes:
    """What hv_fcopy.c builds from the host's START for the daemon."""
    file_field = host_body[proto.OFF_FILE_NAME : proto.OFF_FILE_NAME + proto.NAME_FIELD_SIZE]
    path_field = host_body[proto.OFF_PATH_NAME : proto.OFF_PATH_NAME + proto.NAME_FIELD_SIZE]
    (flags,) = struct.unpack_from("<I", host_body, proto.OFF_COPY_FLAGS)
    (size,) = struct.unpack_from("<Q", host_body, proto.OFF_FILE_SIZE)
    return sim_fcopy.encode_start(
        utf16s_to_utf8s(file_field, _NAME_UNITS - 1),
        utf16s_to_utf8s(path_field, _NAME_UNITS - 1),
        flags,
        size,
        utf16=False,
    )


class FcopyKernel:
    """hv_fcopy.c's receive buffer and message forwarding (no IC negotiation to show)."""

    def __init__(self) -> None:
        self.recv = bytearray(RECV_BUFFER)
        self._transaction = 0

    def to_daemon(self, host_body: bytes) -> bytes | None:
        """The bytes the daemon reads for one host FCopy body; None if the kernel drops it."""
        self._transaction = (self._transaction + 1) & 0xFF
        payload_len = ICMSG_HDR + len(host_body)
        if payload_len > RECV_BUFFER:
            raise ValueError(f"host packet of {payload_len} bytes exceeds the receive buffer")
        self.recv[0:payload_len] = sim_icmsg.encode_request(
            icmsg.ICMSGTYPE_FCOPY, host_body, transaction_id=self._transaction
        )
        if payload_len < ICMSG_HDR + proto.HDR_SIZE:
            return None  # "Invalid msg" : logged and dropped by the kernel
        op = proto.decode_operation(host_body)
        if op == proto.FcopyOp.START:
            return kernel_start(host_body)
        if op == proto.FcopyOp.WRITE:
            return bytes(self.recv[ICMSG_HDR : ICMSG_HDR + proto.WRITE_SIZE])
        # recv_len counts the 28 header bytes too: that many stale bytes follow.
        return bytes(self.recv[ICMSG_HDR : ICMSG_HDR + payload_len])


class FcopyHost:
    """The host end of Copy-VMFile over the legacy transport."""

    def __init__(self, kernel: ChardevKernel, *, wait_for_daemon: float = 0.0) -> None:
        self.kernel = kernel
        self.fcopy = FcopyKernel()
        self.wait_for_daemon = wait_for_daemon
        # Seconds each request took (host send to reply), when timing is on.
        self.latencies: list[float] | None = None

    def send(self, host_body: bytes) -> int:
        """One host request; the status the host gets (HV_E_FAIL if the kernel answered)."""
        msg = self.fcopy.to_daemon(host_body)
        if msg is None:
            return HvStatus.E_FAIL
        if self.latencies is not None:
            t0 = time.perf_counter()
            reply = self.kernel.request(msg, wait_for_daemon=self.wait_for_daemon)
            self.latencies.append(time.perf_counter() - t0)
        else:
            reply = self.kernel.request(msg, wait_for_daemon=self.wait_for_daemon)
        if reply is None:
            return HvStatus.E_FAIL
        return sim_fcopy.decode_status_reply(reply)

    def start(
        self, file_name: str | bytes, path_name: str | bytes, flags: int = 0, file_size: int = 0
    ) -> int:
        return self.send(sim_fcopy.encode_start(file_name, path_name, flags, file_size, utf16=True))

    def write(self, offset: int, data: bytes, *, size: int | None = None) -> int:
        return self.send(sim_fcopy.encode_write(offset, data, size=size))

    def complete(self) -> int:
        return self.send(sim_fcopy.encode_complete())

    def cancel(self) -> int:
        return self.send(sim_fcopy.encode_cancel())

    def hibernate(self) -> None:
        """The kernel's fake CANCEL before suspend; the daemon's reply is refused."""
        self.kernel.inject(sim_fcopy.encode_cancel())

    def copy_file(
        self,
        src: str | bytes,
        dest_dir: str | bytes,
        name: str | bytes,
        flags: int = 0,
        fragment: int = proto.DATA_FRAGMENT,
        cancel_after: int | None = None,
        *,
        sparse: bool = False,
    ) -> list[int]:
        """Copy src (a file path, or the data itself as bytes) to dest_dir/name.

        Returns every status the host received: START, each WRITE, then
        COMPLETE, or CANCEL after cancel_after fragments or a failed WRITE.
        sparse=True skips the holes of a sparse source file (SEEK_DATA), the
        last fragment always being sent so the file gets its size.
        """
        with _Source(src) as source:
            statuses = [self.start(name, dest_dir, flags, source.size)]
            if statuses[0] != HvStatus.S_OK:
                return statuses
            for i, (offset, chunk) in enumerate(source.fragments(fragment, sparse)):
                if cancel_after is not None and i >= cancel_after:
                    statuses.append(self.cancel())
                    return statuses
                status = self.write(offset, chunk)
                statuses.append(status)
                if status != HvStatus.S_OK:
                    statuses.append(self.cancel())
                    return statuses
            if cancel_after is not None and cancel_after >= len(statuses) - 1:
                statuses.append(self.cancel())
            else:
                statuses.append(self.complete())
        return statuses


class _Source:
    def __init__(self, src: str | bytes) -> None:
        self._data: bytes | None = src if isinstance(src, bytes) else None
        self._fd = -1 if isinstance(src, bytes) else os.open(src, os.O_RDONLY | os.O_CLOEXEC)
        self.size = len(src) if isinstance(src, bytes) else os.fstat(self._fd).st_size

    def __enter__(self) -> _Source:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd >= 0:
            os.close(self._fd)

    def _read(self, offset: int, n: int) -> bytes:
        if self._data is not None:
            return self._data[offset : offset + n]
        return os.pread(self._fd, n, offset)

    def _extents(self) -> Iterator[tuple[int, int]]:
        """(start, end) of the data regions, by SEEK_DATA/SEEK_HOLE."""
        pos = 0
        while pos < self.size:
            try:
                start = os.lseek(self._fd, pos, os.SEEK_DATA)
            except OSError:
                return  # ENXIO: only a hole is left
            end = os.lseek(self._fd, start, os.SEEK_HOLE)
            yield start, end
            pos = end

    def fragments(self, fragment: int, sparse: bool) -> Iterator[tuple[int, bytes]]:
        if not sparse or self._data is not None:
            for offset in range(0, self.size, fragment):
                yield offset, self._read(offset, fragment)
            return
        last = max(0, self.size - fragment) if self.size else 0
        sent_last = self.size == 0
        for start, end in self._extents():
            start -= start % fragment
            for offset in range(start, end, fragment):
                sent_last = sent_last or offset + fragment >= self.size
                yield offset, self._read(offset, fragment)
        if not sent_last:
            yield last, self._read(last, self.size - last)


# -- `hvsim serve` and its client ---------------------------------------------------


def install(server: SimServer, args: argparse.Namespace) -> None:
    kernel = server.add_chardev("hv_fcopy", timeout=getattr(args, "fcopy_timeout", None))
    host = FcopyHost(kernel)

    def copy(req: Json) -> Json:
        flags = (proto.OVER_WRITE if req.get("overwrite") else 0) | (
            proto.CREATE_PATH if req.get("create_path") else 0
        )
        statuses = host.copy_file(
            str(req["src"]),
            str(req["path"]),
            str(req["name"]),
            flags,
            int(req.get("fragment") or proto.DATA_FRAGMENT),
            req.get("cancel_after"),
        )
        return {"statuses": statuses, "described": [describe(s) for s in statuses]}

    server.add_command("fcopy.copy", copy)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--fcopy-timeout",
        type=float,
        default=None,
        metavar="S",
        help=f"seconds the simulated kernel waits for a file-copy reply (default {HV_UTIL_TIMEOUT:g})",
    )


def split_dest(dest: str, src: str) -> tuple[str, str]:
    """DEST as the host user types it: a directory ending in "/" keeps SRC's name."""
    path, _, name = dest.rpartition("/")
    return (path or "/"), (name or os.path.basename(src))


def _client_copy(args: argparse.Namespace) -> int:
    path, name = split_dest(args.dest, args.src)
    reply = call(
        args.dir,
        {
            "command": "fcopy.copy",
            "src": os.path.abspath(args.src),
            "path": path,
            "name": name,
            "overwrite": args.overwrite,
            "create_path": args.create_path,
            "fragment": args.fragment,
            "cancel_after": args.cancel_after,
        },
        timeout=3600.0,
    )
    if not reply.get("ok"):
        print(f"hvsim fcopy: {reply.get('error')}", file=sys.stderr)
        return 1
    described = reply["described"]
    print(f"START: {described[0]}")
    if len(described) > 2:
        writes = described[1:-1]
        bad = [s for s in writes if not s.startswith("S_OK")]
        print(f"WRITE x{len(writes)}: {bad[0] if bad else described[1]}")
    if len(described) > 1:
        print(f"{'CANCEL' if args.cancel_after is not None else 'END'}: {described[-1]}")
    return 0 if all(s == HvStatus.S_OK for s in reply["statuses"]) else 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="fcopy_cmd", required=True)
    c = sub.add_parser("copy", help="copy a local file into the guest (Copy-VMFile)")
    c.add_argument("src", help="file to copy")
    c.add_argument("dest", help="guest path of the file (ending in / keeps SRC's name)")
    c.add_argument("--overwrite", action="store_true", help="set OVER_WRITE")
    c.add_argument("--create-path", action="store_true", help="set CREATE_PATH")
    c.add_argument("--fragment", type=int, default=proto.DATA_FRAGMENT, help="bytes per WRITE")
    c.add_argument(
        "--cancel-after", type=int, default=None, metavar="N", help="send CANCEL after N fragments"
    )
    c.set_defaults(func=_client_copy)


# -- the demo ------------------------------------------------------------------------


def spawn_daemon(device: str, extra: list[str] | None = None, **kw: Any) -> subprocess.Popen[bytes]:
    """Start our hv_fcopy_daemon in the foreground on the simulated device."""
    proc: subprocess.Popen[bytes] = launch.popen(
        [*launch.daemon_argv("hv_fcopy_daemon"), "-n", "--device", device, *(extra or [])],
        stdin=subprocess.DEVNULL,
        **kw,
    )
    return proc


def _content(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def demo_legacy(part: Part) -> None:
    """`hvsim demo fcopy`, char-device part: Copy-VMFile through /dev/vmbus/hv_fcopy."""
    print("== file copy over the legacy char device (/dev/vmbus/hv_fcopy) ==")
    with tempfile.TemporaryDirectory(prefix="hvsim-fcopy-") as tmp:
        guest = os.path.join(tmp, "guest")
        os.mkdir(guest)
        with ChardevKernel(os.path.join(tmp, "hv_fcopy"), "hv_fcopy", timeout=10) as kernel:
            proc = spawn_daemon(kernel.path, stderr=subprocess.PIPE)
            try:
                wait_registered(kernel, proc, 20)
                host = FcopyHost(kernel)
                data = os.urandom(100_000) + "naïve — 日本語 — 😀\n".encode()
                dest = os.path.join(guest, "inbox", "2024")
                name = "Résumé-отчёт-😀.txt"

                def step(what: str, got: list[int], want: int, check: bool = True) -> None:
                    ok = got[-1] == want and (got[0] == want or got[0] == HvStatus.S_OK) and check
                    n = max(0, len(got) - 2)
                    part.check(
                        ok,
                        f"{what}: START {describe(got[0])}, {n} WRITEs, last {describe(got[-1])}",
                    )

                got = host.copy_file(data, dest, name, proto.CREATE_PATH)
                target = os.path.join(dest, name)
                same = _content(target) == data
                step(f"copy {len(data)} bytes to {target} (CREATE_PATH)", got, HvStatus.S_OK, same)
                got = host.copy_file(b"again", dest, name, 0)
                step("same name without OVER_WRITE", got, HvStatus.ERROR_ALREADY_EXISTS)
                got = host.copy_file(b"replaced\n", dest, name, proto.OVER_WRITE)
                step(
                    "same name with OVER_WRITE",
                    got,
                    HvStatus.S_OK,
                    _content(target) == b"replaced\n",
                )
                got = host.copy_file(data, dest, "partial.bin", 0, cancel_after=3)
                step(
                    "CANCEL after 3 fragments",
                    got,
                    HvStatus.S_OK,
                    not os.path.exists(os.path.join(dest, "partial.bin")),
                )
                link = os.path.join(guest, "link")
                os.symlink("/etc", link)
                os.chmod(guest, 0o1777)  # a directory where anyone could have planted it
                got = host.copy_file(b"x", link, "passwd", proto.OVER_WRITE)
                step("through a planted symlink", got, HvStatus.E_FAIL)
                print("  files in the guest:")
                for root, _dirs, files in os.walk(guest):
                    for f in sorted(files):
                        p = os.path.join(root, f)
                        st = os.stat(p)
                        print(f"    {oct(st.st_mode & 0o777)} {st.st_size:>7} {p[len(guest) :]}")
            finally:
                part.daemon_log = stop_daemon(proc).decode(errors="replace").splitlines()
            print("  daemon log:")
            for line in part.daemon_log:
                print(f"    {line}")
            part.check(
                proc.returncode == 0, f"the daemon exited with status {proc.returncode} on SIGTERM"
            )


# `hvsim demo fcopy`: both transports, each its own part of the summary.
DEMOS = (
    ("file copy over the char device", demo_legacy),
    ("file copy over the uio ring", uio.demo_uio),
)


__all__ = [
    "DEMOS",
    "FcopyHost",
    "FcopyKernel",
    "install",
    "kernel_start",
    "utf16s_to_utf8s",
]
