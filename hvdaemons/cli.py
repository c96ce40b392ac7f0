# SPDX-License-Identifier: GPL-2.0-only
"""Command line and process set-up shared by the daemons.

Keeps the upstream flags (-n/--no-daemon, -h/--help) and exit codes: -h
exits 0, an unknown option prints the usage and exits 1 (EXIT_FAILURE), as
tools/hv's getopt loops do.  An explicit --device PATH that does not exist
exits 1 at once (a mistyped path must not look like a hang); the default
device is waited for, because udev starts the daemon when it appears.
"""

from __future__ import annotations

import argparse
import os
import sys

from . import _ffi, log
from .daemonize import daemonize
from .service import Stopper

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any, Callable, NoReturn


class _Parser(argparse.ArgumentParser):
    # argparse builds a formatter for every add_argument() (to check the
    # option), and a formatter asks shutil for the terminal's width: shutil
    # brings bz2 and lzma, 0.5 MiB that would stay in every daemon's memory
    # for its life.  Only usage and help text need the width.
    _text = False

    def _get_formatter(self) -> argparse.HelpFormatter:
        if self._text:
            return super()._get_formatter()
        return argparse.HelpFormatter(self.prog, width=80)

    def format_usage(self) -> str:
        self._text = True
        return super().format_usage()

    def format_help(self) -> str:
        self._text = True
        return super().format_help()

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: {message}\n")


class ExistingDevice(argparse.Action):
    """--device PATH: the path must exist when the daemon starts."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        path = str(values)
        if not os.path.exists(path):
            parser.exit(1, f"{parser.prog}: no such device: {path}\n")
        setattr(namespace, self.dest, path)


def parser(prog: str, description: str, device: str | None) -> argparse.ArgumentParser:
    """An argument parser with the options every daemon has."""
    p = _Parser(prog=prog, description=description)
    p.add_argument(
        "-n", "--no-daemon", action="store_true", help="stay in foreground, don't daemonize"
    )
    if device is not None:
        p.add_argument(
            "--device",
            action=ExistingDevice,
            default=device,
            metavar="PATH",
            help=f"the kernel device, or a SOCK_SEQPACKET socket serving its protocol (default {device})",
        )
    return p


def run(
    prog: str,
    ident: str,
    args: argparse.Namespace,
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
