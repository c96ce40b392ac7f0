# SPDX-License-Identifier: GPL-2.0-only
"""Logging as the C daemons do it, plus what systemd expects.

The C daemons openlog() with an ident ("KVP", "Hyper-V VSS", "HV_FCOPY",
"HV_UIO_FCOPY") and syslog() at LOG_USER.  Daemonized, we do the same.  In
the foreground we write to stderr: under systemd (JOURNAL_STREAM set) as
"<N>message", which journald maps to priority N; otherwise as
"<N>IDENT: message", so a person or a test sees level and ident.

hold()/release() keep records in memory while filesystems are frozen: a
write to a journal or log file on a frozen filesystem would block the daemon
that has to thaw it.  Once keeps a fault that repeats (a host resending a bad
message, a device that stays away) to one line.
"""

from __future__ import annotations

import logging
import os
import sys

_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


def priority(levelno: int) -> int:
    """syslog priority of a logging level."""
    for level in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO):
        if levelno >= level:
            return _PRIORITY[level]
    return 7


class _PriorityFormatter(logging.Formatter):
    def __init__(self, ident: str | None) -> None:
        super().__init__()
        self._prefix = f"{ident}: " if ident else ""

    def format(self, record: logging.LogRecord) -> str:
        # One record, one line: journald (and a reader of stderr) splits the
        # stream at newlines, so a host-supplied "\n" (a KVP key, a file
        # name) would start a forged record of its own.  syslog() keeps a
        # message whole; here the line breaks are escaped.
        msg = record.getMessage()
        if "\n" in msg or "\r" in msg:
            msg = msg.replace("\n", "\\n").replace("\r", "\\r")
        return f"<{priority(record.levelno)}>{self._prefix}{msg}"


class _HoldingHandler(logging.Handler):
    """Passes records to its target, or keeps them while held."""

    def __init__(self, target: logging.Handler) -> None:
        super().__init__()
        self.target = target
        self.held: list[logging.LogRecord] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        held = self.held
        if held is None:
            self.target.handle(record)
            return
        # Format now: arguments may change before release().
        record.msg = record.getMessage()
        record.args = None
        held.append(record)
        if self.held is not held and held:
            # release() ran in between (the VSS daemon's SIGALRM handler runs
            # between any two bytecodes): it emptied this list before our
            # append, so the record would be lost.  Emit it here.
            held.clear()
            self.target.handle(record)


_holder: _HoldingHandler | None = None


def setup(ident: str, *, foreground: bool, debug: bool = False) -> None:
    """Configure the root logger once, from the daemon's main()."""
    global _holder
    target: logging.Handler
    if foreground:
        under_journal = bool(os.environ.get("JOURNAL_STREAM"))
        target = logging.StreamHandler(sys.stderr)
        target.setFormatter(_PriorityFormatter(None if under_journal else ident))
    else:
        # Imported only when daemonized: it costs ~1 MiB of RSS under systemd.
        from logging.handlers import SysLogHandler

        class QuietSysLogHandler(SysLogHandler):
            def handleError(self, record: logging.LogRecord) -> None:
                # Like syslog(3): with no syslog daemon, messages are dropped.
                pass

        try:
            target = QuietSysLogHandler(address="/dev/log", facility=SysLogHandler.LOG_USER)
            target.ident = f"{ident}: "
        except OSError:
            target = logging.NullHandler()
    _holder = _HoldingHandler(target)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(_holder)
    root.setLevel(logging.DEBUG if debug else logging.INFO)


def hold() -> None:
    """Keep log records in memory from now on (nothing reaches disk or journal)."""
    if _holder is not None and _holder.held is None:
        _holder.held = []


def release() -> None:
    """Emit every held record, in order, and stop holding."""
    if _holder is None or _holder.held is None:
        return
    held, _holder.held = _holder.held, None
    records = list(held)
    held.clear()  # see _HoldingHandler.emit
    for record in records:
        _holder.target.handle(record)


class Once:
    """Log each kind of trouble once, until reset(): a fault that repeats costs one line.

    The kind is the key given, else the message's format string, so one
    instance can watch several troubles at once.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._said: set[object] = set()

    def __call__(self, level: int, msg: str, *args: object, key: object = None) -> bool:
        """Log msg % args unless this kind was logged since the last reset(); True if logged."""
        kind = msg if key is None else key
        if kind in self._said:
            return False
        self._said.add(kind)
        # stacklevel: the record names the caller, not this helper.
        self._logger.log(level, msg, *args, stacklevel=2)
        return True

    def reset(self) -> None:
        """Speak again about every kind (a new copy started, the device works again)."""
        self._said.clear()
