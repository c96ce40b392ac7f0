# SPDX-License-Identifier: GPL-2.0-only
"""The request loop shared by the hv_utils char-device daemons.

Mirrors the main loops of tools/hv/hv_{kvp,vss,fcopy}_daemon.c: register,
then read one request, handle it, write one reply.  Like upstream since its
hibernation fixes, a failed read or write closes the device, reopens it and
registers again.  Unlike upstream nothing calls exit() on the way: a bad
message gets a failure reply, a lost device is waited for, and only a stop
signal ends the loop.

Stopper and wait_for_device() serve every daemon, the uio file-copy transport
included: the one way to stop, and the one way to wait for a device while
saying so once.
"""

from __future__ import annotations

import os
import select
import signal
import time

from .errors import ChannelReset, ProtocolError
from .log import Logger, Once, get
from .notify import NEVER, StatusLine, Watchdog, clock_text, sd_notify, watchdog_interval
from .value import Value

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Callable, Protocol, TypeVar

    from .transport import Channel

    T = TypeVar("T")

log = get(__name__)

# How often a missing device is looked for again.
REOPEN_INTERVAL = 1.0

_POLLIN = select.POLLIN
_POLL_GONE = select.POLLHUP | select.POLLERR | select.POLLNVAL
# Service(watchdog=...) default: take the interval from $WATCHDOG_USEC.
WATCHDOG_FROM_ENV = -1.0


if TYPE_CHECKING:
    # For the type checker only: a Protocol defined at run time needs typing.

    class Handler(Protocol):
        """What a daemon plugs into the loop."""

        def registration(self) -> bytes | None:
            """The message that registers the daemon after open(), or None if there is none."""

        def registration_reply(self, msg: bytes) -> bool:
            """Take the kernel's registration reply.

            Return False if msg is not one (it is then handled as a request, as
            the KVP reference does); raise ProtocolError if it is unusable.
            """

        def handle(self, msg: bytes) -> bytes | None:
            """Handle one request; return the reply to write, or None for none."""

        def failure_reply(self, msg: bytes) -> bytes | None:
            """The reply for a request whose handling raised."""

        def reset(self) -> None:
            """The channel was lost: undo per-connection state (VSS thaws, fcopy cancels)."""

        def stop(self) -> None:
            """The daemon is stopping."""

        # Optional: describe(msg) -> str, a short name of a request ("GET pool 1")
        # for the STATUS= line; without it the line shows no last request.

    class Wakeup(Protocol):
        """Besides a stop request, what ends a wait for a device early (the kernel's uevents)."""

        def wake_fd(self) -> int | None:
            """A descriptor readable when devices change, or None to look again by timer only."""

        def drain_events(self) -> None:
            """Consume what made wake_fd() readable."""


class Stopper:
    """SIGTERM/SIGINT set a flag and wake the poll loop through a pipe."""

    def __init__(self) -> None:
        self.requested = False
        self.signum = 0
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def install(self) -> None:
        signal.set_wakeup_fd(self._w, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.requested = True
        self.signum = signum

    def request(self) -> None:
        """Ask the loop to stop (from another thread or a test)."""
        self.requested = True
        try:
            os.write(self._w, b"\0")
        except BlockingIOError:
            pass

    def fileno(self) -> int:
        return self._r

    def drain(self) -> None:
        try:
            while os.read(self._r, 512):
                pass
        except BlockingIOError:
            pass

    def wait(self, timeout: float, wake: Wakeup | None = None) -> None:
        """Sleep up to timeout seconds, waking early on a stop request or an event of wake."""
        if self.requested:
            return
        fds = [self._r]
        event_fd = None if wake is None else wake.wake_fd()
        if event_fd is not None:
            fds.append(event_fd)
        ready, _, _ = select.select(fds, [], [], timeout)
        if wake is not None and event_fd in ready:
            wake.drain_events()
        self.drain()


class Missing(Value):
    """Why the device cannot be used yet (a log line: level, message, args), and when to look again.

    key: the kind of trouble, for saying it once (see wait_for_device()); by
    default every reason is one kind, "the device is missing".
    """

    __slots__ = ("level", "message", "args", "retry", "key")

    def __init__(
        self,
        level: int,
        message: str,
        args: tuple[object, ...] = (),
        retry: float = REOPEN_INTERVAL,
        key: object = None,
    ) -> None:
        self.level = level
        self.message = message
        self.args = args
        self.retry = retry
        self.key = key


def wait_for_device(
    look: Callable[[], T | Missing],
    stopper: Stopper,
    *,
    logger: Logger = log,
    wake: Wakeup | None = None,
) -> T | None:
    """Call look() until it returns the device; None if a stop request comes first.

    While look() returns Missing, the first reason of each kind (Missing.key)
    is logged, once per wait (a host with the service turned off must not fill
    the journal), and the next look comes after its retry interval, or sooner
    on an event of wake.
    """
    say = Once(logger)
    while not stopper.requested:
        found = look()
        if not isinstance(found, Missing):
            return found
        say(
            found.level, found.message, *found.args, key=Missing if found.key is None else found.key
        )
        stopper.wait(found.retry, wake)
    return None


class Service:
    """Runs a Handler over a Channel until stopped."""

    def __init__(
        self,
        channel: Channel,
        handler: Handler,
        *,
        stopper: Stopper | None = None,
        notify: Callable[[str], bool] = sd_notify,
        device_name: str = "device",
        status: StatusLine | None = None,
        watchdog: float | None = WATCHDOG_FROM_ENV,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.channel = channel
        self.handler = handler
        self.stopper = stopper or Stopper()
        self._notify = notify
        self._device = device_name
        self._registered = False
        self._ready_sent = False
        self.status = status if status is not None else StatusLine(notify)
        if watchdog is not None and watchdog < 0:
            watchdog = watchdog_interval()
        self._watchdog = Watchdog(watchdog, notify)
        self._clock = clock
        self._wall = wall
        describe = getattr(handler, "describe", None)
        self._describe: Callable[[bytes], str] | None = describe if callable(describe) else None
        self._track = self.status.enabled and self._describe is not None
        self._last: bytes | None = None  # a request not yet on the STATUS= line
        self._last_at = 0.0
        self._due = NEVER if watchdog is None else 0.0

    # -- systemd: STATUS= and the watchdog -----------------------------------

    def _tick(self, now: float) -> float:
        """Ping the watchdog and update STATUS= if due; return the next deadline."""
        nxt = self._watchdog.tick(now)
        status = self.status
        last = self._last
        if last is not None and self._describe is not None and now >= status.next_send:
            self._last = None
            try:
                what = self._describe(last)
            except Exception:  # a describe() bug must not cost a request
                what = f"of {len(last)} bytes"
            when = self._wall() - (now - self._last_at)
            status.set("last", f"last request {what} at {clock_text(when)}")
        status.flush(now)
        if status.pending or self._last is not None:
            nxt = min(nxt, status.next_send)
        return nxt

    def _timeout_ms(self) -> int:
        if self._due == NEVER:
            return -1
        return max(0, int((self._due - self._clock()) * 1000) + 1)

    # -- connection ------------------------------------------------------

    def _connect(self) -> bool:
        """Open if needed and register; wait while the device is missing.  False if stopped."""
        return wait_for_device(self._open, self.stopper) is not None

    def _open(self) -> bool | Missing:
        try:
            if self.channel.closed:
                self.channel.reopen()
            reg = self.handler.registration()
            if reg is not None:
                self.channel.write(reg)
                self._registered = False
            else:
                self._registered = True
                self._ready()
            self.status.set("device", "")
            return True
        except (OSError, ChannelReset) as e:
            self._close()
            self.status.set("device", f"waiting for {self._device}", force=True)
            # Waiting for the device is not being stuck: keep pinging.
            self._due = self._tick(self._clock())
            retry = REOPEN_INTERVAL
            if self._watchdog.interval is not None:
                retry = min(retry, self._watchdog.interval)
            return Missing(
                log.ERROR,
                "open %s failed; error: %s; retrying",
                (self._device, _describe(e)),
                retry,
            )

    def _close(self) -> None:
        try:
            self.channel.close()
        except OSError:
            pass

    def _ready(self) -> None:
        if not self._ready_sent:
            self._notify("READY=1")
            self._ready_sent = True

    def _reset(self, why: BaseException) -> bool:
        # The handler first: VSS must thaw before anything is logged.
        self.handler.reset()
        log.error("%s: %s; reopening", self._device, _describe(why))
        self._close()
        return self._connect()

    # -- loop --------------------------------------------------------------

    def run(self) -> int:
        """Serve until a stop signal; return the exit status."""
        if not self._connect():
            self._finish()
            return 0
        poller = select.poll()
        stopper = self.stopper
        stop_fd = stopper.fileno()
        poller.register(stop_fd, select.POLLIN)
        fd = self.channel.fileno()
        poller.register(fd, select.POLLIN)
        # Bound once: this loop runs per request, and each lookup shows in
        # the round-trip time (the host waits on it).
        poll, one, read, clock = poller.poll, self._one, self.channel.read, self._clock
        track, status = self._track, self.status
        due = self._due = self._tick(clock())  # STATUS=/watchdog deadline (monotonic)
        while not stopper.requested:
            try:
                events = poll(-1 if due == NEVER else self._timeout_ms())
            except InterruptedError:
                continue
            ready = 0
            for event_fd, event in events:
                if event_fd == fd:
                    ready = event
                else:
                    stopper.drain()
            if stopper.requested:
                break
            if not ready:
                due = self._due = self._tick(clock())
                continue
            try:
                if ready & _POLLIN:
                    msg = read()
                    if one(msg) and track:
                        self._last = msg
                        self._last_at = now = clock()
                        if now >= due or due == NEVER:
                            due = self._due = self._tick(now)
                    elif due != NEVER and clock() >= due:
                        due = self._due = self._tick(clock())
                    if status.pending and status.next_send < due:
                        # A part changed during the request (a copy's progress):
                        # wake up to send it once the interval allows.
                        due = self._due = status.next_send
                elif ready & _POLL_GONE:
                    raise ChannelReset("device hung up")
            except (OSError, ChannelReset) as e:
                poller.unregister(fd)
                if not self._reset(e):
                    break
                due = self._due  # _connect() ticked while it waited
                fd = self.channel.fileno()
                poller.register(fd, select.POLLIN)
                read = self.channel.read
        self._finish()
        return 0

    def _one(self, msg: bytes) -> bool:
        """Handle one message; False if it was the registration reply."""
        if not self._registered:
            try:
                taken = self.handler.registration_reply(msg)
            except ProtocolError as e:
                raise ChannelReset(f"bad registration reply: {e}") from e
            if taken:
                self._registered = True
                self._ready()
                return False
        try:
            reply = self.handler.handle(msg)
        except Exception:  # a bug or bad input must not end the daemon
            log.exception("request of %d bytes failed", len(msg))
            reply = self.handler.failure_reply(msg)
        if reply is not None:
            self.channel.write(reply)
        return True

    def _finish(self) -> None:
        self.handler.stop()
        self._close()


def _describe(e: BaseException) -> str:
    if isinstance(e, OSError) and e.errno is not None:
        return f"{e.errno} {os.strerror(e.errno)}"
    return str(e)
