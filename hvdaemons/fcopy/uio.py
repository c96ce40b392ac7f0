# SPDX-License-Identifier: GPL-2.0-only
"""The uio_hv_generic transport of file copy (kernels from 6.10): IC messages on VMBus rings.

Mirrors the main loop of tools/hv/hv_fcopy_uio_daemon.c and its version
negotiation (vmbus_prep_negotiate_resp() of drivers/hv/channel_mgmt.c, through
hvdaemons.protocol.icmsg), without the daemon's defects: every packet
is drained per interrupt with the ring re-checked after unmasking, responses
echo the request's trans_id, the host is signalled only when the ring rules
require it, a malformed packet is skipped (answered when it carries an IC
header), and a rescinded channel is closed and waited for again.  Finding and
binding the device is hvdaemons.fcopy.discovery and .binding, the mapped
rings hvdaemons.fcopy.uio_channel; file-copy messages go to the shared
dispatch, and the WRITEs of a running copy are served in C
(_ffi.Ring.fcopy_writes).
"""

from __future__ import annotations

import errno
import os
import select
import time

from .. import _ffi
from ..errors import ChannelReset, ProtocolError
from ..log import get
from ..notify import StatusLine, Watchdog, sd_notify, watchdog_interval
from ..protocol import icmsg
from ..protocol.status import HvStatus
from ..service import Missing, Stopper, wait_for_device
from ..vmbus import UIO_DRIVER
from .dispatch import Dispatch
from .uio_channel import UioChannel

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Callable

    from .binding import Binder
    from .discovery import Discovery, UioDevice
    from .writer import FileCopier

log = get(__name__)

IDENT = "HV_UIO_FCOPY"

# How often a missing device is looked for again (udev events wake us earlier).
RESCAN_INTERVAL = 1.0
# How often an unbound device is looked at while uio_hv_generic binds it.
BIND_POLL = 0.2
# How long a response may wait for room in a full TX ring.
TX_FULL_TIMEOUT = 30.0
# Busy-wait this long for the host's next request before sleeping in poll():
# during a copy the next WRITE follows within microseconds, and spinning with
# the interrupt masked saves the host's signal and our wake-up.  Idle cost:
# one spin after each burst.
DEFAULT_SPIN_NS = 200_000


class _Limiter:
    """At most `burst` log lines per `period` seconds for one kind of trouble."""

    def __init__(self, burst: int = 10, period: float = 60.0) -> None:
        self.burst = burst
        self.period = period
        self._start = -period
        self._count = 0
        self._dropped = 0

    def __call__(self, level: int, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._start >= self.period:
            if self._dropped:
                log.warning("%d similar messages suppressed", self._dropped)
            self._start, self._count, self._dropped = now, 0, 0
        if self._count < self.burst:
            self._count += 1
            log.log(level, msg, *args)
        else:
            self._dropped += 1


class IcHandler:
    """Turns one host packet into the response payload (or None when there is nothing to answer)."""

    def __init__(self, copier: FileCopier) -> None:
        self._fcopy_status = Dispatch(copier, utf16=True).status
        self.negotiated: tuple[icmsg.Version, icmsg.Version] | None = None
        self._complain = _Limiter()

    def handle(self, raw: bytes) -> tuple[bytes, int] | None:
        """(response payload, trans_id) for a raw packet from the RX ring."""
        try:
            pkt = icmsg.decode_packet(raw)
        except ProtocolError as e:
            self._complain(log.WARNING, "dropping packet: %s", e)
            return None
        if pkt.type != icmsg.VM_PKT_DATA_INBAND:
            self._complain(log.WARNING, "dropping VMBus packet of type %d", pkt.type)
            return None
        try:
            hdr = icmsg.decode_header(pkt.payload)
        except ProtocolError as e:
            self._complain(log.WARNING, "dropping packet: %s", e)
            return None
        if hdr.is_response:
            self._complain(log.WARNING, "dropping unexpected IC response (type %d)", hdr.msgtype)
            return None
        if hdr.msgtype == icmsg.ICMSGTYPE_NEGOTIATE:
            neg = icmsg.negotiate(pkt.payload)
            if neg.framework is not None and neg.service is not None:
                self.negotiated = (neg.framework, neg.service)
                log.info(
                    "negotiated framework %d.%d, file copy %d.%d",
                    *neg.framework,
                    *neg.service,
                )
            else:
                self._complain(log.ERROR, "IC version negotiation failed")
            return neg.reply, pkt.trans_id
        if hdr.msgtype == icmsg.ICMSGTYPE_FCOPY:
            status = self._fcopy_status(icmsg.body(pkt.payload))
            return icmsg.encode_status_reply(pkt.payload, status), pkt.trans_id
        self._complain(log.WARNING, "unexpected IC message type %d", hdr.msgtype)
        return icmsg.encode_status_reply(pkt.payload, HvStatus.E_FAIL), pkt.trans_id


class _Stopped(Exception):
    """A stop request, unwinding serve() from wherever it waits.

    Not an HvError: it reports no fault, and no handler of faults may catch
    it.  It never leaves this module (run() ends on it).
    """


class UioFcopyDaemon:
    """Find the device, serve its channel, wait for it again after a rescind."""

    def __init__(
        self,
        discovery: Discovery,
        copier: FileCopier,
        stopper: Stopper,
        *,
        binder: Binder | None = None,
        spin_ns: int = DEFAULT_SPIN_NS,
        notify: Callable[[str], object] | None = None,
        watchdog: float | None = None,
        status: StatusLine | None = None,
    ) -> None:
        self.discovery = discovery
        self.binder = binder
        self.handler = IcHandler(copier)
        self.copier = copier
        self.stopper = stopper
        self.spin_ns = spin_ns
        self._notify = notify
        self._ready_sent = False
        # Pinged from this loop only (the ring service, the waits): if it is
        # stuck for good, systemd restarts the daemon.
        self._watchdog = Watchdog(watchdog, notify or sd_notify)
        self._rescan = RESCAN_INTERVAL if watchdog is None else min(RESCAN_INTERVAL, watchdog)
        # The STATUS= line the copy's progress goes to (flushed by this loop).
        self.status = status if status is not None else StatusLine(enabled=False)
        self._chan: UioChannel | None = None
        self._complain = _Limiter()

    # -- device lifecycle ---------------------------------------------------------------

    def _look(self) -> UioDevice | Missing:
        """The bound device, binding it if need be; or why there is none yet."""
        dirs = self.discovery.fcopy_devices()
        for vmbus_dir in dirs:
            dev = self.discovery.uio_device(vmbus_dir)
            if dev is not None:
                return dev
            if self.binder is not None:
                self.binder.bind(vmbus_dir)
        if dirs:
            return Missing(
                log.INFO,
                "waiting for %s to bind the file-copy device",
                (UIO_DRIVER,),
                retry=BIND_POLL,
            )
        # The host has Guest Services disabled, or has not offered it yet.
        return Missing(
            log.INFO,
            "no file-copy VMBus device (Guest Service Interface disabled?); waiting",
            retry=self._rescan,
        )

    def _open(self) -> tuple[UioDevice, UioChannel] | Missing:
        """The device and its open channel; or why there is none yet."""
        # Waiting for the device is not being stuck: keep pinging.
        self._watchdog.tick(time.monotonic())
        dev = self._look()
        if isinstance(dev, Missing):
            return dev
        try:
            return dev, UioChannel.open(dev.node, dev.map_size)
        except (OSError, ChannelReset) as e:
            why = str(e)
            # Each distinct failure is said once until the channel opens.
            return Missing(
                log.ERROR,
                "open %s failed: %s",
                (dev.node, why),
                self._rescan,
                key=("open", why),
            )

    def run(self) -> int:
        while not self.stopper.requested:
            found = wait_for_device(self._open, self.stopper, logger=log, wake=self.discovery)
            if found is None:
                break
            dev, self._chan = found
            # While served, the channel itself says when it is rescinded; the
            # next wait for the device listens to uevents again.
            self.discovery.close()
            log.info(
                "%s: ring %d bytes per direction, header %d",
                dev.node,
                self._chan.ring_size,
                self._chan.header_size,
            )
            try:
                self.serve(self._chan)
            except (OSError, ChannelReset) as e:
                log.error("%s: %s; waiting for the device", dev.node, e)
            except _Stopped:
                pass
            finally:
                # A rescind or stop ends the transfer: the partial file goes.
                self.copier.abort()
                self._chan.close()
                self._chan = None
            if not self.stopper.requested:
                self._wait_gone(dev)
        return 0

    def _wait_gone(self, dev: UioDevice) -> None:
        """After a rescind, give the device a moment to disappear so it is not reopened at once."""
        deadline = time.monotonic() + 1.0
        while not self.stopper.requested and time.monotonic() < deadline:
            if not os.path.exists(dev.node):
                return
            self.stopper.wait(0.05, self.discovery)

    # -- channel --------------------------------------------------------------------------

    def serve(self, chan: UioChannel) -> None:
        """Run one open channel until it is rescinded (raises) or the daemon stops."""
        poller = select.poll()
        poller.register(self.stopper.fileno(), select.POLLIN)
        poller.register(chan.fileno(), select.POLLIN)
        # Step 3 of the sequence: unmask RX, then take whatever is already there.
        self._service(chan)
        if self._notify is not None and not self._ready_sent:
            self._notify("READY=1")
            self._ready_sent = True
        watchdog, status = self._watchdog, self.status
        while not self.stopper.requested:
            now = time.monotonic()
            timeout = watchdog.poll_timeout_ms(now)
            if status.pending:
                # A copy's progress is waiting for the line's interval.
                wait = max(0, int((status.next_send - now) * 1000) + 1)
                timeout = wait if timeout < 0 else min(timeout, wait)
            try:
                events = poller.poll(timeout)
            except InterruptedError:
                continue
            now = time.monotonic()
            watchdog.tick(now)
            status.flush(now)
            for fd, ev in events:
                if fd == self.stopper.fileno():
                    self.stopper.drain()
                    continue
                if (
                    ev & (select.POLLERR | select.POLLHUP | select.POLLNVAL)
                    and not ev & select.POLLIN
                ):
                    raise ChannelReset("the host rescinded the channel")
                chan.wait_interrupt()
                self._service(chan)

    def _service(self, chan: UioChannel) -> None:
        """Drain RX completely, unmask, re-check; spin briefly for the next request."""
        rx = chan.rx
        while True:
            spun = self._drain(chan)
            if self.stopper.requested:
                raise _Stopped()
            # Both kernel variants: <= 6.17 set the mask in its interrupt
            # callback, later ones leave it to us (docs/protocol.md, "Who sets
            # the interrupt mask").  Clear it ourselves (no hypercall), then
            # look again: the host skips its signal while the mask is set.
            try:
                if self.spin_ns > 0 and not spun:
                    rx.set_mask(1)
                    if rx.poll(self.spin_ns):
                        continue
                if rx.set_mask(0) == 0:
                    return
            except OSError as e:
                if e.errno != errno.EBADMSG:
                    raise
                # An index went bad while we looked: _drain deals with it.
                continue

    def _fast_writes(self, chan: UioChannel) -> bool:
        """Let C serve a run of WRITEs of the current copy; True if it then spun idle."""
        fd = self.copier.data_fd
        if fd < 0:
            return False
        while True:
            served, state = chan.rx.fcopy_writes(chan.tx, chan.fileno(), fd, self.spin_ns)
            if served:
                # A long copy runs here for a while: ping, and show how far it got.
                self._watchdog.tick(time.monotonic())
                self.copier.note_progress()
            if state != _ffi.FAST_LIMIT:
                return state == _ffi.FAST_IDLE
            if self.stopper.requested:
                return False

    def _drain(self, chan: UioChannel) -> bool:
        """Handle every packet in RX; True if the last step already spun for more."""
        rx = chan.rx
        while True:
            try:
                if self._fast_writes(chan):
                    return True
            except OSError as e:
                if e.errno != errno.EBADMSG:
                    raise
                # A ring index the C loop cannot trust: the ordinary path
                # below meets the same fault and tells which one it is (RX:
                # dropped and resynchronised; TX: the answer fails).
            try:
                packets, wake_host = rx.recv_batch()
            except OSError as e:
                if e.errno not in (errno.EBADMSG, errno.EMSGSIZE):
                    raise
                self._corrupt(chan, e)
                continue
            if wake_host:
                chan.signal()
            if not packets:
                return False
            for raw in packets:
                answer = self.handler.handle(raw)
                if answer is not None:
                    self._send(chan, *answer)

    def _corrupt(self, chan: UioChannel, error: OSError) -> None:
        """A descriptor or index we cannot trust: drop what is readable rather than wedge.

        The next packet boundary is unknowable, so everything the host has
        published goes; its next request starts at the write index again.
        """
        dropped, wake_host = chan.rx.discard()
        self._complain(
            log.ERROR,
            "corrupt packet in the receive ring (%s); dropped %d bytes",
            os.strerror(error.errno or 0),
            dropped,
        )
        if wake_host:
            chan.signal()

    def _send(self, chan: UioChannel, payload: bytes, trans_id: int) -> None:
        deadline = 0.0
        while True:
            try:
                wake_host = chan.tx.send(payload, trans_id)
            except BlockingIOError:
                # pending_send_sz is set: the host signals once it has made room.
                now = time.monotonic()
                if not deadline:
                    deadline = now + TX_FULL_TIMEOUT
                elif now >= deadline:
                    self._complain(log.ERROR, "host does not drain the send ring; response dropped")
                    return
                self._wait_tx(chan, deadline - now)
                continue
            if wake_host:
                chan.signal()
            return

    def _wait_tx(self, chan: UioChannel, timeout: float) -> None:
        ready, _, _ = select.select(
            [chan.fileno(), self.stopper.fileno()], [], [], min(timeout, 1.0)
        )
        if self.stopper.requested:
            raise _Stopped()
        self._watchdog.tick(time.monotonic())  # a bounded wait (TX_FULL_TIMEOUT)
        if chan.fileno() in ready:
            chan.wait_interrupt()


def run(
    discovery: Discovery,
    binder: Binder | None,
    copier: FileCopier,
    stopper: Stopper,
    status: StatusLine | None = None,
) -> int:
    """Serve file copy over uio_hv_generic until stopped."""
    return UioFcopyDaemon(
        discovery,
        copier,
        stopper,
        binder=binder,
        notify=sd_notify,
        watchdog=watchdog_interval(),
        status=status,
    ).run()
