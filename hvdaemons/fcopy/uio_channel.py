# SPDX-License-Identifier: GPL-2.0-only
"""The uio_hv_generic channel of file copy: two mapped rings and an interrupt fd.

Mirrors the device handling of tools/hv/hv_fcopy_uio_daemon.c (open, mmap,
read/write of the interrupt count) with the ring size taken from map0's size
and the ring header size from the page size, which differ between kernels
(docs/protocol.md, "Ring sizes and the header page"); the rings themselves are
_ffi.Ring (bindings/ring.c, after tools/hv/vmbus_bufring.c).

How the device is reached
-------------------------
In production the node is the character device /dev/uioN: open(O_RDWR)
opens the VMBus channel, mmap(2R) at offset 0 maps TX then RX, read() of 4
bytes waits for an interrupt (EIO after a rescind) and write() of an s32 is
irqcontrol (1 = clear the RX interrupt mask and signal the host, 0 = set it).
The ring header is one page (mmap.PAGESIZE).

The simulator (hvsim.uio) serves the same protocol at a Unix
SOCK_SEQPACKET socket in place of the node (--dev-root DIR): on connect it
sends one message whose data is two u32s (the emulated kernel's page size,
which is the ring header size, and the map0 size) with the rings' memfd as
SCM_RIGHTS; afterwards each 4-byte message from it is an interrupt (the
event count, as read() returns), each 4-byte s32 the daemon sends is
irqcontrol, and end-of-file means the channel was rescinded.  Its sysfs tree
(--sysfs-root DIR) has the same layout as /sys.
"""

from __future__ import annotations

import errno
import mmap
import os
import socket
import stat
import struct

from .. import _ffi
from ..errors import ChannelReset

_IRQ_ON = struct.pack("<i", 1)
_SIM_HELLO = struct.Struct("<II")


class UioChannel:
    """/dev/uioN (or the simulator's socket): the two mapped rings plus the interrupt fd."""

    def __init__(
        self, fd: int, mapping: mmap.mmap, ring_size: int, header_size: int, memfd: int = -1
    ) -> None:
        self._fd = fd
        self._memfd = memfd
        self._mapping: mmap.mmap | None = mapping
        self.ring_size = ring_size
        self.header_size = header_size
        # map0: first R bytes TX (guest -> host), next R bytes RX (host -> guest).
        self.tx = _ffi.Ring(mapping, 0, ring_size, header_size)
        self.rx = _ffi.Ring(mapping, ring_size, ring_size, header_size)

    @classmethod
    def open(cls, node: str, map_size: int) -> UioChannel:
        st = os.stat(node)
        if stat.S_ISSOCK(st.st_mode):
            return cls._open_socket(node, map_size)
        fd = os.open(node, os.O_RDWR | os.O_CLOEXEC)
        try:
            mapping = mmap.mmap(fd, map_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, mapping, map_size // 2, mmap.PAGESIZE)

    @classmethod
    def _open_socket(cls, node: str, map_size: int) -> UioChannel:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            sock.connect(node)
            data, ancdata, _flags, _addr = sock.recvmsg(64, socket.CMSG_SPACE(4))
            memfd = -1
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS and len(payload) >= 4:
                    memfd = struct.unpack_from("<i", payload)[0]
            if memfd < 0 or len(data) < _SIM_HELLO.size:
                raise ChannelReset(f"{node}: no ring memory in the device's greeting")
            try:
                header_size, size = _SIM_HELLO.unpack_from(data)
                if size != map_size:
                    raise ChannelReset(f"{node}: maps {size} bytes, sysfs says {map_size}")
                mapping = mmap.mmap(
                    memfd, map_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
                )
            except BaseException:
                os.close(memfd)
                raise
        except BaseException:
            sock.close()
            raise
        return cls(sock.detach(), mapping, map_size // 2, header_size, memfd)

    def fileno(self) -> int:
        if self._fd < 0:
            raise ChannelReset("channel is closed")
        return self._fd

    def wait_interrupt(self) -> int:
        """Consume one interrupt (blocking read of the s32 event count)."""
        try:
            data = os.read(self.fileno(), 4)
        except OSError as e:
            if e.errno == errno.EIO:
                raise ChannelReset("the host rescinded the channel") from e
            raise
        if len(data) != 4:
            raise ChannelReset("the host rescinded the channel")
        count: int = struct.unpack("<i", data)[0]
        return count

    def signal(self) -> None:
        """irqcontrol(1): clears the RX mask and signals the host (the only way to notify it)."""
        os.write(self.fileno(), _IRQ_ON)

    def close(self) -> None:
        self.tx.close()
        self.rx.close()
        if self._mapping is not None:
            self._mapping.close()
            self._mapping = None
        for fd in (self._fd, self._memfd):
            if fd >= 0:
                os.close(fd)
        self._fd = self._memfd = -1
