# SPDX-License-Identifier: GPL-2.0-only
"""The sequence fuzzer of hv_vss_daemon: the real executable, the simulated device, real freezes.

Mirrors nothing upstream: test harness.  Every example starts a fresh
hv_vss_daemon (the installed console script, unmodified) inside an FsBox
(hvsim/fsbox.py: a private mount namespace whose mount table holds only
loop-mounted test images, one stacked on a loop file on another), on its own
simulated /dev/vmbus/hv_vss (hvsim.chardev.ChardevKernel) driven through
hvsim.vss.VssHost, which applies drivers/hv/hv_snapshot.c's rules: only
HOT_BACKUP, FREEZE and THAW reach the daemon, zeroed but for the op; other
ops are answered by the kernel; a packet too short is dropped.

Steps, in any order: host packets (FREEZE, THAW, HOT_BACKUP, other ops,
random reserved bytes and flags, LUN information after the message, short
packets), waits that let the --thaw-deadline alarm fire, hibernation's fake
THAW, the device hung up or gone for a while, SIGTERM or SIGINT and a
restart, SIGKILL and a restart (or `hv_vss_daemon --thaw` first, as the
unit's ExecStopPost= does).

A model predicts the host's reply to each packet and whether the test
filesystems are frozen.  After every step, with the daemon idle:

* the reply: who answered, the status, and the 12 bytes (status, then the
  zeroed request echoed);
* every test filesystem, probed with a second FIFREEZE: EBUSY means frozen
  and is left alone; only a thawed filesystem is frozen by the probe, and
  thawed again at once (these are our own idle images);
* the state file in the box's /run: "frozen" exactly while the model is;
* the daemon's descriptors (/proc/PID/fd): the same files as after start,
  plus exactly one socket, the device, which is replaced only when the
  model says the device was reopened; the simulated kernel saw exactly as
  many opens;
* the daemon's log: every line is one the model allows (so an EBADF, a
  traceback or a logging error fails the run), and each expected reopen is
  logged once, promptly unless filesystems are frozen.

At the end of each example SIGTERM must thaw, exit 0, remove the state file,
and have logged one line per request it answered.  The deadline alarm makes
some outcomes depend on time; the model only allows both outcomes while the
deadline may have fired, and then settles the question by events (the state
file flipping to "thawed", the log line), never by sleeping.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from hvdaemons.protocol import vss
from hvdaemons.protocol.status import HvStatus
from hvsim import launch
from hvsim.chardev import ChardevKernel
from hvsim.fsbox import FsBox, FsSpec
from hvsim.protocol.vss import RESERVED_SIZE, encode_host_message
from hvsim.vss import DAEMON, FORWARDED, KERNEL, NOBODY, VssHost
from tests.fuzz import runner
from tests.fuzz.runner import GUARD, Hangup, until, weighted
from tests.support.vss_sandbox import sandbox

STATE_FILE = "/run/hv_vss_daemon.frozen"  # the daemon's default, kept
# --thaw-deadline per example: off, firing within a step or two, firing
# after some steps, and the default (never within an example).
DEADLINES = (0.0, 0.02, 0.2, 1.0, 300.0)
# The largest FREEZE a host sends is 6260 bytes including the IC header;
# the kernel's receive buffer is 2 pages.  Linux ignores the LUN information.
MAX_LUN_INFO = 6000
OTHER_OPS = tuple(int(op) for op in vss.VssOp if op not in FORWARDED)

OK_REPLY = struct.pack("<I", HvStatus.S_OK) + bytes(8)
FAIL_REPLY = struct.pack("<I", HvStatus.E_FAIL) + bytes(8)

_PREFIX = re.compile(r"^<([0-7])>Hyper-V VSS: (.*)$")
# Every line the daemon may log in these runs; anything else fails the run.
_ALLOWED = [
    re.compile(p)
    for p in (
        r"VSS starting; pid is:\d+",
        r"VSS: kernel module version: 129",
        r"VSS: op=CHECK HOT BACKUP",
        r"VSS: op=(FREEZE|THAW): (succeeded|failed)",
        r"op=6 failed!",
        r"report it with these files:",
        r"/etc/fstab and /proc/mounts",
        r"THAW: filesystems had already been thawed \d+ s after FREEZE; "
        r"the snapshot may not be consistent",
        r"no THAW from the host \d+ s after FREEZE: thawed 4 filesystem\(s\)",
        r"(device lost|stop requested) while frozen: thawed 4 filesystem\(s\)",
        r"\S+: (end of file on the device|104 Connection reset by peer|32 Broken pipe"
        r"|device hung up); reopening",
        r"open \S+ failed; error: 2 No such file or directory; retrying",
        r"\S+ found: a previous daemon may have been killed while frozen; thawed .*",
    )
]
REOPENING = "; reopening"
EXPIRED = "no THAW from the host"
LOST = "device lost while frozen"
STOPPED = "stop requested while frozen: thawed 4 filesystem(s)"


class Violation(AssertionError):
    """The daemon (or the simulator) did something the model does not allow."""


# -- steps ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Packet:
    """One host packet's VSS body (see hvsim.protocol.vss.encode_host_message)."""

    op: int
    reserved: bytes = bytes(RESERVED_SIZE)
    flags: int = 0
    lun_info: int = 0
    size: int | None = None  # cut to this many bytes

    def body(self) -> bytes:
        return encode_host_message(
            self.op,
            flags=self.flags,
            reserved=self.reserved,
            lun_info=self.lun_info,
            size=self.size,
        )

    def __repr__(self) -> str:
        args = [vss.op_name(self.op)]
        if any(self.reserved):
            args.append(f"reserved={self.reserved.hex()}")
        if self.flags:
            args.append(f"flags={self.flags:#x}")
        if self.lun_info:
            args.append(f"lun_info={self.lun_info}")
        if self.size is not None:
            args.append(f"size={self.size}")
        return f"Packet({', '.join(args)})"


@dataclasses.dataclass(frozen=True)
class Wait:
    """Nothing happens for a while (timers may fire)."""

    seconds: float


@dataclasses.dataclass(frozen=True)
class Hibernate:
    """hv_utils' fake THAW on suspend; the kernel refuses the reply (READY), the daemon reopens."""


@dataclasses.dataclass(frozen=True)
class Unplug:
    """The device goes away for a while: open() fails with ENOENT meanwhile."""

    seconds: float


@dataclasses.dataclass(frozen=True)
class Stop:
    """SIGTERM or SIGINT, then a new daemon."""

    signum: int

    def __repr__(self) -> str:
        return f"Stop({signal.Signals(self.signum).name})"


@dataclasses.dataclass(frozen=True)
class Kill:
    """SIGKILL, optionally `hv_vss_daemon --thaw` (ExecStopPost=), then a new daemon."""

    thaw_tool: bool


_reserved = st.one_of(
    st.just(bytes(RESERVED_SIZE)), st.binary(min_size=RESERVED_SIZE, max_size=RESERVED_SIZE)
)
_flags = st.one_of(st.just(0), st.integers(0, 0xFFFFFFFF))


def _packets(ops: st.SearchStrategy[int], lun: bool = False) -> st.SearchStrategy[Packet]:
    return st.builds(
        Packet,
        op=ops,
        reserved=_reserved,
        flags=_flags,
        lun_info=st.one_of(st.just(0), st.integers(1, MAX_LUN_INFO)) if lun else st.just(0),
    )


_FREEZE = _packets(st.just(int(vss.VssOp.FREEZE)), lun=True)
_THAW = _packets(st.just(int(vss.VssOp.THAW)))
_HOT_BACKUP = _packets(st.just(int(vss.VssOp.HOT_BACKUP)))
_OTHER = _packets(st.one_of(st.sampled_from(OTHER_OPS), st.integers(0, 255)))
_SHORT = st.builds(
    Packet,
    op=st.sampled_from(sorted(int(op) for op in vss.VssOp if op <= 255)),
    size=st.integers(0, vss.MSG_SIZE - 1),
)


def steps(restarts: int = 10, unplugs: int = 3) -> st.SearchStrategy[object]:
    """Steps, per mille; the simplest first (shrinking tends towards it).

    Restarts and the device gone for a while cost a daemon start-up or its
    1 s retry interval: rare in a long run, but several in each example.
    """
    return weighted(
        (107 + 2 * (10 - restarts) + (3 - unplugs), _HOT_BACKUP),
        (310, _FREEZE),
        (310, _THAW),
        (60, _OTHER),
        (30, _SHORT),
        (60, st.builds(Wait, st.sampled_from([0.001, 0.01, 0.05, 0.2]))),
        (50, st.just(Hibernate())),
        (50, st.just(Hangup())),
        (restarts, st.builds(Stop, st.sampled_from([signal.SIGTERM, signal.SIGINT]))),
        (restarts, st.builds(Kill, st.booleans())),
        (unplugs, st.builds(Unplug, st.sampled_from([0.0, 0.2]))),
    )


# -- the daemon seen from outside ------------------------------------------------------


class DaemonProcess(runner.DaemonProcess):
    """One hv_vss_daemon inside the box."""

    def __init__(self, box: FsBox, device: str, deadline: float) -> None:
        argv = [
            *launch.daemon_argv("hv_vss_daemon"),
            "-n",
            "--device",
            device,
            "--thaw-deadline",
            str(deadline),
        ]
        super().__init__(argv, popen=box.popen)
        self.pid = self.proc.pid  # nsenter execs the daemon: same process
        # What this process was asked, for the log accounting at its end.
        self.answered: Counter[str] = Counter()


class VssRig:
    """What the examples of one VSS fuzz run share: the box, and the counts."""

    name = "hv_vss_daemon"

    def __init__(self, box: FsBox) -> None:
        self.box = box
        self.images = box.image_mount_points()
        self.messages = 0
        self.examples = 0
        self.stats: Counter[str] = Counter()
        # The box's /run, seen from outside (the daemon's state file is there).
        self.run_dir = f"/proc/{box.pid}/root/run"

    def state_file(self) -> str | None:
        """The first line of the daemon's state file, None if there is none."""
        try:
            with open(self.run_dir + STATE_FILE[len("/run") :], "rb") as f:
                return f.readline().decode(errors="replace").rstrip("\n")
        except FileNotFoundError:
            return None

    def remove_state_file(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.run_dir + STATE_FILE[len("/run") :])

    def probe(self) -> dict[str, str]:
        """Frozen state of every image by second FIFREEZE, with a hang guard.

        FIFREEZE of a thawed filesystem writes its superblock: if the one
        holding its loop file were frozen (which no correct daemon leaves
        behind), the probe would block.  Then everything is thawed from a
        second process, which unblocks it, and the run fails.
        """
        result: list[dict[str, str]] = []
        errors: list[BaseException] = []

        def call() -> None:
            try:
                result.append(self.box.probe(self.images, parallel=True))
            except BaseException as e:
                errors.append(e)

        t = threading.Thread(target=call, daemon=True)
        t.start()
        t.join(GUARD)
        if t.is_alive():
            script = (
                "import sys; from hvsim import fsbox; "
                "print({p: fsbox._thaw(p) for p in sys.argv[1:]})"
            )
            rescue = self.box.run([sys.executable, "-c", script, *reversed(self.images)])
            t.join(GUARD)
            raise Violation(f"the frozen-state probe blocked; thawed from outside: {rescue.stdout}")
        if errors:
            raise errors[0]
        return result[0]

    def thaw_all(self) -> list[str]:
        """Thaw every image from outside; the ones that were frozen."""
        return [p for p, s in self.box.thaw(self.images).items() if s == "thawed"]


# -- the model and the checks ----------------------------------------------------------


class VssFuzz(RuleBasedStateMachine):
    """One example: a fresh daemon, steps, SIGTERM; the model checked after every step."""

    def __init__(self, rig: VssRig) -> None:
        super().__init__()
        self.rig = rig
        self.kernel: ChardevKernel | None = None
        self.host: VssHost | None = None
        self.daemon: DaemonProcess | None = None
        self.deadline = 0.0
        # The model.
        self.frozen = False  # filesystems frozen by the daemon
        self.expired = False  # the deadline thawed; the host's next THAW fails
        self.freeze_sent = 0.0  # when the last FREEZE the model counts was sent
        self.reopens = 0  # expected "; reopening" lines of this daemon process
        self.opens = 0  # expected opens of this kernel's device
        # What the daemon was seen with.
        self.socket = ""
        self.baseline: dict[int, str] = {}
        self.device = ""
        # The steps so far, timed: a failure that depends on the deadline's
        # timing may not shrink (Hypothesis then reports it as flaky).
        self.history: list[str] = []
        self.t0 = time.monotonic()

    # -- set-up and tear-down ------------------------------------------------------

    @initialize(deadline=st.sampled_from(DEADLINES))
    def start(self, deadline: float) -> None:
        rig = self.rig
        rig.examples += 1
        leftover = rig.thaw_all()
        if leftover:
            raise Violation(f"a previous example left {leftover} frozen")
        rig.remove_state_file()
        sim = os.path.join(rig.box.sim_dir, f"x{rig.examples}")
        os.makedirs(sim, exist_ok=True)
        self.device = os.path.join(sim, "hv_vss")
        self.kernel = ChardevKernel(self.device, "hv_vss")
        self.host = VssHost(self.kernel)
        self.deadline = deadline
        self.history.append(f"{time.monotonic() - self.t0:8.3f} start(deadline={deadline})")
        self._spawn()
        self.check()

    def _spawn(self) -> None:
        assert self.kernel is not None
        self.rig.box.verify()  # nothing but our test filesystems, before any daemon runs
        self.daemon = DaemonProcess(self.rig.box, self.device, self.deadline)
        self.frozen = False
        self.expired = False
        self.reopens = 0
        self.opens += 1
        self._await_registration("start")
        self.baseline = {fd: t for fd, t in self.daemon.fds().items() if not _is_socket(t)}
        self.socket = self._socket()

    def teardown(self) -> None:
        try:
            if self.daemon is not None and self.daemon.proc.poll() is None:
                self._stop(signal.SIGTERM)
        finally:
            if self.daemon is not None:
                self.daemon.kill()
            if self.kernel is not None:
                self.kernel.close()
            leftover = self.rig.thaw_all()
        if leftover:
            raise Violation(f"left frozen after SIGTERM: {leftover}")

    # -- steps -------------------------------------------------------------------------

    @rule(step=steps())
    def step(self, step: object) -> None:
        self.rig.stats[type(step).__name__] += 1
        self.history.append(f"{time.monotonic() - self.t0:8.3f} {step!r}")
        if isinstance(step, Packet):
            self._packet(step)
        elif isinstance(step, Wait):
            time.sleep(step.seconds)
        elif isinstance(step, Hibernate):
            self._hibernate()
        elif isinstance(step, Hangup):
            self._hangup()
        elif isinstance(step, Unplug):
            self._unplug(step.seconds)
        elif isinstance(step, Stop):
            self._stop(step.signum)
            self._spawn()
        elif isinstance(step, Kill):
            self._kill(step.thaw_tool)
        else:
            raise AssertionError(f"unknown step {step!r}")
        self.check()

    def _packet(self, p: Packet) -> None:
        assert self.host is not None and self.daemon is not None
        self.settle()
        expiries = self._auto_thaw_lines()[0]
        t_sent = time.monotonic()
        r = self.host.send(p.body())
        t_reply = time.monotonic()
        self.rig.messages += 1
        if p.size is not None and p.size < vss.MSG_SIZE:
            self.rig.stats["dropped"] += 1
            self._expect(r.by == NOBODY, f"a {p.size}-byte packet was answered: {r}")
            return
        if p.op not in FORWARDED:
            self.rig.stats["kernel-answered"] += 1
            self._expect(
                r.by == KERNEL and r.host_status == HvStatus.S_OK,
                f"op {p.op} is the kernel's to answer (status 0): {r}",
            )
            return
        self._expect(r.by == DAEMON, f"the daemon did not answer {p!r}: {r}")
        ms = round(r.seconds * 1000)
        self.rig.stats["max_reply_ms"] = max(self.rig.stats["max_reply_ms"], ms)
        self.daemon.answered[vss.op_name(p.op)] += 1
        if p.op == vss.VssOp.HOT_BACKUP:
            self._expect(r.reply == OK_REPLY, f"HOT_BACKUP: reply {r.reply.hex()}")
        elif p.op == vss.VssOp.FREEZE:
            self._expect(r.reply == OK_REPLY, f"FREEZE: reply {r.reply.hex()}")
            self.frozen, self.expired, self.freeze_sent = True, False, t_sent
        else:
            self._thaw_reply(r.reply, t_reply, expiries)

    def _thaw_reply(self, reply: bytes, t_reply: float, expiries: int) -> None:
        """A THAW's reply: S_OK, or E_FAIL after the deadline thawed by itself."""
        assert self.daemon is not None
        if self.expired:
            want = [FAIL_REPLY]
        elif self.frozen and self.deadline > 0 and t_reply >= self.freeze_sent + self.deadline:
            want = [OK_REPLY, FAIL_REPLY]  # the deadline may have fired first
        else:
            want = [OK_REPLY]
        self._expect(reply in want, f"THAW: reply {reply.hex()}, expected one of {want}")
        if reply == FAIL_REPLY and not self.expired:
            # It did fire first: then it logged so.
            self._expect(
                self.daemon.log.wait_count(EXPIRED, expiries + 1),
                "THAW failed but no deadline expiry logged",
            )
            self.rig.stats["expired"] += 1
        self.frozen = self.expired = False

    def _hibernate(self) -> None:
        assert self.host is not None and self.daemon is not None
        self.settle()
        self.host.hibernate()
        self.rig.messages += 1
        self.daemon.answered["THAW"] += 1
        # The daemon thaws (the kernel refuses the reply) and reopens.
        self.frozen = self.expired = False
        self._reopened("hibernation")

    def _hangup(self) -> None:
        assert self.kernel is not None
        self.settle()
        before = self._auto_thaw_lines()
        self.kernel.hangup()
        self._reopened("hang-up")
        self._auto_thawed(before)

    def _unplug(self, seconds: float) -> None:
        assert self.kernel is not None and self.daemon is not None
        self.settle()
        before = self._auto_thaw_lines()
        self.kernel.unplug()
        try:
            # The daemon has let go once its socket is closed.
            gone = until(lambda: not any(map(_is_socket, self.daemon_fds().values())))
            self._expect(gone, "the daemon kept the unplugged device open")
            time.sleep(seconds)
        finally:
            self.kernel.plug()
        self._reopened("unplug")
        self._auto_thawed(before)

    def _auto_thaw_lines(self) -> tuple[int, int]:
        assert self.daemon is not None
        self.daemon.log.poll()
        return self.daemon.log.count(EXPIRED), self.daemon.log.count(LOST)

    def _auto_thawed(self, before: tuple[int, int]) -> None:
        """After the device went away: if frozen, the daemon thawed, by itself or on the deadline."""
        if not self.frozen:
            return
        # One of the two thaws ran (whichever came first), and said so.
        self._expect(
            until(lambda: self._auto_thaw_lines() != before),
            "the device went away while frozen: no thaw logged",
        )
        if self._auto_thaw_lines()[0] > before[0]:
            self.expired = True
            self.rig.stats["expired"] += 1
        self.frozen = False

    def _stop(self, signum: int) -> None:
        """signum to the daemon: it thaws, logs every answer, removes its state file, exits 0."""
        assert self.daemon is not None
        self.settle()
        was_frozen = self.frozen
        before = self._auto_thaw_lines()
        self.daemon.proc.send_signal(signum)
        rc = self.daemon.wait()
        self._expect(rc == 0, f"{signal.Signals(signum).name}: exit status {rc}")
        self.frozen = False
        self._check_log(final=True)
        log = self.daemon.log
        if was_frozen:
            # It thawed on the signal, or the deadline beat the signal to it.
            said = log.count(STOPPED) + log.count(EXPIRED) - before[0]
            self._expect(said == 1, f"stopped while frozen: {said} thaws logged")
        for op, needle in (
            ("FREEZE", "VSS: op=FREEZE: "),
            ("THAW", "VSS: op=THAW: "),
            ("HOT_BACKUP", "VSS: op=CHECK HOT BACKUP"),
        ):
            n = log.count(needle)
            want = self.daemon.answered[op]
            self._expect(n == want, f"{want} {op} answered, {n} logged")
        self._expect(self.rig.state_file() is None, "the state file outlived a clean stop")
        self._probe_matches()
        self.rig.stats["stops"] += 1

    def _kill(self, thaw_tool: bool) -> None:
        assert self.daemon is not None
        self.settle()
        self.daemon.proc.kill()
        self.daemon.wait()
        self.rig.stats["kills"] += 1
        self._check_log(final=False)
        recorded = self.rig.state_file()
        if self._deadline_may_have_fired():
            # SIGKILL may have landed before, in or after the deadline's thaw.
            frozen = set(self._probed("frozen"))
        else:
            self._probe_matches()
            frozen = set(self.rig.images) if self.frozen else set()
            want = "frozen" if self.frozen else "thawed"
            self._expect(recorded == want, f"state file {recorded!r} after SIGKILL, model {want!r}")
        if frozen:
            self._expect(recorded == "frozen", f"{sorted(frozen)} frozen, state file {recorded!r}")
        if thaw_tool:
            res = self.rig.box.run([*launch.daemon_argv("hv_vss_daemon"), "--thaw"])
            self._expect(res.returncode == 0, f"--thaw exit {res.returncode}: {res.stderr}")
            said = {line.split(" ", 1)[1] for line in res.stdout.splitlines()}
            self._expect(said == frozen, f"--thaw thawed {said}, frozen were {frozen}")
            self._expect(self.rig.state_file() is None, "--thaw left the state file")
            recorded = None
        self.daemon.kill()
        self._spawn()
        found = "found: a previous daemon may have been killed while frozen"
        if recorded == "frozen":
            self._expect(self.daemon.log.wait_count(found, 1), "no recovery logged after SIGKILL")
        else:
            self.daemon.log.poll()
            self._expect(self.daemon.log.count(found) == 0, "recovery logged with nothing frozen")

    # -- checks ----------------------------------------------------------------------------

    def _expect(self, ok: bool, what: str) -> None:
        if not ok:
            raise Violation(what + self._context())

    def _context(self) -> str:
        lines = self.daemon.log.lines[-25:] if self.daemon is not None else []
        events = [f"{e.what} {e.detail}" for e in (self.kernel.events[-15:] if self.kernel else [])]
        return (
            f"\n  model: frozen={self.frozen} expired={self.expired} deadline={self.deadline} "
            f"reopens={self.reopens} opens={self.opens}, "
            f"{time.monotonic() - self.t0:.3f} s into the example"
            "\n  steps (last):\n    "
            + "\n    ".join(self.history[-20:])
            + "\n  daemon log (last lines):\n    "
            + "\n    ".join(lines)
            + "\n  kernel events (last):\n    "
            + "\n    ".join(events)
        )

    def daemon_fds(self) -> dict[int, str]:
        assert self.daemon is not None
        return self.daemon.fds()

    def _socket(self) -> str:
        socks = [t for t in self.daemon_fds().values() if _is_socket(t)]
        self._expect(len(socks) == 1, f"the daemon holds {len(socks)} sockets: {socks}")
        return socks[0]

    def _await_registration(self, why: str) -> None:
        assert self.kernel is not None and self.daemon is not None
        self._expect(self.kernel.wait_registered(GUARD), f"no registration after {why}")

    def _reopened(self, why: str) -> None:
        """The model's reopen: one more open and log line, a new socket, registered again."""
        kernel = self.kernel
        assert kernel is not None
        self.reopens += 1
        self.opens += 1
        self.rig.stats["reopens"] += 1
        # wait_registered() would still see the old connection for a moment.
        self._expect(
            until(lambda: _count(kernel, "register") >= self.opens),
            f"no registration after {why}",
        )
        self._await_registration(why)
        new = self._socket()
        self._expect(new != self.socket, f"{why}: the daemon kept its device socket {new}")
        self.socket = new

    def _deadline_may_have_fired(self) -> bool:
        return (
            self.frozen
            and self.deadline > 0
            and time.monotonic() >= self.freeze_sent + self.deadline
        )

    def settle(self) -> None:
        """If the deadline is due, wait for it: the daemon's own thaw flips the state file."""
        if not self._deadline_may_have_fired():
            return
        self._expect(
            until(lambda: self.rig.state_file() == "thawed", GUARD + self.deadline),
            f"no thaw {self.deadline} s after FREEZE",
        )
        self.frozen, self.expired = False, True
        self.rig.stats["expired"] += 1

    def _probed(self, state: str) -> list[str]:
        probe = self.rig.probe()
        bad = {p: s for p, s in probe.items() if s not in ("frozen", "thawed")}
        self._expect(not bad, f"probe failed: {bad}")
        return [p for p, s in probe.items() if s == state]

    def _probe_matches(self) -> None:
        want = "frozen" if self.frozen else "thawed"
        t0 = time.monotonic()
        probe = self.rig.probe()
        if any(s == "thawed" for s in probe.values()) and self._deadline_may_have_fired():
            # The deadline fired during the probe: settle, then look again.
            self.settle()
            want, probe = "thawed", self.rig.probe()
        odd = {p: s for p, s in probe.items() if s != want}
        self._expect(
            not odd,
            f"filesystems should be {want}: {odd} (probe started "
            f"{t0 - self.freeze_sent:.3f} s after the last FREEZE)",
        )

    def check(self) -> None:
        """Everything the model says about an idle daemon.

        The deadline may fire while we look (the daemon is then busy
        thawing, descriptors open): if it may have, wait for its thaw to end
        and look again.  Only that second look counts.
        """
        self.settle()
        try:
            self._check_idle()
        except Violation:
            if not self._deadline_may_have_fired():
                raise
            self.rig.stats["rechecked"] += 1
            self.settle()
            self._check_idle()

    def _check_idle(self) -> None:
        assert self.daemon is not None and self.kernel is not None
        self._expect(
            self.daemon.proc.poll() is None, f"the daemon exited: {self.daemon.proc.returncode}"
        )
        self._probe_matches()
        state = self.rig.state_file()
        want = "frozen" if self.frozen else "thawed"
        self._expect(state == want, f"state file says {state!r}, model {want!r}")
        fds = self.daemon_fds()
        socks = [t for t in fds.values() if _is_socket(t)]
        self._expect(socks == [self.socket], f"device socket {self.socket}, daemon holds {socks}")
        others = {fd: t for fd, t in fds.items() if not _is_socket(t)}
        self._expect(others == self.baseline, f"descriptors {others}, at start {self.baseline}")
        opens = _count(self.kernel, "open")
        self._expect(
            opens == self.opens, f"the device was opened {opens} times, model {self.opens}"
        )
        bad = [
            e
            for e in self.kernel.events
            if e.what
            in (
                "open-busy",
                "register-refused",
                "no-daemon",
                "send-failed",
                "timeout",
                "recv-failed",
                "daemon-closed",
                "bad-reply-size",
            )
        ]
        self._expect(not bad, f"kernel saw {[(e.what, e.detail) for e in bad]}")
        self._check_log(final=False)

    def _check_log(self, *, final: bool) -> None:
        assert self.daemon is not None
        log = self.daemon.log
        log.poll()
        for line in log.lines:
            m = _PREFIX.match(line)
            if m is None or not any(p.fullmatch(m.group(2)) for p in _ALLOWED):
                raise Violation(f"unexpected log line: {line!r}" + self._context())
        seen = log.count(REOPENING)
        self._expect(seen <= self.reopens, f"{seen} reopens logged, model {self.reopens}")
        if seen < self.reopens and (final or not self.frozen):
            # Held while frozen, but not otherwise.
            self._expect(
                log.wait_count(REOPENING, self.reopens, 5.0 if not final else 0.0),
                f"{self.reopens} reopens, {log.count(REOPENING)} logged (not frozen)",
            )


class EventfulVssFuzz(VssFuzz):
    """VssFuzz with restarts and device loss ten times as often: short runs still see each."""

    @rule(step=steps(restarts=40, unplugs=15))
    def step(self, step: object) -> None:
        super().step(step)


def _is_socket(target: str) -> bool:
    return target.startswith("socket:")


def _count(kernel: ChardevKernel, what: str) -> int:
    return sum(e.what == what for e in kernel.events)


@contextlib.contextmanager
def rig(specs: Sequence[FsSpec]) -> Iterator[VssRig]:
    """A VssRig over a fresh sandbox, which fails the test if it had to thaw anything."""
    with sandbox(specs) as box:
        yield VssRig(box)
