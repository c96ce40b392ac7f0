# SPDX-License-Identifier: GPL-2.0-only
"""hv_fcopy_daemon / hv_fcopy_uio_daemon: the host pushes files into the guest.

Mirrors tools/hv/hv_fcopy_daemon.c (the hv_utils char device
/dev/vmbus/hv_fcopy, kernels up to 6.9) and tools/hv/hv_fcopy_uio_daemon.c
(the VMBus channel through uio_hv_generic, kernels from 6.10) in one
executable, installed under both names.  It serves whichever transport the
running kernel offers:

1. --device PATH given, or /dev/vmbus/hv_fcopy present: the char device
   (hvdaemons.fcopy.chardev);
2. a VMBus device of the file-copy class (34d14be3-...) not owned by hv_utils:
   the uio transport (hvdaemons.fcopy.uio; .binding binds the device to
   uio_hv_generic if the kernel does not);
3. neither yet (the daemon started before the driver, or the host's Guest
   Service Interface is off): wait, saying so once, until one appears.

Syslog idents are upstream's: HV_FCOPY for the char device, HV_UIO_FCOPY for
uio.  Both transports hand each request to hvdaemons.fcopy.dispatch, which
drives the file writer (hvdaemons.fcopy.writer).
"""

from __future__ import annotations

import os
import sys

from .. import cli
from .. import log as hvlog
from ..notify import StatusLine
from ..service import Missing, Stopper, wait_for_device
from ..vmbus import FCOPY_CLASS_ID, HV_UTILS_DRIVER
from . import chardev, uio
from .binding import Binder, run_modprobe
from .discovery import SysfsDiscovery, driver_name, make_discovery
from .writer import CopyStatus, FileCopier

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from collections.abc import Sequence

    from .discovery import Discovery

log = hvlog.get(__name__)

PROGS = ("hv_fcopy_daemon", "hv_fcopy_uio_daemon")
# How often the kernel is asked again which transport it offers (udev events wake us earlier).
RESCAN_INTERVAL = 1.0


def offered_transport(legacy_path: str, discovery: Discovery) -> str | Missing:
    """ "legacy" or "uio" if the kernel offers one now, else why not."""
    if os.path.exists(legacy_path):
        return "legacy"
    for vmbus_dir in discovery.fcopy_devices():
        # hv_utils owns the channel on <= 6.9: its char device is on the way.
        return "legacy" if driver_name(vmbus_dir) == HV_UTILS_DRIVER else "uio"
    return Missing(
        log.INFO,
        "waiting for %s or a file-copy VMBus device (class %s)",
        (legacy_path, FCOPY_CLASS_ID),
        retry=RESCAN_INTERVAL,
    )


def choose_transport(legacy_path: str, discovery: Discovery, stopper: Stopper) -> str | None:
    """ "legacy" or "uio" once the kernel offers one; None if stopped while waiting."""
    return wait_for_device(
        lambda: offered_transport(legacy_path, discovery), stopper, logger=log, wake=discovery
    )


class FcopyArgs(cli.Args):
    __slots__ = ("no_daemon", "device", "sysfs_root", "dev_root")
    no_daemon: bool
    device: str | None
    sysfs_root: str
    dev_root: str


def serve(args: FcopyArgs, stopper: Stopper, ident: str) -> int:
    log.info("starting; pid is:%d", os.getpid())
    discovery: Discovery | None = None
    if args.device is not None:
        transport: str | None = "legacy"
    else:
        # One look through sysfs first: a kernel with the char device (<= 6.9)
        # never needs make_discovery()'s uevent socket.
        first = offered_transport(chardev.DEVICE, SysfsDiscovery(args.sysfs_root, args.dev_root))
        transport = "legacy" if first == "legacy" else None
        if transport is None:
            discovery = make_discovery(args.sysfs_root, args.dev_root)
            transport = choose_transport(chardev.DEVICE, discovery, stopper)
    if transport is None:
        return 0
    wanted = chardev.IDENT if transport == "legacy" else uio.IDENT
    if wanted != ident:
        hvlog.setup(wanted, foreground=bool(args.no_daemon))
    # One STATUS= line for the transport's loop and the copy's progress.
    status = StatusLine()
    copier = FileCopier(progress=CopyStatus(status) if status.enabled else None)
    if transport == "legacy":
        if discovery is not None:
            discovery.close()  # the char device's loop never waits on it
        return chardev.run(args.device or chardev.DEVICE, copier, stopper, status)
    assert discovery is not None  # uio is only ever chosen by looking
    # The real /sys only: a simulator's tree has no module to load.
    binder = Binder(args.sysfs_root, run_modprobe if args.sysfs_root == "/sys" else None)
    return uio.run(discovery, binder, copier, stopper, status)


def command_line(prog: str) -> cli.CommandLine:
    options = [
        *cli.common_options(None),
        cli.Option(
            "device",
            f"use the char-device transport at PATH (a device, or a SOCK_SEQPACKET socket "
            f"serving its protocol); default: {chardev.DEVICE} if present, else uio",
            metavar="PATH",
            convert=cli.existing_device,
        ),
        # The uio transport's trees (the simulator passes its own).
        cli.Option(
            "sysfs-root",
            "sysfs to find the file-copy device in (default /sys)",
            metavar="DIR",
            default="/sys",
        ),
        cli.Option(
            "dev-root", "directory of the uioN nodes (default /dev)", metavar="DIR", default="/dev"
        ),
    ]
    return cli.CommandLine(
        prog, "Hyper-V host-to-guest file copy daemon (char device or uio)", options
    )


def parse_args(argv: Sequence[str] | None, prog: str) -> FcopyArgs:
    return command_line(prog).parse(argv, FcopyArgs)


def main(argv: Sequence[str] | None = None) -> int:
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    prog = name if name in PROGS else PROGS[0]
    args = parse_args(argv, prog)
    ident = uio.IDENT if prog == "hv_fcopy_uio_daemon" else chardev.IDENT
    return cli.run(prog, ident, args, lambda stopper: serve(args, stopper, ident))


if __name__ == "__main__":
    sys.exit(main())
