# SPDX-License-Identifier: GPL-2.0-only
"""hv_vss_daemon: freeze filesystems for host-side backups.

Mirrors tools/hv/hv_vss_daemon.c (Linux 6.1 to 6.17): same device, same
registration (VSS_OP_REGISTER1, 4-byte kernel reply), same replies (the
request with `error` set), same log texts under the ident "Hyper-V VSS",
same -n/--no-daemon and -h/--help.  Deliberate differences, all towards
never leaving a guest frozen (see freeze.py and mounts.py):

* filesystems on loop devices are frozen in stacking order instead of being
  skipped; EOPNOTSUPP/ENOTTY filesystems are skipped instead of failing;
* SIGTERM/SIGINT, a lost device and a deadline without THAW all thaw; a
  THAW after the deadline's thaw answers HV_E_FAIL (the snapshot may be
  inconsistent; after the other two the host's transaction is gone anyway),
  and an unknown op answers HV_E_FAIL (the reference: S_OK);
* a state file records a freeze, so a restart after SIGKILL thaws;
* --list prints the plan, --thaw thaws everything (the unit's ExecStopPost=).
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Callable

# Filesystems may be frozen while this process runs: nothing may be
# imported or compiled lazily later, so every module is imported here and
# no .pyc is written.
sys.dont_write_bytecode = True

from .. import cli  # noqa: E402
from .. import log as hvlog  # noqa: E402
from ..errors import ProtocolError  # noqa: E402
from ..notify import StatusLine, clock_text  # noqa: E402
from ..protocol import vss  # noqa: E402
from ..protocol.status import HvStatus  # noqa: E402
from ..service import Service, Stopper  # noqa: E402
from ..transport import FdChannel  # noqa: E402
from .freeze import FreezeEngine, IoctlFreezer, Marker, Outcome  # noqa: E402
from .mounts import Planner, Target  # noqa: E402

log = hvlog.get(__name__)

PROG = "hv_vss_daemon"
IDENT = "Hyper-V VSS"
DEVICE = "/dev/vmbus/hv_vss"
STATE_FILE = "/run/hv_vss_daemon.frozen"
# The kernel allows a FREEZE 900 s but bounds nothing after the reply.  A
# Windows VSS requestor gives writers 60 s between freeze and thaw, so a
# host that has not thawed after 5 minutes is not going to: thaw then.
DEFAULT_THAW_DEADLINE = 300.0


class VssHandler:
    """The service.Handler of the VSS daemon."""

    def __init__(self, engine: FreezeEngine, status: StatusLine | None = None) -> None:
        self.engine = engine
        self.status = status if status is not None else StatusLine(enabled=False)

    def registration(self) -> bytes:
        return vss.encode_registration()

    def registration_reply(self, msg: bytes) -> bool:
        version = vss.decode_registration_reply(msg)  # ProtocolError: reopen
        log.info("VSS: kernel module version: %d", version)
        self.status.set("registered", f"registered with protocol version {version}")
        return True

    def describe(self, msg: bytes) -> str:
        try:
            return vss.VssOp(vss.decode_request(msg).op).name
        except (ProtocolError, ValueError):
            return f"of {len(msg)} bytes"

    def handle(self, msg: bytes) -> bytes | None:
        try:
            req = vss.decode_request(msg)
        except ProtocolError as e:
            log.error("read failed; error: %s", e)
            return vss.encode_status_reply(msg, HvStatus.E_FAIL)
        op = req.op
        status = HvStatus.S_OK
        if op in (vss.VssOp.FREEZE, vss.VssOp.THAW):
            name = "FREEZE" if op == vss.VssOp.FREEZE else "THAW"
            out = self.engine.freeze() if op == vss.VssOp.FREEZE else self.engine.thaw()
            # While frozen this is held in memory (see freeze.py).
            log.info("VSS: op=%s: %s", name, "succeeded" if out.ok else "failed")
            if not out.ok:
                status = HvStatus.E_FAIL
                log.error("op=%d failed!", op)
                log.error("report it with these files:")
                log.error("/etc/fstab and /proc/mounts")
        elif op == vss.VssOp.HOT_BACKUP:
            log.info("VSS: op=CHECK HOT BACKUP")
        else:
            # The reference answers S_OK to anything; claiming success for an
            # operation not performed could make a host trust a bad snapshot.
            log.error("Illegal op:%d", op)
            status = HvStatus.E_FAIL
        return vss.encode_status_reply(req.raw, status)

    def failure_reply(self, msg: bytes) -> bytes | None:
        return vss.encode_status_reply(msg, HvStatus.E_FAIL)

    def reset(self) -> None:
        # Like the reference since 5.7: thaw before reopening the device.
        self.engine.thaw_if_frozen("device lost")

    def stop(self) -> None:
        self.engine.close()


class FreezeStatus:
    """FreezeEngine's on_change: "frozen"/"thawed since" on the STATUS= line, sent at once."""

    def __init__(self, status: StatusLine, wall: Callable[[], float] = time.time) -> None:
        self.status = status
        self._wall = wall
        self._count = -1

    def __call__(self, frozen: list[Target]) -> None:
        if len(frozen) == self._count:
            return
        self._count = len(frozen)
        since = clock_text(self._wall())
        if frozen:
            n = len(frozen)
            text = f"frozen ({n} filesystem{'s' if n != 1 else ''}) since {since}"
        else:
            text = f"thawed since {since}"
        self.status.set("state", text, force=True)


class VssArgs(cli.Args):
    __slots__ = ("no_daemon", "device", "list", "thaw", "thaw_deadline", "state_file")
    no_daemon: bool
    device: str
    list: bool
    thaw: bool
    thaw_deadline: float
    state_file: str


def command_line() -> cli.CommandLine:
    options = [
        *cli.common_options(DEVICE),
        cli.Option(
            "list",
            "print what a FREEZE would freeze, in order, and why every other mount is skipped",
        ),
        cli.Option(
            "thaw",
            "thaw every eligible filesystem (and what a killed daemon recorded), then exit",
        ),
        cli.Option(
            "thaw-deadline",
            f"thaw by itself if no THAW arrives this long after FREEZE; 0: never "
            f"(default {DEFAULT_THAW_DEADLINE:.0f})",
            metavar="SECONDS",
            default=DEFAULT_THAW_DEADLINE,
            convert=float,
        ),
        cli.Option(
            "state-file",
            f"records a freeze in progress, for recovery after SIGKILL (default {STATE_FILE})",
            metavar="PATH",
            default=STATE_FILE,
        ),
    ]
    return cli.CommandLine(
        PROG, "Hyper-V VSS (backup) daemon: freezes filesystems for host snapshots", options
    )


def parse_args(argv: Sequence[str] | None) -> VssArgs:
    return command_line().parse(argv, VssArgs)


def _print_outcome(out: Outcome) -> None:
    for t in out.done:
        print(f"thawed {t.mount_point}")
    for t, e in out.errors:
        print(f"cannot thaw {t.mount_point}: {e.strerror}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    planner = Planner()
    marker = Marker(args.state_file)
    if args.list:
        print(planner.plan().describe())
        return 0
    if args.thaw:
        hvlog.setup(IDENT, foreground=True)
        out = FreezeEngine(planner, IoctlFreezer(), marker=marker).thaw_everything()
        _print_outcome(out)
        return 0 if out.ok else 1

    def body(stopper: Stopper) -> int:
        # A killed predecessor may have left the root filesystem frozen:
        # hold every log line until the recovery thaw has run.
        hvlog.hold()
        try:
            log.info("VSS starting; pid is:%d", os.getpid())
            try:
                planner.watch()
            except OSError as e:
                log.warning("cannot watch %s: %s", planner.mountinfo, e.strerror)
            status = StatusLine()
            frozen_status = FreezeStatus(status)
            engine = FreezeEngine(
                planner,
                IoctlFreezer(),
                marker=marker,
                thaw_deadline=max(0.0, args.thaw_deadline),
                defer_release=True,
                should_stop=lambda: stopper.requested,
                on_change=frozen_status,
            )
            engine.recover()
            frozen_status(engine.frozen)
        finally:
            hvlog.release()
        try:
            marker.open()
        except OSError as e:
            log.error(
                "cannot create %s: %s; a restart could not thaw after SIGKILL",
                marker.path,
                e.strerror,
            )
        service = Service(
            FdChannel(path=args.device),
            VssHandler(engine, status),
            stopper=stopper,
            device_name=args.device,
            status=status,
        )
        return service.run()

    return cli.run(PROG, IDENT, args, body)


if __name__ == "__main__":
    sys.exit(main())
