# SPDX-License-Identifier: GPL-2.0-only
"""Command line and process set-up shared by the daemons.

Keeps the upstream flags (-n/--no-daemon, -h/--help) and exit codes: -h
exits 0, an unknown option prints the usage and exits 1 (EXIT_FAILURE), as
tools/hv's getopt loops do.  An explicit --device PATH that does not exist
exits 1 at once (a mistyped path must not look like a hang); the default
device is waited for, because udev starts the daemon when it appears.

The C daemons parse with getopt_long(); so do these, through
getopt.gnu_getopt (it permutes like glibc and takes unique prefixes of long
options).  argparse, with the gettext it loads, would stay in every
daemon's memory for its life (0.6-0.8 MiB; benchmarks/bench_rss.py
--imports).  One table of Options makes both getopt's spec and the --help
text; the result is a slotted Args subclass, one field per option.
"""

from __future__ import annotations

import os
import sys

from . import _ffi, log
from .daemonize import daemonize
from .errors import HvError
from .service import Stopper
from .value import Value

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Callable, NoReturn, TypeVar

    _A = TypeVar("_A", bound="Args")


# getopt translates its messages through gettext, whose import compiles a
# regex and so loads re: 0.5 MiB for a daemon's life.  Without gettext getopt
# keeps its messages as written (its own fallback for a Python still being
# built), as the C daemons' are.
_WITHOUT_GETTEXT = "gettext" not in sys.modules
if _WITHOUT_GETTEXT:
    sys.modules["gettext"] = None  # type: ignore[assignment]  # its import raises ImportError
try:
    import getopt
finally:
    if _WITHOUT_GETTEXT:
        del sys.modules["gettext"]

# argparse's layout: lines of 78 columns, help text from column 24 at most.
_WIDTH = 78
_HELP_COLUMN = 24


class Refused(HvError):
    """A value the daemon cannot start with: PROG: message and exit 1, without the usage."""


class Option(Value):
    """One row of a command line's table.

    An option with a metavar takes an argument (convert turns it into the
    value, a ValueError meaning a bad one); without, it is a flag: False
    unless given.  The result's field is the long name with "_" for "-".
    """

    __slots__ = ("long", "short", "metavar", "default", "help", "convert")
    long: str
    short: str
    metavar: str | None
    default: object
    help: str
    convert: Callable[[str], object] | None

    def __init__(
        self,
        long: str,
        help: str,
        *,
        short: str = "",
        metavar: str | None = None,
        default: object = None,
        convert: Callable[[str], object] | None = None,
    ) -> None:
        self.long = long
        self.short = short
        self.metavar = metavar
        self.default = default if metavar is not None else False
        self.help = help
        self.convert = convert

    @property
    def dest(self) -> str:
        return self.long.replace("-", "_")

    @property
    def takes_argument(self) -> bool:
        return self.metavar is not None

    def invocation(self) -> str:
        """How --help names it: "-n, --no-daemon", "--device PATH"."""
        names = f"-{self.short}, --{self.long}" if self.short else f"--{self.long}"
        return f"{names} {self.metavar}" if self.metavar is not None else names

    def usage(self) -> str:
        """How the usage line names it: "[-n]", "[--device PATH]"."""
        name = f"-{self.short}" if self.short else f"--{self.long}"
        return f"[{name} {self.metavar}]" if self.metavar is not None else f"[{name}]"


HELP = Option("help", "show this help message and exit", short="h")


class Args(Value):
    """A parsed command line: a subclass names every option's field in __slots__."""

    __slots__: tuple[str, ...] = ()
    # Every daemon has -n/--no-daemon (run() reads it).
    no_daemon: bool

    def __init__(self, **values: object) -> None:
        for name in self.__slots__:
            setattr(self, name, values.pop(name))
        if values:
            raise TypeError(f"{type(self).__name__} has no field {', '.join(sorted(values))}")


def existing_device(path: str) -> str:
    """--device PATH: the path must exist when the daemon starts."""
    if not os.path.exists(path):
        raise Refused(f"no such device: {path}")
    return path


def common_options(device: str | None) -> list[Option]:
    """The options every daemon has: -n, and --device PATH unless device is None."""
    options = [Option("no-daemon", "stay in foreground, don't daemonize", short="n")]
    if device is not None:
        options.append(
            Option(
                "device",
                f"the kernel device, or a SOCK_SEQPACKET socket serving its protocol "
                f"(default {device})",
                metavar="PATH",
                default=device,
                convert=existing_device,
            )
        )
    return options


def _fill(words: Sequence[str], width: int) -> list[str]:
    """words in lines of at most width columns (a longer word gets a line of its own)."""
    lines: list[str] = []
    line = ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return [*lines, line]


class CommandLine:
    """A daemon's options: parses argv into an Args, prints usage and help."""

    __slots__ = ("prog", "description", "options")

    def __init__(self, prog: str, description: str, options: Sequence[Option]) -> None:
        self.prog = prog
        self.description = description
        self.options = (HELP, *options)

    def usage(self) -> str:
        head = f"usage: {self.prog}"
        lines = _fill([o.usage() for o in self.options], _WIDTH - len(head) - 1)
        indent = "\n" + " " * (len(head) + 1)
        return f"{head} {indent.join(lines)}\n"

    def help(self) -> str:
        column = min(max(len(o.invocation()) for o in self.options) + 4, _HELP_COLUMN)
        out = [self.usage(), *_fill(self.description.split(), _WIDTH), "", "options:"]
        for o in self.options:
            text = _fill(o.help.split(), _WIDTH - column)
            invocation = f"  {o.invocation()}"
            if len(invocation) + 2 <= column:
                out.append(f"{invocation:<{column}}{text[0]}")
            else:
                out.extend([invocation, " " * column + text[0]])
            out.extend(" " * column + line for line in text[1:])
        return "\n".join(out) + "\n"

    def fail(self, message: str) -> NoReturn:
        """The usage and PROG: message on stderr, exit 1 (EXIT_FAILURE)."""
        sys.stderr.write(self.usage())
        self.refuse(message)

    def refuse(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: {message}\n")
        raise SystemExit(1)

    def parse(self, argv: Sequence[str] | None, into: type[_A]) -> _A:
        """argv (default sys.argv[1:]) as an into; -h and errors exit here, as getopt loops do."""
        shorts = "".join(
            o.short + (":" if o.takes_argument else "") for o in self.options if o.short
        )
        longs = [o.long + ("=" if o.takes_argument else "") for o in self.options]
        try:
            pairs, rest = getopt.gnu_getopt(
                list(sys.argv[1:] if argv is None else argv), shorts, longs
            )
        except getopt.GetoptError as e:
            self.fail(e.msg)
        if rest:
            self.fail(f"unrecognized arguments: {' '.join(rest)}")
        # getopt names a long option in full, however it was abbreviated.
        named = {f"--{o.long}": o for o in self.options}
        named.update((f"-{o.short}", o) for o in self.options if o.short)
        values = {o.dest: o.default for o in self.options if o is not HELP}
        for name, arg in pairs:
            option = named[name]
            if option is HELP:
                sys.stdout.write(self.help())
                raise SystemExit(0)
            if option.convert is None:
                values[option.dest] = arg if option.takes_argument else True
                continue
            try:
                values[option.dest] = option.convert(arg)
            except Refused as e:
                self.refuse(str(e))
            except ValueError:
                self.fail(f"argument {name}: invalid value: {arg!r}")
        return into(**values)


def run(
    prog: str,
    ident: str,
    args: Args,
    body: Callable[[Stopper], int],
    *,
    debug: bool = False,
) -> int:
    """Daemonize unless -n, name the process, set up logging and signals, run body."""
    foreground = bool(args.no_daemon)
    if not foreground:
        daemonize()
    try:
        _ffi.set_process_name(prog)
    except OSError:
        pass
    log.setup(ident, foreground=foreground, debug=debug)
    stopper = Stopper()
    stopper.install()
    try:
        return body(stopper)
    except KeyboardInterrupt:
        return 0
