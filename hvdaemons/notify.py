# SPDX-License-Identifier: GPL-2.0-only
"""sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET.

Besides READY=1 the daemons send STATUS= lines (what `systemctl status`
shows: registration, last request, VSS state, copy progress) and, when the
unit sets WatchdogSec=, WATCHDOG=1 keep-alives from their request loops
(sd_watchdog_enabled(3): $WATCHDOG_USEC, for $WATCHDOG_PID if set).
"""

from __future__ import annotations

import os
import socket
import time

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Callable

# STATUS= lines from one daemon at most this often (seconds); state changes
# that must not be lost (a thaw, the end of a copy) are sent at once.
STATUS_INTERVAL = 1.0


def sd_notify(state: str) -> bool:
    """Send state (e.g. "READY=1") to the service manager; False if there is none."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode("utf-8", "backslashreplace"), addr)
    except OSError:
        return False
    return True


def watchdog_interval(
    environ: Mapping[str, str] | None = None, pid: int | None = None
) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of $WATCHDOG_USEC), or None without a watchdog."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    owner = env.get("WATCHDOG_PID", "")
    try:
        if not usec or int(usec) <= 0:
            return None
        if owner and int(owner) != (os.getpid() if pid is None else pid):
            return None  # meant for the process that started us
        return int(usec) / 2e6
    except ValueError:
        return None


NEVER = float("inf")


class Watchdog:
    """WATCHDOG=1 every `interval` seconds (None: no watchdog), sent by tick()
    from the loop whose liveness it vouches for -- never from a thread, so
    that a loop stuck for good stops the pings and systemd restarts it."""

    def __init__(self, interval: float | None, notify: Callable[[str], object] = sd_notify) -> None:
        self.interval = interval
        self._notify = notify
        self.next_ping = NEVER if interval is None else 0.0

    def tick(self, now: float) -> float:
        """Ping if due; return when the next ping is due (NEVER without a watchdog)."""
        if now >= self.next_ping and self.interval is not None:
            self._notify("WATCHDOG=1")
            self.next_ping = now + self.interval
        return self.next_ping

    def poll_timeout_ms(self, now: float) -> int:
        """poll()'s timeout until the next ping: -1 (none) without a watchdog."""
        if self.next_ping == NEVER:
            return -1
        return max(0, int((self.next_ping - now) * 1000) + 1)


def clock_text(wall: float) -> str:
    """A time of day for STATUS= lines (systemctl status shows the date already)."""
    return time.strftime("%H:%M:%S", time.localtime(wall))


class StatusLine:
    """The STATUS= text of a daemon, built from named parts in a fixed order.

    set() changes a part; the line is sent at once unless one was sent less
    than `interval` ago, in which case it is pending until flush() (the
    request loop calls it when due()) or the next forced set().  Without a
    service manager ($NOTIFY_SOCKET unset) nothing is kept or sent.
    """

    ORDER = ("device", "registered", "state", "copy", "last")

    def __init__(
        self,
        notify: Callable[[str], bool] = sd_notify,
        *,
        enabled: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        interval: float = STATUS_INTERVAL,
    ) -> None:
        self._notify = notify
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET")) if enabled is None else enabled
        self._clock = clock
        self.interval = interval
        self._parts: dict[str, str] = {}
        # Parts that change often (a copy's progress), rendered only when a
        # line is actually sent.
        self._lazy: dict[str, Callable[[], str]] = {}
        self.next_send = 0.0  # monotonic time from which a line may be sent
        self.pending = False
        self.text = ""

    def set(self, part: str, text: str, *, force: bool = False) -> None:
        if not self.enabled:
            return
        self._lazy.pop(part, None)
        if self._parts.get(part, "") == text:
            return
        self._parts[part] = text
        self.pending = True
        self.flush(force=force)

    def update(self, part: str, render: Callable[[], str]) -> None:
        """Change a part that changes often: render() runs only when a line is
        sent (at once if the interval allows, else at the next flush())."""
        if not self.enabled:
            return
        self._lazy[part] = render
        self.pending = True
        self.flush()

    def due(self) -> float | None:
        """When the pending line may be sent (monotonic), None if nothing is pending."""
        return self.next_send if self.pending else None

    def flush(self, now: float | None = None, *, force: bool = False) -> None:
        if not self.pending:
            return
        t = self._clock() if now is None else now
        if t < self.next_send and not force:
            return
        for part, render in self._lazy.items():
            self._parts[part] = render()
        self._lazy.clear()
        order = [p for p in self.ORDER if p in self._parts]
        order += [p for p in self._parts if p not in self.ORDER]
        self.text = "; ".join(self._parts[p] for p in order if self._parts[p])
        self.pending = False
        self.next_send = t + self.interval
        self._notify("STATUS=" + self.text)
