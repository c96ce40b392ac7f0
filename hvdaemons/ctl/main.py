# SPDX-License-Identifier: GPL-2.0-only
"""The hvctl command line.

Exit status: 0 success; 1 something offered does not work or an operation
failed (a missing key, an unreadable pool, no permission); 2 not a Hyper-V
guest (status, timesync) or bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Callable, NoReturn

from .. import __version__
from . import kvp, vss
from .devices import DeviceView, UdevUnavailable, read_udev

if TYPE_CHECKING:
    from .daemons import DaemonSource
    from .timesync import Timesync

# Each command's implementation is imported when it runs, so that hvctl
# --help and the kvp commands stay cheap.

PROG = "hvctl"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: {message}\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="The Hyper-V integration services of this guest: status, KVP pools, "
        "VSS backup plan, time sync.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(metavar="COMMAND", parser_class=_Parser)
    sp = sub.add_parser(
        "status",
        help="every integration service: offered, driver, daemon, working",
        description="One row per integration service. Exit 0: everything the host offers "
        "works; 1: something offered does not; 2: not a Hyper-V guest.",
    )
    sp.add_argument("--json", action="store_true", help="JSON output")
    sp.set_defaults(func="status")
    kvp.add_parser(sub)
    vss.add_parser(sub)
    sp = sub.add_parser(
        "timesync",
        help="the Hyper-V PTP clock, its offset, and whether chrony uses it",
    )
    sp.add_argument("--json", action="store_true", help="JSON output")
    sp.set_defaults(func="timesync")
    return p


def main(
    argv: Sequence[str] | None = None,
    *,
    devices: Callable[[], DeviceView] = read_udev,
    daemons: DaemonSource | None = None,
    timesync: Timesync | None = None,
) -> int:
    p = parser()
    args = p.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        p.print_help(sys.stderr)
        return 2
    try:
        if func == "status":
            return _status(args, devices, daemons)
        if func == "timesync":
            try:
                view = devices()
            except UdevUnavailable as e:
                print(f"{PROG}: {e}", file=sys.stderr)
                return 1
            from .timesync import cmd_timesync

            return cmd_timesync(args, view, timesync)
        result: int = func(args)
        return result
    except kvp.KvpError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return e.code
    except PermissionError as e:
        print(f"{PROG}: permission denied: {e.filename or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1


def _status(
    args: argparse.Namespace,
    devices: Callable[[], DeviceView],
    daemons: DaemonSource | None,
) -> int:
    from . import status
    from .daemons import default_source

    try:
        view = devices()
    except UdevUnavailable as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    report = status.collect(view, daemons if daemons is not None else default_source())
    print(status.render_json(report) if args.json else status.render_text(report))
    if not report.guest:
        print(f"{PROG}: {status.NOT_GUEST}", file=sys.stderr)
    return report.exit_status


if __name__ == "__main__":
    sys.exit(main())
