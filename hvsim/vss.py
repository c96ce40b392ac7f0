# SPDX-License-Identifier: GPL-2.0-only
"""The host side of a Hyper-V backup, against /dev/vmbus/hv_vss's protocol.

Mirrors drivers/hv/hv_snapshot.c between the host and the daemon: the host
sends a struct hv_vss_msg (plus, for FREEZE, LUN information Linux ignores);
hv_vss_onchannelcallback() drops a packet too short to hold one, and
vss_handle_request() hands only HOT_BACKUP, FREEZE and THAW to the daemon,
as a zeroed 12-byte message carrying nothing but the op (vss_send_op()),
answering every other op itself with status 0.  The daemon's answer comes
within the kernel's timeout (FREEZE 900 s, the others 30 s) or the kernel
fails the request with HV_E_FAIL; on hibernation a fake THAW the daemon
cannot usefully answer.  The scenarios are what a host does: a backup
(HOT_BACKUP, FREEZE, hold, THAW), a host that never thaws, one that goes
away mid-freeze.

`hvsim demo vss` runs the real hv_vss_daemon against it in a private mount
namespace holding only loop-mounted test images (see fsbox.py).
"""

from __future__ import annotations

import argparse
import os
import select
import subprocess
import time
from dataclasses import dataclass

from hvdaemons.protocol import vss
from hvdaemons.protocol.status import HvStatus, describe

from . import launch
from .chardev import HV_UTIL_TIMEOUT, VSS_FREEZE_TIMEOUT, ChardevKernel
from .demo import Part, PartFailed, wait_registered
from .protocol import vss as sim_vss
from .server import Json, SimServer, call

NAME = "hv_vss"


# vss_handle_request() in hv_snapshot.c: the ops the daemon gets; the kernel
# answers every other op itself, with status 0.
FORWARDED = frozenset({vss.VssOp.HOT_BACKUP, vss.VssOp.FREEZE, vss.VssOp.THAW})

# Who answered the host.
DAEMON = "daemon"
KERNEL = "kernel"  # an op the kernel answers itself, or a request it failed
NOBODY = "nobody"  # a packet too short for a message: the kernel drops it


@dataclass(frozen=True)
class VssResult:
    """One host request and what the host got back."""

    op: str
    # The daemon's status; None if the daemon did not answer (see `by`).
    status: int | None
    reply: bytes
    seconds: float
    by: str = DAEMON
    # What the kernel answered when the daemon did not: HV_E_FAIL for a
    # forwarded op (no daemon, timeout, hang-up, bad reply size), 0 for an
    # op it answers itself.
    kernel_status: int = HvStatus.E_FAIL

    @property
    def host_status(self) -> int | None:
        """The status in the host's reply; None if the host got no reply."""
        if self.by == DAEMON:
            return self.status
        if self.by == KERNEL:
            return self.kernel_status
        return None

    @property
    def ok(self) -> bool:
        return self.host_status == HvStatus.S_OK

    def to_json(self) -> Json:
        return {
            "op": self.op,
            "status": self.status,
            "host_status": self.host_status,
            "by": self.by,
            "reply": self.reply.hex(),
            "ms": round(self.seconds * 1000, 3),
        }

    def describe(self) -> str:
        ms = self.seconds * 1000
        if self.host_status is None:
            return f"{self.op}: no reply (packet dropped by the kernel) in {ms:.1f} ms"
        who = "daemon" if self.by == DAEMON else "kernel (no daemon answer)"
        return f"{self.op}: {describe(self.host_status)} from the {who} in {ms:.1f} ms"


class VssHost:
    """Drives a ChardevKernel("hv_vss") as the Hyper-V host would, through hv_snapshot.c's rules."""

    def __init__(
        self,
        kernel: ChardevKernel,
        *,
        freeze_timeout: float = VSS_FREEZE_TIMEOUT,
        timeout: float = HV_UTIL_TIMEOUT,
    ) -> None:
        self.kernel = kernel
        self.freeze_timeout = freeze_timeout
        self.timeout = timeout

    def request(self, op: int, *, flags: int = 0, wait_for_daemon: float = 0.0) -> VssResult:
        return self.send(
            sim_vss.encode_host_message(op, flags=flags), wait_for_daemon=wait_for_daemon
        )

    def send(self, body: bytes, *, wait_for_daemon: float = 0.0) -> VssResult:
        """One host packet's body (see hvsim.protocol.vss.encode_host_message), as hv_snapshot.c handles it."""
        t0 = time.monotonic()
        if len(body) < vss.MSG_SIZE:
            # hv_vss_onchannelcallback(): "Invalid VSS msg", no reply at all.
            name = vss.op_name(body[0]) if body else "empty"
            return VssResult(name, None, b"", time.monotonic() - t0, by=NOBODY)
        op = body[0]
        name = vss.op_name(op)
        if op not in FORWARDED:
            return VssResult(
                name, None, b"", time.monotonic() - t0, by=KERNEL, kernel_status=HvStatus.S_OK
            )
        limit = self.freeze_timeout if op == vss.VssOp.FREEZE else self.timeout
        reply = self.kernel.request(
            sim_vss.encode_forwarded_message(op), timeout=limit, wait_for_daemon=wait_for_daemon
        )
        took = time.monotonic() - t0
        if reply is None:
            return VssResult(name, None, b"", took, by=KERNEL)
        return VssResult(name, sim_vss.decode_status_reply(reply), reply, took)

    def hot_backup(self) -> VssResult:
        return self.request(vss.VssOp.HOT_BACKUP)

    def freeze(self) -> VssResult:
        return self.request(vss.VssOp.FREEZE)

    def thaw(self) -> VssResult:
        return self.request(vss.VssOp.THAW)

    def backup(self, hold_ms: int = 0) -> list[VssResult]:
        """HOT_BACKUP, FREEZE, hold (the host snapshots its disks), THAW if the freeze held."""
        results = [self.hot_backup(), self.freeze()]
        if results[-1].ok:
            time.sleep(hold_ms / 1000)
            results.append(self.thaw())
        return results

    def freeze_no_thaw(self) -> list[VssResult]:
        """A host that freezes and never thaws (the daemon's deadline must)."""
        return [self.freeze()]

    def disconnect_mid_freeze(self, hold_ms: int = 0) -> list[VssResult]:
        """FREEZE, then the channel goes away (rescind): the daemon sees a read error."""
        results = [self.freeze()]
        time.sleep(hold_ms / 1000)
        self.kernel.hangup()
        return results

    def hibernate(self) -> None:
        """The fake THAW hv_utils queues on suspend; the daemon's reply is refused."""
        self.kernel.inject(sim_vss.encode_forwarded_message(vss.VssOp.THAW))


SCENARIOS = (
    "hot-backup",
    "freeze",
    "thaw",
    "backup",
    "freeze-no-thaw",
    "disconnect-mid-freeze",
    "hibernate",
)


def run_scenario(host: VssHost, name: str, hold_ms: int = 0) -> list[VssResult]:
    if name == "hot-backup":
        return [host.hot_backup()]
    if name == "freeze":
        return [host.freeze()]
    if name == "thaw":
        return [host.thaw()]
    if name == "backup":
        return host.backup(hold_ms)
    if name == "freeze-no-thaw":
        return host.freeze_no_thaw()
    if name == "disconnect-mid-freeze":
        return host.disconnect_mid_freeze(hold_ms)
    if name == "hibernate":
        host.hibernate()
        return []
    raise ValueError(f"unknown VSS scenario {name!r}")


# -- hvsim plumbing -------------------------------------------------------------------


def install(server: SimServer, args: argparse.Namespace) -> None:
    kernel = server.add_chardev(NAME)
    host = VssHost(kernel)

    def command(req: Json) -> Json:
        scenario = str(req.get("scenario", ""))
        if scenario not in SCENARIOS:
            return {
                "ok": False,
                "error": f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}",
            }
        results = run_scenario(host, scenario, int(req.get("hold_ms", 0)))
        return {"results": [r.to_json() for r in results], "registered": kernel.registered}

    server.add_command("vss", command)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenario", choices=SCENARIOS, help="what the host does")
    parser.add_argument(
        "--hold-ms", type=int, default=0, help="backup/disconnect: time between FREEZE and THAW"
    )
    parser.set_defaults(func=client)


def client(args: argparse.Namespace) -> int:
    reply = call(
        args.dir, {"command": "vss", "scenario": args.scenario, "hold_ms": args.hold_ms}, 1000
    )
    if not reply.get("ok"):
        print(f"hvsim vss: {reply.get('error')}")
        return 1
    status = 0
    for r in reply["results"]:
        if r["host_status"] is None:
            print(f"{r['op']}: no reply (packet dropped by the kernel) in {r['ms']} ms")
            status = 1
            continue
        print(f"{r['op']}: {describe(int(r['host_status']))} from the {r['by']} in {r['ms']} ms")
        if r["host_status"] != HvStatus.S_OK:
            status = 1
    return status


# -- the demo ---------------------------------------------------------------------------


def _stderr_lines(proc: subprocess.Popen[bytes], timeout: float) -> list[str]:
    """What the daemon logged so far (non-blocking)."""
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while True:
        left = max(0.0, deadline - time.monotonic())
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            break
        data = os.read(fd, 65536)
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks).decode(errors="replace").splitlines()


def demo(part: Part) -> None:
    """`hvsim demo vss`: a backup of loop-mounted test filesystems, in a sandbox."""
    from .fsbox import FsBox, FsSpec

    specs = [
        FsSpec("data", "ext4"),
        FsSpec("logs", "xfs"),
        FsSpec("images", "ext4", size_mb=48),
        FsSpec("vm", "ext4", inside="images"),  # a filesystem on a loop file on /mnt/images
        FsSpec("data-bind", bind_of="data"),
    ]
    print("== VSS demo: a private mount namespace with only loop-mounted test images")
    if os.geteuid() != 0:
        raise PartFailed("needs root (mount namespace, loop devices, FIFREEZE): run as root")
    box = FsBox(specs)
    try:
        try:
            box.start()
        except RuntimeError as e:
            raise PartFailed(f"the test filesystems could not be set up: {e}") from e
        print("   mount table verified: nothing but our images and virtual filesystems")
        plan = box.run([*launch.daemon_argv("hv_vss_daemon"), "--list"])
        print("== hv_vss_daemon --list")
        for line in plan.stdout.splitlines():
            if line.startswith(("would", "  ")) and "not a /dev/" not in line:
                print("   " + line)
        part.check(plan.returncode == 0, f"hv_vss_daemon --list exited {plan.returncode}")
        kernel = ChardevKernel(os.path.join(box.sim_dir, NAME), NAME)
        logged: list[str] = []
        proc: subprocess.Popen[bytes] | None = None
        try:
            host = VssHost(kernel)
            proc = box.popen(
                [*launch.daemon_argv("hv_vss_daemon"), "-n", "--device", kernel.path],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            wait_registered(kernel, proc, 30)
            print("== host: HOT_BACKUP, FREEZE")
            for r in (host.hot_backup(), host.freeze()):
                part.check(r.ok, r.describe())
            box.verify()
            frozen = box.frozen()
            print(f"   frozen now (probed with a second FIFREEZE): {', '.join(frozen) or 'none'}")
            part.check(len(frozen) == 4, f"{len(frozen)} of the 4 test filesystems frozen")
            logged += _stderr_lines(proc, 0.2)
            held = [x for x in logged if "op=FREEZE" in x]
            print(f"   daemon log lines about FREEZE while frozen: {len(held)} (held in memory)")
            print("== host: THAW")
            r = host.thaw()
            part.check(r.ok, r.describe())
            frozen = box.frozen()
            print(f"   frozen now: {', '.join(frozen) or 'none'}")
            part.check(not frozen, "nothing frozen after THAW")
            print("== host: FREEZE, then SIGTERM to the daemon")
            r = host.freeze()
            part.check(r.ok, r.describe())
            t0 = time.monotonic()
            proc.terminate()
            proc.wait(10)
            frozen = box.frozen()
            print(
                f"   daemon exited {(time.monotonic() - t0) * 1000:.0f} ms after SIGTERM; "
                f"frozen now: {', '.join(frozen) or 'none'}"
            )
            part.check(not frozen, "SIGTERM while frozen thawed everything")
        finally:
            if proc is not None:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                logged += _stderr_lines(proc, 0.5)
            part.daemon_log = logged
            kernel.close()
        print("== daemon log")
        for line in logged:
            print("   " + line)
    finally:
        leaked = box.close()
        if leaked:
            print(f"!! left frozen and thawed by the demo: {', '.join(leaked)}")
            part.failures.append(f"left frozen, thawed by the demo: {', '.join(leaked)}")


# `hvsim demo vss`: its part of the summary.
DEMOS = (("VSS", demo),)
