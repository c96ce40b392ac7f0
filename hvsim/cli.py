# SPDX-License-Identifier: GPL-2.0-only
"""`hvsim`: run the simulated host and drive it.

hvsim serve --dir DIR [--service kvp] ...   serve devices and DIR/control
hvsim kvp|vss|fcopy ...                     host-side commands (see --help)
hvsim demo [kvp|vss|fcopy|all]              start the real daemons against it and show the host's view
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from types import ModuleType

from hvdaemons.notify import sd_notify

from .demo import run as run_demo
from .server import SimServer
from .sockets import SocketInUse

# Each service module provides:
#   install(server: SimServer, args: argparse.Namespace) -> None   devices and control commands
#   add_arguments(parser) -> None                                  its `hvsim <service>` client commands
#   add_serve_arguments(parser) -> None                            options for `hvsim serve`
#   DEMOS: ((title, step(part: demo.Part) -> None), ...)           its parts of `hvsim demo`
SERVICES = ("kvp", "vss", "fcopy")


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"hvsim.{name}")


def serve(args: argparse.Namespace) -> int:
    # First thing: a SIGTERM or ^C at any point ends the server cleanly.
    stop_r, stop_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)

    def stop(_signum: int, _frame: object) -> None:
        try:
            os.write(stop_w, b"x")
        except BlockingIOError:
            pass  # already asked to stop

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server = SimServer(args.dir)
    try:
        server.listen()  # before any device, so that a refused server touches nothing
        for name in args.service or SERVICES:
            _module(name).install(server, args)
        print(
            f"hvsim: serving {', '.join(sorted(server.kernels)) or 'nothing'} in {args.dir}",
            flush=True,
        )
        # Every device socket exists now: a Type=notify unit (or a script
        # waiting on it) may start the daemons.
        sd_notify("READY=1")
        server.serve(stop_r)
    except SocketInUse as e:
        if e.errno == errno.EADDRINUSE and e.filename == server.path("control"):
            print(
                f"hvsim: a simulator is already serving in {args.dir} ({e.filename} answers);"
                " stop it or use another --dir",
                file=sys.stderr,
            )
        else:
            print(f"hvsim: cannot serve in {args.dir}: {e.filename}: {e.strerror}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"hvsim: cannot serve in {args.dir}: {e}", file=sys.stderr)
        return 1
    finally:
        server.close()
        os.close(stop_r)
        os.close(stop_w)
    return 0


def demo(args: argparse.Namespace) -> int:
    names = SERVICES if args.which == "all" else (args.which,)
    return run_demo([step for name in names for step in _module(name).DEMOS], debug=args.debug)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="hvsim: %(message)s")
    p = argparse.ArgumentParser(
        prog="hvsim", description="Simulated Hyper-V host for the hvdaemons"
    )
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("serve", help="serve the simulated devices and the control socket")
    s.add_argument("--dir", required=True, help="directory for the device and control sockets")
    s.add_argument(
        "--service", action="append", choices=SERVICES, help="services to serve (default all)"
    )
    for name in SERVICES:
        _module(name).add_serve_arguments(s)
    s.set_defaults(func=serve)

    d = sub.add_parser(
        "demo", help="run the real daemons against the simulator and show the host's view"
    )
    d.add_argument("which", nargs="?", default="all", choices=(*SERVICES, "all"))
    d.add_argument(
        "--debug", action="store_true", help="print the traceback of an unexpected error"
    )
    d.set_defaults(func=demo)

    for name in SERVICES:
        sp = sub.add_parser(name, help=f"host-side {name} requests to a running `hvsim serve`")
        sp.add_argument("--dir", required=True, help="the directory given to `hvsim serve`")
        _module(name).add_arguments(sp)

    args = p.parse_args(argv)
    status: int = args.func(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
