# SPDX-License-Identifier: GPL-2.0-only
"""Logging as the C daemons do it, plus what systemd expects.

The C daemons openlog() with an ident ("KVP", "Hyper-V VSS", "HV_FCOPY",
"HV_UIO_FCOPY") and syslog() at LOG_USER.  Daemonized, we do the same, through
the standard library's syslog module (that very API).  In the foreground we
write to stderr: under systemd (JOURNAL_STREAM set) as "<N>message", which
journald maps to priority N; otherwise as "<N>IDENT: message", so a person or
a test sees level and ident.  Levels are syslog priorities.

Not the standard library's logging: it brings re, traceback, string, warnings
and more, over 1.5 MiB that would stay in every daemon's memory (README.md,
"Memory").  Logging must never take a daemon down: a message that does not
format, or a write that fails, costs at most the line.

hold()/release() keep records in memory while filesystems are frozen: a
write to a journal or log file on a frozen filesystem would block the daemon
that has to thaw it.  Once keeps a fault that repeats (a host resending a bad
message, a device that stays away) to one line.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Protocol

    class Sink(Protocol):
        def emit(self, name: str, level: int, message: str) -> None: ...


# syslog(3) priorities, as <syslog.h> numbers them.
CRITICAL = 2
ERROR = 3
WARNING = 4
NOTICE = 5
INFO = 6
DEBUG = 7


class _LastResort:
    """Before setup() (library use, hvctl): the message alone to stderr, as logging does."""

    __slots__ = ()

    def emit(self, name: str, level: int, message: str) -> None:
        try:
            sys.stderr.write(message + "\n")
        except (OSError, ValueError, AttributeError):  # closed or no stderr
            pass


class _Stderr:
    """The foreground: one write(2) per record, "<N>" first for journald."""

    __slots__ = ("_prefix",)

    def __init__(self, ident: str | None) -> None:
        self._prefix = f"{ident}: " if ident else ""

    def emit(self, name: str, level: int, message: str) -> None:
        # One record, one line: journald (and a reader of stderr) splits the
        # stream at newlines, so a host-supplied "\n" (a KVP key, a file
        # name) would start a forged record of its own.  syslog() keeps a
        # message whole; here the line breaks are escaped.
        if "\n" in message or "\r" in message:
            message = message.replace("\n", "\\n").replace("\r", "\\r")
        line = f"<{level}>{self._prefix}{message}\n"
        try:
            # Host-supplied names may carry lone surrogates.
            os.write(2, line.encode("utf-8", "backslashreplace"))
        except OSError:  # EPIPE, EAGAIN, ENOSPC, a closed fd 2: the line is lost
            pass


class _Syslog:
    """Daemonized: openlog(ident, 0, LOG_USER) and syslog(), as tools/hv's main()s do."""

    __slots__ = ("_syslog",)

    def __init__(self, ident: str) -> None:
        # Imported only here: a foreground daemon never needs it.
        import syslog

        syslog.openlog(ident, 0, syslog.LOG_USER)
        self._syslog = syslog.syslog

    def emit(self, name: str, level: int, message: str) -> None:
        try:
            self._syslog(level, message)
        except ValueError:  # a lone surrogate (UnicodeEncodeError), a NUL
            text = message.encode("utf-8", "backslashreplace").decode("utf-8")
            self._syslog(level, text.replace("\0", "\\x00"))


_sink: Sink = _LastResort()
_threshold = WARNING  # the least severe priority emitted
_held: list[tuple[str, int, str]] | None = None


def _emit(name: str, level: int, message: str) -> None:
    held = _held
    if held is None:
        _sink.emit(name, level, message)
        return
    held.append((name, level, message))
    if _held is not held and held:
        # release() ran in between (the VSS daemon's SIGALRM handler runs
        # between any two bytecodes): it emptied this list before our
        # append, so the record would be lost.  Emit it here.
        held.clear()
        _sink.emit(name, level, message)


def _format(msg: str, args: tuple[object, ...]) -> str:
    if not args:
        return msg  # like logging: no args, no % (a "%" in the text stays)
    try:
        return msg % args
    except Exception:  # a bad format must cost the line, not the daemon
        try:
            return f"{msg} {args!r}"
        except Exception:
            return msg


class Logger:
    """The few methods of logging.Logger the daemons use; levels are syslog priorities."""

    __slots__ = ("name",)

    # log.WARNING in a module whose logger is `log`.
    CRITICAL = CRITICAL
    ERROR = ERROR
    WARNING = WARNING
    NOTICE = NOTICE
    INFO = INFO
    DEBUG = DEBUG

    def __init__(self, name: str) -> None:
        self.name = name

    def isEnabledFor(self, level: int) -> bool:
        return level <= _threshold

    def log(self, level: int, msg: str, *args: object) -> None:
        if level <= _threshold:
            _emit(self.name, level, _format(msg, args))

    def debug(self, msg: str, *args: object) -> None:
        self.log(DEBUG, msg, *args)

    def info(self, msg: str, *args: object) -> None:
        self.log(INFO, msg, *args)

    def warning(self, msg: str, *args: object) -> None:
        self.log(WARNING, msg, *args)

    def error(self, msg: str, *args: object) -> None:
        self.log(ERROR, msg, *args)

    def exception(self, msg: str, *args: object) -> None:
        """error(), followed by the traceback of the exception being handled."""
        if self.isEnabledFor(ERROR):
            # A rare path, not worth its memory at start.  Importing only reads
            # (the VSS daemon writes no .pyc), which a frozen filesystem serves.
            import traceback

            trace = traceback.format_exc().rstrip("\n")
            _emit(self.name, ERROR, f"{_format(msg, args)}\n{trace}")


_loggers: dict[str, Logger] = {}


def get(name: str) -> Logger:
    """The logger called name (one per name, as logging.getLogger)."""
    logger = _loggers.get(name)
    if logger is None:
        logger = _loggers[name] = Logger(name)
    return logger


def setup(ident: str, *, foreground: bool, debug: bool = False) -> None:
    """Choose where records go, from the daemon's main(); records held stay held."""
    global _sink, _threshold
    if foreground:
        _sink = _Stderr(None if os.environ.get("JOURNAL_STREAM") else ident)
    else:
        _sink = _Syslog(ident)
    _threshold = DEBUG if debug else INFO


def hold() -> None:
    """Keep log records in memory from now on (nothing reaches disk or journal)."""
    global _held
    if _held is None:
        _held = []


def release() -> None:
    """Emit every held record, in order, and stop holding."""
    global _held
    held = _held
    if held is None:
        return
    _held = None
    records = list(held)
    held.clear()  # see _emit
    for record in records:
        _sink.emit(*record)


class Record:
    """One record as a Capture keeps it."""

    __slots__ = ("name", "level", "message")

    def __init__(self, name: str, level: int, message: str) -> None:
        self.name = name
        self.level = level
        self.message = message

    def __repr__(self) -> str:
        return f"Record({self.name!r}, {self.level}, {self.message!r})"


class Capture:
    """A sink that keeps the records; `with capture() as c:` puts it in place.

    On leaving, the sink and level from before come back.
    """

    def __init__(self, level: int = DEBUG) -> None:
        self.level = level
        self.records: list[Record] = []
        self._saved: tuple[Sink, int] | None = None

    def emit(self, name: str, level: int, message: str) -> None:
        self.records.append(Record(name, level, message))

    def messages(self, level: int = DEBUG) -> list[str]:
        """The messages of the records at level or more severe, in order."""
        return [r.message for r in self.records if r.level <= level]

    @property
    def text(self) -> str:
        """Every record as "<N>name: message", one a line."""
        return "".join(f"<{r.level}>{r.name}: {r.message}\n" for r in self.records)

    def clear(self) -> None:
        self.records.clear()

    def __enter__(self) -> Capture:
        global _sink, _threshold
        self._saved = (_sink, _threshold)
        _sink, _threshold = self, self.level
        return self

    def __exit__(self, *exc: object) -> None:
        global _sink, _threshold
        if self._saved is not None:
            _sink, _threshold = self._saved
            self._saved = None


def capture(level: int = DEBUG) -> Capture:
    """A Capture of every record at level or more severe, for `with`."""
    return Capture(level)


class Once:
    """Log each kind of trouble once, until reset(): a fault that repeats costs one line.

    The kind is the key given, else the message's format string, so one
    instance can watch several troubles at once.
    """

    def __init__(self, logger: Logger) -> None:
        self._logger = logger
        self._said: set[object] = set()

    def __call__(self, level: int, msg: str, *args: object, key: object = None) -> bool:
        """Log msg % args unless this kind was logged since the last reset(); True if logged."""
        kind = msg if key is None else key
        if kind in self._said:
            return False
        self._said.add(kind)
        self._logger.log(level, msg, *args)
        return True

    def reset(self) -> None:
        """Speak again about every kind (a new copy started, the device works again)."""
        self._said.clear()
