# SPDX-License-Identifier: GPL-2.0-only
"""The sequence fuzzer of hv_fcopy_daemon: the real executable on a simulated /dev/vmbus/hv_fcopy.

Mirrors nothing upstream: test harness.  Every example starts a fresh
hv_fcopy_daemon (the installed module, unmodified) on its own simulated
legacy device (hvsim.chardev.ChardevKernel with hvsim.fcopy's FcopyKernel:
drivers/hv/hv_fcopy.c's receive buffer, so COMPLETE, CANCEL and unknown
operations arrive with the 28 stale bytes of fcopy_send_data(), and START
names converted from the host's UTF-16 by utf16s_to_utf8s()), in a sandbox
directory of its own:

    dest/       0755, the copies' destination (dest/plain: a guest file)
    pub/        1777, where anyone could plant a symbolic link
    outside/    must never change (outside/victim: a file links point at)

Host messages, in any order: START (names incl. "", ".", "..", "a/b", 255
and 256 bytes, lone surrogates the kernel drops, a line break; paths with
"." and "..", doubled and trailing slashes, relative, through a file,
through an untrusted link, missing with and without CREATE_PATH; OVER_WRITE
on files, links and directories; junk flag bits), WRITE (offsets out of
order, gaps, overlaps, size fields above the fragment, size 0, offsets at
and beyond the largest file offset), COMPLETE, CANCEL, unknown operations,
packets too short for the kernel to forward; hibernation's bare CANCEL whose
reply the kernel refuses, the device hung up or gone for a while, SIGTERM
and SIGKILL followed by a restart.  Guest side between messages: files and
links planted at names the host copies to (links pointing outside), a link
planted in pub/.

The model holds the whole sandbox tree and the copy in progress.  After
every step, with the daemon idle:

* the status of each reply;
* the sandbox tree (every file's bytes, every directory and link) equals
  the model: a file appears, complete and equal to what was sent, only at
  COMPLETE; nothing outside dest/ changes;
* temporary files (".<name>.hvfcopy-<pid>-<8 hex>"): exactly one, holding
  the bytes written so far, while a copy runs; none after COMPLETE, CANCEL,
  a failure, a hang-up or SIGTERM; a SIGKILLed daemon's stays until the next
  START into its directory;
* the simulated kernel saw no timeout (HV_UTIL_TIMEOUT by its own clock), no
  refused reply, no unexpected open; the daemon is alive and logged no
  internal error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import struct
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from hvdaemons.protocol import icmsg
from hvdaemons.protocol.fcopy import (
    CREATE_PATH,
    DATA_FRAGMENT,
    MAX_FILE_OFFSET,
    OVER_WRITE,
    W_MAX_PATH,
)
from hvdaemons.protocol.status import HvStatus
from hvsim import _ffi as sim_ffi
from hvsim import launch
from hvsim import uio as sim_uio
from hvsim.chardev import HV_UTIL_TIMEOUT, ChardevKernel
from hvsim.fcopy import FcopyHost, utf16s_to_utf8s
from hvsim.protocol import fcopy as sim_fcopy
from tests.fuzz.runner import GUARD, DaemonProcess, Hangup, Restart, until, weighted
from tests.support.fcopy import tree

OK, FAIL = int(HvStatus.S_OK), int(HvStatus.E_FAIL)
EXISTS = int(HvStatus.ERROR_ALREADY_EXISTS)
NAME_MAX = 255  # a file name's bytes (Linux NAME_MAX)
# The temporary file of a copy, as hvdaemons/fcopy/writer.py documents it.
_TEMP = re.compile(r"\..*\.hvfcopy-[0-9]{1,10}-[0-9a-f]{8}", re.DOTALL)
_LINE = re.compile(r"<([0-7])>HV_(?:UIO_)?FCOPY: (.*)", re.DOTALL)
# Lines that say the daemon itself failed (log.exception, a crash).
_BUG = ("request failed", "Traceback", "exception")
_BAD_EVENTS = (
    "open-busy",
    "register-refused",
    "no-daemon",
    "send-failed",
    "timeout",
    "recv-failed",
    "daemon-closed",
    "bad-reply-size",
)
# struct vmpacket_descriptor: type, offset8, len8, flags, trans_id.
_DESC = struct.Struct("<HHHHQ")
VICTIM = b"must not change\n"
PLAIN = b"a guest file\n"


class Violation(AssertionError):
    """The daemon did something the model does not allow."""


# -- steps ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Start:
    """START_FILE_COPY of name into the sandbox's path (relative=True: no leading "/")."""

    path: str
    name: str
    flags: int
    size: int = 0
    relative: bool = False


@dataclasses.dataclass(frozen=True)
class Write:
    """WRITE_TO_FILE of data at offset; size, if given, is the size field (a lie)."""

    offset: int
    data: bytes
    size: int | None = None

    def __repr__(self) -> str:
        data = self.data.hex() if len(self.data) <= 8 else f"<{len(self.data)} bytes>"
        return f"Write(offset={self.offset}, data={data}, size={self.size})"


@dataclasses.dataclass(frozen=True)
class Burst:
    """A copy as a host runs one: START, WRITEs (any offsets), then COMPLETE, CANCEL or nothing.

    Each message is its own step of the model, checked as any other.
    """

    parts: tuple[object, ...]


@dataclasses.dataclass(frozen=True)
class Complete:
    pass


@dataclasses.dataclass(frozen=True)
class Cancel:
    pass


@dataclasses.dataclass(frozen=True)
class Unknown:
    """An operation the daemon does not know (hv_fcopy.c forwards any)."""

    op: int


@dataclasses.dataclass(frozen=True)
class Short:
    """A host packet shorter than the FCopy header: hv_fcopy.c drops it ("Invalid msg")."""

    size: int


@dataclasses.dataclass(frozen=True)
class Hibernate:
    """hv_fcopy_pre_suspend(): a bare CANCEL, the daemon's reply refused."""


@dataclasses.dataclass(frozen=True)
class Unplug:
    """The device goes away until the daemon has let go of it (open() fails with ENOENT)."""


@dataclasses.dataclass(frozen=True)
class Rescind:
    """uio: the host withdraws the channel and offers it again (the daemon reopens)."""


@dataclasses.dataclass(frozen=True)
class Spurious:
    """uio: an interrupt with nothing new in the receive ring."""


@dataclasses.dataclass(frozen=True)
class Corrupt:
    """uio: a packet descriptor the ring must refuse, at the host's write index.

    offset8 below the descriptor, len8 below offset8, or len8 beyond what was
    published (bindings/ring.c, recv: EBADMSG); the daemon drops what is
    readable, answers nothing, and the copy in progress goes on.
    """

    offset8: int
    len8: int
    size: int  # bytes published


@dataclasses.dataclass(frozen=True)
class BadIndex:
    """uio: the receive ring's write index misaligned or beyond the data area.

    Nothing in the ring can be trusted then: the daemon lets go of the
    channel (the copy in progress is abandoned) and opens it again, which
    resets both ring headers (hvsim.uio.UioSim.accept, as uio_hv_generic's
    open does).
    """

    index: str  # "misaligned", "size" (the data area's size), "beyond", "max"


@dataclasses.dataclass(frozen=True)
class Plant:
    """A guest program puts a file (data) or a symbolic link to outside/victim at dest/name."""

    name: str
    data: bytes | None


@dataclasses.dataclass(frozen=True)
class PlantPubLink:
    """Someone links pub/d to outside/ (a directory link a local user could place)."""


_DIRS = weighted(
    (6, st.just("dest")),
    (2, st.sampled_from(["dest/sub", "dest/sub/deeper", "dest//sub/", "pub", "dest/sub\\x"])),
    (
        2,
        st.sampled_from(
            [
                "dest/plain",  # a file as a directory
                "dest/ln",  # a link to a file as a directory
                "pub/d",  # missing, a directory (CREATE_PATH) or an untrusted link
                "dest/../outside",
                "dest/./sub",
            ]
        ),
    ),
)
_NAMES = weighted(
    (7, st.sampled_from(["f", "g", "plain", "é", "x" * NAME_MAX])),
    (
        3,
        st.sampled_from(
            [
                "sub",
                "ln",
                "",
                ".",
                "..",
                "a/b",
                "a\ud800b",  # the kernel drops the lone surrogate: "ab"
                "new\nline",
                "y" * (NAME_MAX + 1),
            ]
        ),
    ),
)
_FLAGS = st.sampled_from(
    [0, OVER_WRITE, CREATE_PATH, OVER_WRITE | CREATE_PATH, CREATE_PATH, 0xFFFFFFFF]
)
_START = st.builds(
    Start, _DIRS, _NAMES, _FLAGS, st.sampled_from([0, 100, 2**64 - 1]), st.booleans()
)
_DATA = st.one_of(
    st.binary(min_size=1, max_size=64),
    st.sampled_from([b"", bytes(range(256)) * 24]),  # 0 and DATA_FRAGMENT bytes
)
_OFFSET = st.one_of(
    st.integers(0, 3 * DATA_FRAGMENT),
    st.sampled_from([0, 1, DATA_FRAGMENT - 1, DATA_FRAGMENT]),
)


def _at_the_end(data: bytes, beyond: int) -> Write:
    """data ending at the largest file offset (beyond=0) or a byte past it."""
    return Write(MAX_FILE_OFFSET - len(data) + beyond, data)


_WRITE = weighted(
    (16, st.builds(Write, _OFFSET, _DATA)),
    (
        2,
        st.builds(Write, _OFFSET, _DATA, st.sampled_from([0, 1, DATA_FRAGMENT, DATA_FRAGMENT + 1])),
    ),
    # At the largest file offset (the filesystem refuses) and beyond it (decoding does).
    (
        1,
        st.builds(_at_the_end, _DATA, st.sampled_from([0, 1])),
    ),
    (1, st.builds(Write, st.just(2**64 - 1), _DATA)),
)
_PLANT = st.builds(
    Plant,
    st.sampled_from(["f", "g", "ln", "sub", "ab"]),
    st.one_of(st.none(), st.sampled_from([b"", b"guest"])),
)


def _burst(start: Start, writes: list[Write], end: tuple[object, ...]) -> Burst:
    return Burst((start, *writes, *end))


_BURST = st.builds(
    _burst,
    st.builds(
        Start,
        st.sampled_from(["dest", "dest/sub", "pub"]),
        st.sampled_from(["f", "g", "plain", "x" * NAME_MAX]),
        st.sampled_from([0, OVER_WRITE, CREATE_PATH, OVER_WRITE | CREATE_PATH]),
    ),
    st.lists(st.builds(Write, _OFFSET, _DATA), max_size=8),
    st.sampled_from([(Complete(),), (Complete(),), (Cancel(),), ()]),
)


def steps(restarts: int = 5, uio: bool = False) -> st.SearchStrategy[object]:
    """Steps, per mille, the simplest first (shrinking tends towards it).

    uio=True: the channel's events are a rescind and spurious interrupts
    instead of the char device's hibernation, hang-up and unplug.
    """
    if uio:
        device = [
            (20, st.just(Rescind())),
            (10, st.just(Spurious())),
            (10, st.builds(BadIndex, st.sampled_from(["misaligned", "size", "beyond", "max"]))),
            (
                20,
                st.sampled_from(
                    [
                        Corrupt(1, 4, 32),
                        Corrupt(0, 4, 32),
                        Corrupt(4, 2, 32),
                        Corrupt(2, 200, 32),
                        Corrupt(2, 4, 32),
                        Corrupt(2, 0xFFFF, 64),
                    ]
                ),
            ),
        ]
    else:
        device = [
            (10, st.just(Hibernate())),
            (10, st.just(Hangup())),
            (restarts, st.just(Unplug())),
        ]
    return weighted(
        (300, _WRITE),
        (150, _BURST),
        (200, _START),
        (75, st.just(Complete())),
        (25, st.just(Cancel())),
        (15, st.builds(Unknown, st.sampled_from([4, 5, 100, 0xFFFFFFFF]))),
        (5, st.builds(Short, st.sampled_from([0, 4, 35]))),
        (60 - 2 * restarts, _PLANT),
        (10, st.just(PlantPubLink())),
        *device,
        (restarts, st.builds(Restart, st.sampled_from([signal.SIGTERM, signal.SIGKILL]))),
    )


# -- the model and the checks ----------------------------------------------------------


class FcopyRig:
    """What the examples of one file-copy fuzz run share: a scratch directory and the counts."""

    def __init__(self, tmp: str, name: str) -> None:
        self.tmp = tmp
        self.name = name
        self.messages = 0
        self.examples = 0
        self.stats: Counter[str] = Counter()


@dataclasses.dataclass
class CopyModel:
    dir: str  # relative to the sandbox
    name: str
    overwrite: bool
    data: bytearray = dataclasses.field(default_factory=bytearray)
    failed: int = OK


class FcopyFuzz(RuleBasedStateMachine):
    """One example: a fresh daemon and sandbox, steps, SIGTERM; checked after each."""

    def __init__(self, rig: FcopyRig) -> None:
        super().__init__()
        self.rig = rig
        self.kernel: ChardevKernel | None = None
        self.host: FcopyHost | None = None
        self.daemon: DaemonProcess | None = None
        self.box = ""
        self.device = ""
        self.model: dict[str, object] = {}
        self.copy: CopyModel | None = None
        self.stale: list[tuple[str, bytes]] = []  # temporary files of SIGKILLed daemons
        self.opens = 0
        self.history: list[str] = []

    # -- set-up and tear-down ------------------------------------------------------

    @initialize()
    def start(self) -> None:
        rig = self.rig
        rig.examples += 1
        base = os.path.join(rig.tmp, f"x{rig.examples}")
        self.box = os.path.join(base, "box")
        for d, mode in (("dest", 0o755), ("pub", 0o1777), ("outside", 0o755)):
            os.makedirs(os.path.join(self.box, d))
            os.chmod(os.path.join(self.box, d), mode)
        self._put("outside/victim", VICTIM)
        self._put("dest/plain", PLAIN)
        self.model = tree(Path(self.box))
        self._plug_in(base)
        self._spawn()
        self.check()

    # -- the transport (the uio fuzzer overrides these) -------------------------------

    def _plug_in(self, base: str) -> None:
        """The simulated device and host."""
        self.device = os.path.join(base, "hv_fcopy")
        self.kernel = ChardevKernel(self.device, "hv_fcopy", timeout=HV_UTIL_TIMEOUT)
        self.host = FcopyHost(self.kernel)

    def _unplug_all(self) -> None:
        if self.kernel is not None:
            self.kernel.close()

    def _send(self, body: bytes) -> int:
        """One host message; the status the host gets."""
        assert self.host is not None
        return self.host.send(body)

    def _name(self, name: str) -> str | None:
        """The file name the daemon decodes from the host's (None: it refuses it).

        hv_fcopy.c converts with utf16s_to_utf8s() (at most 259 bytes, lone
        surrogates dropped): the daemon gets valid UTF-8.
        """
        raw = utf16s_to_utf8s(name.encode("utf-16-le", "surrogatepass"), W_MAX_PATH - 1)
        return raw.decode()

    def _short(self) -> int:
        """A packet too short for an FCopy header: hv_fcopy.c drops it, the host gets E_FAIL."""
        return FAIL

    def _check_transport(self) -> None:
        """The simulated kernel's view: no timeout, no refused reply, no unexpected open."""
        assert self.kernel is not None
        bad = [e for e in self.kernel.events if e.what in _BAD_EVENTS]
        self._expect(not bad, f"kernel saw {[(e.what, e.detail) for e in bad]}")
        opens = _count(self.kernel, "open")
        self._expect(
            opens == self.opens, f"the device was opened {opens} times, model {self.opens}"
        )

    def _events(self) -> list[str]:
        return [f"{e.what} {e.detail}" for e in (self.kernel.events if self.kernel else [])]

    def _put(self, rel: str, data: bytes) -> None:
        with open(os.path.join(self.box, rel), "wb") as f:
            f.write(data)

    def _spawn(self) -> None:
        kernel = self.kernel
        assert kernel is not None
        self.daemon = DaemonProcess(
            [*launch.daemon_argv("hv_fcopy_daemon"), "-n", "--device", self.device]
        )
        self.opens += 1
        self._expect(
            until(lambda: _count(kernel, "register") >= self.opens), "no registration at start"
        )
        self._expect(kernel.wait_registered(GUARD), "not registered at start")

    def teardown(self) -> None:
        try:
            if self.daemon is not None and self.daemon.proc.poll() is None:
                self._stop(signal.SIGTERM)
                self._check_tree()
        finally:
            if self.daemon is not None:
                self.daemon.kill()
            self._unplug_all()

    # -- steps -------------------------------------------------------------------------

    @rule(step=steps())
    def step(self, step: object) -> None:
        self._do(step)

    def _do(self, step: object) -> None:
        if isinstance(step, Burst):
            for part in step.parts:
                self._do(part)
            return
        self.rig.stats[type(step).__name__] += 1
        self.history.append(repr(step))
        if isinstance(step, Start):
            self._start(step)
        elif isinstance(step, Write):
            self._write(step)
        elif isinstance(step, Complete):
            self._reply(sim_fcopy.encode_complete(), self._complete())
        elif isinstance(step, Cancel):
            self.copy = None
            self._reply(sim_fcopy.encode_cancel(), OK)
        elif isinstance(step, Unknown):
            self._reply(sim_fcopy.encode_header(step.op), self._reject())
        elif isinstance(step, Short):
            self._reply(bytes(step.size), self._short())
        elif isinstance(step, Hibernate):
            self._hibernate()
        elif isinstance(step, Hangup):
            assert self.kernel is not None
            self.kernel.hangup()
            self.copy = None
            self._reopened("hang-up")
        elif isinstance(step, Unplug):
            self._unplug()
        elif isinstance(step, Rescind):
            self._rescind()
        elif isinstance(step, Spurious):
            self._spurious()
        elif isinstance(step, Corrupt):
            self._corrupt(step)
        elif isinstance(step, BadIndex):
            self._bad_index(step)
        elif isinstance(step, Restart):
            self._restart(step.signum)
        elif isinstance(step, Plant):
            self._plant(step)
        elif isinstance(step, PlantPubLink):
            if "pub/d" not in self.model:
                os.symlink(os.path.join(self.box, "outside"), os.path.join(self.box, "pub/d"))
                self.model["pub/d"] = ("link", os.path.join(self.box, "outside"))
        else:
            raise AssertionError(f"unknown step {step!r}")
        self.check()

    # -- host requests and the model's answers -------------------------------------------

    def _reply(self, body: bytes, want: int) -> None:
        self.rig.messages += 1
        got = self._send(body)
        self.rig.stats[f"status {got:#x}"] += 1
        self._expect(got == want, f"status {got:#x}, model {want:#x}")

    def _start(self, step: Start) -> None:
        root = self.box.lstrip("/") if step.relative else self.box
        body = sim_fcopy.encode_start(
            step.name, f"{root}/{step.path}", step.flags, step.size, utf16=True
        )
        self._reply(body, self._start_model(step))

    def _start_model(self, step: Start) -> int:
        name = self._name(step.name)
        if name is None:
            return self._reject()  # refused before the copier: the copy in progress fails
        self.copy = None  # a START discards the copy in progress
        bad_name = name in ("", ".", "..") or "/" in name or len(name.encode()) > NAME_MAX
        comps = [c for c in step.path.split("/") if c]
        if bad_name or any(c in (".", "..") for c in comps):
            return FAIL
        here = ""
        for c in comps:
            here = f"{here}/{c}" if here else c
            entry = self.model.get(here)
            if entry is None and step.flags & CREATE_PATH:
                self.model[here] = "dir"
            elif entry != "dir":  # missing, a file, a link (untrusted, or to a file)
                return FAIL
        target = self.model.get(f"{here}/{name}")
        if target is not None:
            if not step.flags & OVER_WRITE:
                return EXISTS
            if target == "dir":
                return FAIL
        # The temporary files of killed daemons in that directory go now.
        kept = [(d, data) for d, data in self.stale if d != here]
        self.rig.stats["stale temps removed"] += len(self.stale) - len(kept)
        self.stale = kept
        self.copy = CopyModel(here, name, bool(step.flags & OVER_WRITE))
        self.rig.stats["copies started"] += 1
        return OK

    def _write(self, step: Write) -> None:
        size = len(step.data) if step.size is None else step.size
        body = sim_fcopy.encode_write(step.offset, step.data, size=step.size)
        c = self.copy
        if c is None:
            want, why = FAIL, "no copy"
        elif c.failed:
            want, why = c.failed, "failed copy"
        elif size > DATA_FRAGMENT or step.offset > MAX_FILE_OFFSET - size:
            want, why = self._reject(), "refused"
        elif size and step.offset + size > 2**40:
            c.failed = want = FAIL  # beyond what the filesystem takes (EFBIG)
            why = "too far"
        else:
            want, why = OK, "written"
            data = step.data.ljust(size, b"\0")[:size]
            if size:
                end = step.offset + size
                if len(c.data) < end:
                    c.data.extend(bytes(end - len(c.data)))
                c.data[step.offset : end] = data
        self.rig.stats[f"write: {why}"] += 1
        self._reply(body, want)

    def _reject(self) -> int:
        """A request refused before the copier: the copy in progress fails."""
        if self.copy is not None and not self.copy.failed:
            self.copy.failed = FAIL
        return FAIL

    def _complete(self) -> int:
        c, self.copy = self.copy, None
        if c is None:
            return FAIL
        if c.failed:
            return c.failed
        target = f"{c.dir}/{c.name}"
        if not c.overwrite and target in self.model:
            return EXISTS  # taken since START
        if isinstance(self.model.get(target), tuple):
            self.rig.stats["links replaced"] += 1
        self.model[target] = bytes(c.data)
        self.rig.stats["copies completed"] += 1
        return OK

    # -- guest side --------------------------------------------------------------------

    def _plant(self, step: Plant) -> None:
        rel = f"dest/{step.name}"
        path = os.path.join(self.box, rel)
        if rel in self.model:
            return
        if step.data is None:
            os.symlink(os.path.join(self.box, "outside/victim"), path)
            self.model[rel] = ("link", os.path.join(self.box, "outside/victim"))
        else:
            self._put(rel, step.data)
            self.model[rel] = step.data

    # -- the device and the process --------------------------------------------------------

    def _hibernate(self) -> None:
        assert self.kernel is not None
        self.rig.messages += 1
        self.kernel.inject(sim_fcopy.encode_cancel())
        self.copy = None
        self._reopened("hibernation")

    def _reopened(self, why: str) -> None:
        kernel = self.kernel
        assert kernel is not None
        self.opens += 1
        self.rig.stats["reopens"] += 1
        self._expect(
            until(lambda: _count(kernel, "register") >= self.opens), f"no registration after {why}"
        )
        self._expect(kernel.wait_registered(GUARD), f"not registered after {why}")

    def _unplug(self) -> None:
        assert self.kernel is not None and self.daemon is not None
        daemon = self.daemon
        self.kernel.unplug()
        try:
            gone = until(lambda: not any(t.startswith("socket:") for t in daemon.fds().values()))
            self._expect(gone, "the daemon kept the unplugged device open")
        finally:
            self.kernel.plug()
        self.copy = None
        self._reopened("unplug")

    def _rescind(self) -> None:
        raise AssertionError("no rescind on the char device")

    def _spurious(self) -> None:
        raise AssertionError("no interrupts on the char device")

    def _corrupt(self, step: Corrupt) -> None:
        raise AssertionError("no ring on the char device")

    def _bad_index(self, step: BadIndex) -> None:
        raise AssertionError("no ring on the char device")

    def _restart(self, signum: int) -> None:
        assert self.daemon is not None
        if signum == signal.SIGKILL:
            self.daemon.proc.kill()
            self.daemon.wait()
            self.daemon.kill()
            c = self.copy
            if c is not None and not c.failed:
                self.stale.append((c.dir, bytes(c.data)))
                self.rig.stats["temps left by kills"] += 1
            self.rig.stats["kills"] += 1
        else:
            self._stop(signum)
        self.copy = None
        self._check_log()
        self._spawn()

    def _stop(self, signum: int) -> None:
        assert self.daemon is not None
        self.daemon.proc.send_signal(signum)
        rc = self.daemon.wait()
        self._expect(rc == 0, f"{signal.Signals(signum).name}: exit status {rc}")
        self._check_log()
        self.daemon.kill()
        self.copy = None
        self.rig.stats["stops"] += 1

    # -- checks ----------------------------------------------------------------------------

    def _expect(self, ok: bool, what: str) -> None:
        if not ok:
            raise Violation(what + self._context())

    def _context(self) -> str:
        lines = self.daemon.log.lines[-15:] if self.daemon is not None else []
        events = self._events()
        return (
            "\n  steps (last):\n    "
            + "\n    ".join(self.history[-15:])
            + "\n  daemon log (last lines):\n    "
            + "\n    ".join(repr(x) for x in lines)
            + "\n  kernel events (last):\n    "
            + "\n    ".join(events[-10:])
        )

    def check(self) -> None:
        assert self.daemon is not None
        self._expect(
            self.daemon.proc.poll() is None, f"the daemon exited: {self.daemon.proc.returncode}"
        )
        self._check_tree()
        self._check_transport()
        self._check_log()

    def _check_tree(self) -> None:
        disk = tree(Path(self.box))
        temps = sorted(
            (os.path.dirname(rel), data)
            for rel, data in disk.items()
            if _TEMP.fullmatch(os.path.basename(rel)) and isinstance(data, bytes)
        )
        rest = {rel: v for rel, v in disk.items() if not _TEMP.fullmatch(os.path.basename(rel))}
        if rest != self.model:
            keys = sorted(
                k for k in rest.keys() | self.model.keys() if rest.get(k) != self.model.get(k)
            )
            shown = [(k, _show(rest.get(k)), _show(self.model.get(k))) for k in keys[:6]]
            raise Violation(f"sandbox tree differs (path, disk, model): {shown}" + self._context())
        want = list(self.stale)
        c = self.copy
        if c is not None and not c.failed:
            want.append((c.dir, bytes(c.data)))
        if temps != sorted(want):
            raise Violation(
                f"temporary files {[(d, _short(b)) for d, b in temps]}, "
                f"model {[(d, _short(b)) for d, b in sorted(want)]}" + self._context()
            )

    def _check_log(self) -> None:
        assert self.daemon is not None
        log = self.daemon.log
        log.poll()
        for line in log.lines:
            m = _LINE.fullmatch(line)
            if m is None or int(m.group(1)) < 3 or any(b in m.group(2) for b in _BUG):
                raise Violation(f"unexpected log line: {line!r}" + self._context())


class EventfulFcopyFuzz(FcopyFuzz):
    """FcopyFuzz with restarts and device loss four times as often: short runs see each."""

    @rule(step=steps(restarts=20))
    def step(self, step: object) -> None:
        self._do(step)


class UioFcopyFuzz(FcopyFuzz):
    """The same daemon over the simulated uio_hv_generic channel (hvsim.uio), one kernel
    variant per example in turn (ring size, page size, mask owner, binding), the host
    polling with its TX interrupt masked in every other example.

    What differs from the char device: the daemon reads the host's messages
    itself (no stale bytes, UTF-16 names decoded strictly: a lone surrogate
    is refused), the channel is lost by a rescind (then offered again), and
    interrupts may come with nothing to read, packets with descriptors the
    ring refuses (offset8/len8) are dropped, and a receive ring whose write
    index is misaligned or out of range is let go and reopened.  Not covered
    here: the send ring's read index, pending_send_sz games and a host that
    stops reading its ring (TX full).
    """

    def _plug_in(self, base: str) -> None:
        names = list(sim_uio.VARIANTS)
        self.variant = names[self.rig.examples % len(names)]
        self.rig.stats[f"variant {self.variant}"] += 1
        self.root = os.path.join(base, "sim")
        self.sim: sim_uio.UioSim | None = sim_uio.UioSim(self.root, self.variant)
        spin = 0 if self.rig.examples % 2 else 50_000
        self.uhost = sim_uio.UioHost(self.sim, timeout=HV_UTIL_TIMEOUT, spin_ns=spin)
        self.sim.offer()

    def _unplug_all(self) -> None:
        if self.sim is not None:
            self.sim.close()
            self.sim = None

    def _spawn(self) -> None:
        self.daemon = DaemonProcess(sim_uio.daemon_command(self.root))
        self._connect("start")

    def _connect(self, why: str) -> None:
        assert self.sim is not None and self.daemon is not None
        self.opens += 1
        try:
            sim_uio._wait_bound(self.sim, GUARD, self.daemon.proc)
            self.uhost.connect(GUARD)
            status, _ = self.uhost.negotiate()
        except sim_uio.HostError as e:
            raise Violation(f"{why}: {e}" + self._context()) from None
        self._expect(status == OK, f"{why}: negotiation answered {status:#x}")

    def _send(self, body: bytes) -> int:
        try:
            return self.uhost.fcopy(body)
        except sim_uio.HostError as e:
            raise Violation(f"host: {e}" + self._context()) from None

    def _name(self, name: str) -> str | None:
        try:
            return name.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
        except UnicodeDecodeError:
            return None

    def _short(self) -> int:
        return self._reject()  # the daemon reads it: no FCopy message, the copy fails

    def _rescind(self) -> None:
        assert self.sim is not None
        self.sim.rescind()
        self.copy = None  # the channel is gone: the partial file goes
        self.sim.offer()
        self.rig.stats["reopens"] += 1
        self._connect("rescind")

    def _spurious(self) -> None:
        assert self.sim is not None
        self.sim.signal_guest()

    def _corrupt(self, step: Corrupt) -> None:
        desc = _DESC.pack(icmsg.VM_PKT_DATA_INBAND, step.offset8, step.len8, 0, 0xC0C0)
        try:
            self.uhost.post_raw(desc.ljust(step.size, b"\xa5"))
            self.uhost.wait_consumed(GUARD)
        except sim_uio.HostError as e:
            raise Violation(f"corrupt packet: {e}" + self._context()) from None
        assert self.daemon is not None
        # Logged the first time (repeats may be suppressed): refused, not taken for a packet.
        self._expect(
            self.daemon.log.wait_count("corrupt packet in the receive ring", 1),
            "a corrupt packet and no word of it",
        )
        self.rig.stats["corrupt packets dropped"] += 1

    def _bad_index(self, step: BadIndex) -> None:
        sim = self.sim
        assert sim is not None and sim.rx is not None
        size = sim.rx.data_size
        index = {"misaligned": 12, "size": size, "beyond": size + 8, "max": 0xFFFFFFF8}
        sim.rx.store(sim_ffi.RING_WRITE_INDEX, index[step.index])
        sim.signal_guest()
        self.copy = None
        self.rig.stats["reopens"] += 1
        self._connect(f"write index {index[step.index]} of {size}")

    def _check_transport(self) -> None:
        assert self.sim is not None
        self._expect(not self.sim.bad_irqcontrol, "irqcontrol writes of the wrong size")
        self._expect(self.sim.opens == self.opens, f"the node was opened {self.sim.opens} times")

    def _events(self) -> list[str]:
        sim = self.sim
        if sim is None:
            return []
        return [
            f"variant {self.variant}, opens {sim.opens}, interrupts {sim.interrupts}, "
            f"guest signals {sim.guest_signals}"
        ]

    @rule(step=steps(restarts=10, uio=True))
    def step(self, step: object) -> None:
        self._do(step)


def _show(entry: object) -> object:
    """A tree entry, its bytes shortened."""
    return _short(entry) if isinstance(entry, bytes) else entry


def _short(data: bytes) -> str:
    return data.hex() if len(data) <= 16 else f"<{len(data)} bytes {data[:8].hex()}...>"


def _count(kernel: ChardevKernel, what: str) -> int:
    return sum(e.what == what for e in kernel.events)


@contextlib.contextmanager
def rig(name: str = "hv_fcopy_daemon") -> Iterator[FcopyRig]:
    with tempfile.TemporaryDirectory(prefix="fcopy-fuzz-") as tmp:
        yield FcopyRig(tmp, name)
