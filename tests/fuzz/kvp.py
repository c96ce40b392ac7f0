# SPDX-License-Identifier: GPL-2.0-only
"""The sequence fuzzer of hv_kvp_daemon: the real executable on a simulated /dev/vmbus/hv_kvp.

Mirrors nothing upstream: test harness.  Every example starts a fresh
hv_kvp_daemon (the installed module, unmodified) with its own --state-dir,
on its own simulated device (hvsim.chardev.ChardevKernel, which applies
hv_utils_transport.c's rules and the kernel's reply timeout, HV_UTIL_TIMEOUT).

Two classes of host messages, each marked in the step's repr:

* kernel-built (`K...`): what drivers/hv/hv_kvp.c hands the daemon for a
  host request (kvp_send_key() through hvsim.protocol.kvp): a zero-filled
  7432-byte hv_kvp_msg, UTF-16 keys and values converted to UTF-8 by
  utf16s_to_utf8s() (stopping at a NUL, dropping lone surrogates, cut at
  511/2047 bytes), key_size/value_size = length + 1, REG_U32/REG_U64
  printed as decimal, value_type and GET's value_size left 0; ENUMERATE
  with any u32 index, every pool byte the host may send (0-4 and beyond),
  GET_IP_INFO for unknown MACs and SET_IP_INFO for unknown GUIDs.
* hostile (`Raw...`, `Odd...`): what hv_kvp.c never builds but a buggy or
  hostile kernel could hand over: key_size/value_size that disagree with
  the strings (0, too short, 513, 0xffffffff), strings without a NUL,
  non-UTF-8 bytes, junk in every byte the kernel leaves zero, unknown
  operations (including REGISTER1 after registration), and messages that
  are not 7432 bytes long.

Guest-side events between messages: records appended, overwritten or cut
(partial records, keys without a NUL, junk after terminators, duplicate
keys, non-UTF-8) under the daemon's POSIX lock, a pool file replaced by
rename() or removed, `hvctl kvp set` (which writes through the daemon's
Pool); and the daemon's device hung up or gone for a while, SIGTERM and
SIGKILL followed by a restart.

The model holds each pool file's exact bytes, the salvage files and the
auto pool's keys.  After every step, with the daemon idle:

* the reply: the status, and every byte (the request echoed with the
  fields the operation fills; the daemon answers in the buffer it read);
* every pool file, read and parsed here (2560-byte records, a trailing
  partial record, independently of hvdaemons.kvp.pool), equals the model;
  no journal is left; the salvage files hold exactly the partial records
  moved aside;
* the simulated kernel saw no timeout (the daemon answered within
  HV_UTIL_TIMEOUT by the simulator's own clock), no refused reply, no
  unexpected open;
* the daemon is alive and every log line is one the model allows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import ipaddress
import os
import platform
import re
import signal
import struct
import tempfile
from collections import Counter
from collections.abc import Iterator

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from hvdaemons.protocol import kvp
from hvdaemons.protocol.status import HvStatus
from hvsim import launch
from hvsim.chardev import HV_UTIL_TIMEOUT, ChardevKernel
from hvsim.protocol import kvp as sim_kvp
from tests.fuzz.runner import GUARD, DaemonProcess, Hangup, LogTail, Restart, until, weighted

MSG = kvp.KVP_MSG_SIZE
R = kvp.RECORD_SIZE
KEY = kvp.MAX_KEY_SIZE
VALUE = kvp.MAX_VALUE_SIZE
POOLS = kvp.POOL_COUNT
AUTO = int(kvp.KvpPool.AUTO)
OK, FAIL, CONT = int(HvStatus.S_OK), int(HvStatus.E_FAIL), int(HvStatus.S_CONT)
GUID_NOTFOUND = int(HvStatus.GUID_NOTFOUND)
_U32 = struct.Struct("<I")

# The auto pool's keys in the order of hv_kvp_daemon.c's kvp_get_ip_info()/
# kvp_pool_enumerate() switch (KVP_POOL_AUTO), written out here, not taken
# from the daemon.
AUTO_KEYS = (
    "FullyQualifiedDomainName",
    "IntegrationServicesVersion",
    "NetworkAddressIPv4",
    "NetworkAddressIPv6",
    "OSBuildNumber",
    "OSName",
    "OSMajorVersion",
    "OSMinorVersion",
    "OSVersion",
    "ProcessorArchitecture",
)
# Values the model knows: the kernel's HV_DRV_VERSION, uname -r / -m.
AUTO_KNOWN = {
    "IntegrationServicesVersion": "3.1",
    "OSBuildNumber": platform.release(),
    "OSVersion": platform.release().split("-")[0],
    "ProcessorArchitecture": platform.machine(),
}

_PREFIX = re.compile(r"^<([0-7])>KVP: (.*)$", re.DOTALL)
_OPS = r"(SET|GET|DELETE|ENUMERATE)"
# Every line the daemon may log in these runs; anything else fails the run.
_ALLOWED = [
    re.compile(p, re.DOTALL)
    for p in (
        r"KVP starting; pid is:\d+",
        r"KVP LIC Version: 3\.1",
        rf"malformed request: \d+ bytes, expected {MSG}; answering HV_E_FAIL",
        r"unknown operation \d+ \(pool \d+\); answering HV_E_FAIL",
        rf"{_OPS}: no pool \d+ \(there are {POOLS}\); answering HV_E_FAIL",
        rf"{_OPS}: pool \d: bad key_size \d+; answering HV_S_CONT",
        r"kvp_key_add_or_modify: Too long key or value: key=.*, val=.*",
        r"GET_IP_INFO: no interface has MAC address .*",
        r"GET_IP_INFO: empty adapter id",
        r"SET_IP_INFO: no interface has device GUID .*",
        r"pool \d: \S+ is \d+ bytes, not a multiple of 2560; ignoring its last \d+ bytes",
        r"pool \d: moved \d+ trailing bytes \(an incomplete record\) to \S+",
        r"pool file \S+ (vanished; creating it again|was replaced; reopening it)",
        r"\S+: (end of file on the device|104 Connection reset by peer|32 Broken pipe"
        r"|device hung up); reopening",
        r"open \S+ failed; error: 2 No such file or directory; retrying",
    )
]
REOPENING = "; reopening"
# Kernel events that must never happen while the daemon runs.
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
# MAC addresses and GUIDs no interface of this machine has (checked in the rig).
_MACS = ("02:FF:00:00:00:01", "02:ff:00:00:00:02", "", "not-a-mac", "02-FF-00-00-00-03")
_GUIDS = (
    "{00000000-0000-0000-0000-000000000000}",
    "{f8615163-df3e-46c5-913f-f2d2f965ed0e}",
    "",
    "eth0",
)


class Violation(AssertionError):
    """The daemon did something the model does not allow."""


# -- the model's view of a pool file ------------------------------------------------


def cstr(buf: bytes) -> bytes:
    """buf up to its first NUL."""
    nul = buf.find(b"\0")
    return buf if nul < 0 else buf[:nul]


def record_key(rec: bytes) -> bytes:
    return cstr(rec[:KEY])


def records(content: bytes) -> list[bytes]:
    """The complete 2560-byte records of a pool file (a trailing partial one is not one)."""
    return [content[i : i + R] for i in range(0, len(content) - R + 1, R)]


def zero_record(key: bytes, value: bytes) -> bytes:
    return key + bytes(KEY - len(key)) + value + bytes(VALUE - len(value))


@dataclasses.dataclass
class PoolModel:
    """One pool file as the model says it is: its bytes, and the bytes salvaged from it."""

    content: bytes = b""
    salvaged: bytes = b""

    @property
    def records(self) -> list[bytes]:
        return records(self.content)

    @property
    def partial(self) -> bytes:
        return self.content[len(self.content) - len(self.content) % R :]

    def find(self, key: bytes) -> int | None:
        for i, rec in enumerate(self.records):
            if record_key(rec) == key:
                return i
        return None

    def _salvage(self) -> None:
        # A change of the file's size first moves an incomplete record aside.
        tail = self.partial
        if tail:
            self.salvaged += tail
            self.content = self.content[: len(self.content) - len(tail)]

    def set(self, key: bytes, value: bytes) -> None:
        new = zero_record(key, value)
        i = self.find(key)
        if i is None:
            self._salvage()
            self.content += new
        else:
            self.content = self.content[: i * R] + new + self.content[(i + 1) * R :]

    def delete(self, key: bytes) -> bool:
        i = self.find(key)
        if i is None:
            return False
        self._salvage()
        self.content = self.content[: i * R] + self.content[(i + 1) * R :]
        return True


# -- steps ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class KSet:
    """Kernel-built SET (value_type is the host's, the daemon never sees it)."""

    pool: int
    key: str
    value: str | int
    vtype: int = int(sim_kvp.RegType.SZ)

    def message(self) -> bytes:
        return sim_kvp.encode_set_request(self.pool, self.key, self.value, self.vtype)


@dataclasses.dataclass(frozen=True)
class KGet:
    pool: int
    key: str

    def message(self) -> bytes:
        return sim_kvp.encode_get_request(self.pool, self.key)


@dataclasses.dataclass(frozen=True)
class KDelete:
    pool: int
    key: str

    def message(self) -> bytes:
        return sim_kvp.encode_delete_request(self.pool, self.key)


@dataclasses.dataclass(frozen=True)
class KEnumerate:
    pool: int
    index: int

    def message(self) -> bytes:
        return sim_kvp.encode_enumerate_request(self.pool, self.index)


@dataclasses.dataclass(frozen=True)
class KGetIpInfo:
    mac: str
    family: int

    def message(self) -> bytes:
        return sim_kvp.encode_get_ip_info_request(self.mac, self.family)


@dataclasses.dataclass(frozen=True)
class KSetIpInfo:
    guid: str
    ip: str

    def message(self) -> bytes:
        value = kvp.IpValue(self.guid, kvp.ADDR_FAMILY_IPV4, False, self.ip, "255.255.255.0")
        return sim_kvp.encode_set_ip_info_request(value)


@dataclasses.dataclass(frozen=True)
class RawKv:
    """Hostile GET/SET/DELETE: sizes that disagree with the strings, junk anywhere."""

    op: int
    pool: int
    key: bytes
    key_size: int
    value: bytes = b""
    value_size: int = 0
    value_type: int = 0
    junk: int = 0  # fill byte of everything the kernel leaves zero

    def message(self) -> bytes:
        msg = bytearray([self.junk]) * MSG
        msg[kvp.OFF_OP] = self.op
        msg[kvp.OFF_POOL] = self.pool
        if self.op == kvp.KvpOp.DELETE:
            _U32.pack_into(msg, kvp.OFF_DEL_KEY_SIZE, self.key_size)
            msg[kvp.OFF_DEL_KEY : kvp.OFF_DEL_KEY + len(self.key)] = self.key
        else:
            _U32.pack_into(msg, kvp.OFF_KV_VALUE_TYPE, self.value_type)
            _U32.pack_into(msg, kvp.OFF_KV_KEY_SIZE, self.key_size)
            _U32.pack_into(msg, kvp.OFF_KV_VALUE_SIZE, self.value_size)
            msg[kvp.OFF_KV_KEY : kvp.OFF_KV_KEY + len(self.key)] = self.key
            msg[kvp.OFF_KV_VALUE : kvp.OFF_KV_VALUE + len(self.value)] = self.value
        return bytes(msg)


@dataclasses.dataclass(frozen=True)
class RawOp:
    """Hostile: any operation byte (unknown ones, REGISTER1 again) over random bytes."""

    op: int
    pool: int
    body: bytes

    def message(self) -> bytes:
        msg = bytearray((self.body * (MSG // max(len(self.body), 1) + 1))[:MSG] or bytes(MSG))
        msg[kvp.OFF_OP] = self.op
        msg[kvp.OFF_POOL] = self.pool
        return bytes(msg)


@dataclasses.dataclass(frozen=True)
class Odd:
    """Hostile: a message that is not 7432 bytes (the kernel always sends exactly that)."""

    size: int
    op: int

    def message(self) -> bytes:
        msg = bytearray(self.size)
        msg[0] = self.op
        return bytes(msg)


@dataclasses.dataclass(frozen=True)
class Append:
    """A guest program appends bytes to a pool file under the POSIX lock (the C writer's way)."""

    pool: int
    data: bytes

    def __repr__(self) -> str:
        return f"Append(pool={self.pool}, data={_short(self.data)})"


@dataclasses.dataclass(frozen=True)
class Overwrite:
    """A guest program rewrites bytes in place (a record's key or value) under the lock."""

    pool: int
    at: int  # offset within the file, modulo its size
    data: bytes

    def __repr__(self) -> str:
        return f"Overwrite(pool={self.pool}, at={self.at}, data={_short(self.data)})"


@dataclasses.dataclass(frozen=True)
class Truncate:
    """A pool file cut short (a writer that died, a full disk): a partial record."""

    pool: int
    cut: int


@dataclasses.dataclass(frozen=True)
class Replace:
    """A pool file replaced by rename() (an editor), with content of its own."""

    pool: int
    data: bytes

    def __repr__(self) -> str:
        return f"Replace(pool={self.pool}, data={_short(self.data)})"


@dataclasses.dataclass(frozen=True)
class Remove:
    pool: int


@dataclasses.dataclass(frozen=True)
class Hvctl:
    """`hvctl kvp set --pool N KEY VALUE`: writes through the daemon's Pool, same locks."""

    pool: int
    key: str
    value: str


@dataclasses.dataclass(frozen=True)
class Unplug:
    """The device goes away for a while: open() fails with ENOENT meanwhile."""

    seconds: float


def _short(data: bytes) -> str:
    return data.hex() if len(data) <= 24 else f"<{len(data)} bytes {data[:12].hex()}...>"


# Keys that collide often, boundary sizes and non-ASCII; the kernel converts
# the host's UTF-16 (lone surrogates dropped, cut at a NUL or 511 bytes).
_KEYS = st.one_of(
    st.sampled_from(["a", "b", "key", "", "Ключ", "😀", "x" * 511, "y" * 600, "é" * 300]),
    st.sampled_from(["a", "b", "key"]),
    st.text(max_size=20),
)
_VALUES: st.SearchStrategy[str | int] = st.one_of(
    st.sampled_from(["", "v", "value", "z" * 2047, "w" * 3000, "😀" * 600, "a\0b", "\ud800x"]),
    st.text(max_size=40),
)
_POOL = st.one_of(st.integers(0, POOLS - 1), st.integers(0, POOLS - 1), st.integers(0, 255))
_FILE_POOL = st.sampled_from([0, 1, 2, 3, 4])
_KSET = st.one_of(
    st.builds(KSet, _POOL, _KEYS, _VALUES),
    st.builds(
        KSet,
        _POOL,
        _KEYS,
        st.integers(0, 2**64 - 1),
        st.sampled_from([int(sim_kvp.RegType.U32), int(sim_kvp.RegType.U64), 3]),
    ),
)
_KGET = st.builds(KGet, _POOL, _KEYS)
_KDELETE = st.builds(KDelete, _POOL, _KEYS)
_KENUM = st.builds(
    KEnumerate,
    st.one_of(st.just(AUTO), _POOL),
    st.one_of(st.integers(0, 12), st.sampled_from([2**31 - 1, 2**31, 2**32 - 1])),
)
_KIP = st.one_of(
    st.builds(KGetIpInfo, st.sampled_from(_MACS), st.integers(0, 3)),
    st.builds(KSetIpInfo, st.sampled_from(_GUIDS), st.sampled_from(["10.0.0.1", "bogus", ""])),
)
_RAW_KEY = st.one_of(
    st.sampled_from([b"a", b"key", b"", b"\xff\xfe", b"a\nb", b"x" * 512, b"k" * 520]),
    st.binary(max_size=16),
)
_SIZE = st.one_of(
    st.sampled_from([0, 1, 2, 4, 511, 512, 513, 2047, 2048, 2049, 0xFFFFFFFF]),
    st.integers(0, 0xFFFFFFFF),
)
_RAW_KV = st.builds(
    RawKv,
    st.sampled_from([int(kvp.KvpOp.GET), int(kvp.KvpOp.SET), int(kvp.KvpOp.DELETE)]),
    _POOL,
    _RAW_KEY,
    _SIZE,
    st.one_of(st.sampled_from([b"", b"v", b"\xc3", b"q" * 2048]), st.binary(max_size=16)),
    _SIZE,
    st.integers(0, 0xFFFFFFFF),
    st.sampled_from([0, 0, 0xFF, 0x41]),
)
_RAW_OP = st.builds(
    RawOp,
    st.one_of(st.sampled_from([6, 7, 100, 101, 255]), st.integers(6, 255)),
    st.integers(0, 255),
    st.binary(max_size=8),
)
_ODD = st.builds(
    Odd,
    st.one_of(st.sampled_from([1, 4, MSG - 1, MSG + 1, 16384]), st.integers(1, 16384)).filter(
        lambda n: n != MSG
    ),
    st.integers(0, 5),
)
_REC_KEY = st.sampled_from([b"a", b"key", b"g", b"", b"\xff\xfe", b"x" * KEY])
_REC_VALUE = st.sampled_from([b"", b"v", b"guest value", b"\xc3(", b"w" * VALUE])


@st.composite
def _record(draw: st.DrawFn) -> bytes:
    """A record as another program may write it: junk after terminators, no NUL at all."""
    key = draw(_REC_KEY)
    value = draw(_REC_VALUE)
    fill = draw(st.sampled_from([0, 0, 0x5A]))
    rec = bytearray([fill]) * R
    rec[: len(key)] = key
    if len(key) < KEY:
        rec[len(key)] = 0
    rec[KEY : KEY + len(value)] = value
    if len(value) < VALUE:
        rec[KEY + len(value)] = 0
    return bytes(rec)


_APPEND = st.one_of(
    st.builds(Append, _FILE_POOL, _record()),
    st.builds(Append, _FILE_POOL, st.binary(min_size=1, max_size=64)),
)
_OVERWRITE = st.builds(
    Overwrite,
    _FILE_POOL,
    st.integers(0, 20 * R),
    st.one_of(st.binary(min_size=1, max_size=8), st.sampled_from([b"\0", b"key\0"])),
)
_TRUNCATE = st.builds(Truncate, _FILE_POOL, st.integers(1, R + 7))
_REPLACE = st.builds(
    Replace, _FILE_POOL, st.lists(_record(), max_size=3).map(lambda rs: b"".join(rs))
)
_HVCTL = st.builds(
    Hvctl, st.sampled_from([1, 4]), st.sampled_from(["a", "key", "g"]), st.sampled_from(["", "v"])
)


def steps(restarts: int = 3, hvctl: int = 2) -> st.SearchStrategy[object]:
    """Steps, per mille, the simplest first (shrinking tends towards it)."""
    return weighted(
        (200, _KSET),
        (120, _KGET),
        (80, _KDELETE),
        (170, _KENUM),
        (30, _KIP),
        (110, _RAW_KV),
        (30, _RAW_OP),
        (30, _ODD),
        (60 - hvctl, _APPEND),
        (40, _OVERWRITE),
        (30, _TRUNCATE),
        (20, _REPLACE),
        (20 - restarts, st.builds(Remove, _FILE_POOL)),
        (hvctl, _HVCTL),
        (20, st.just(Hangup())),
        (restarts, st.builds(Unplug, st.sampled_from([0.0, 0.2]))),
        (restarts, st.builds(Restart, st.sampled_from([signal.SIGTERM, signal.SIGKILL]))),
    )


# -- the daemon seen from outside ------------------------------------------------------


class KvpRig:
    """What the examples of one KVP fuzz run share: a scratch directory and the counts."""

    name = "hv_kvp_daemon"

    def __init__(self, tmp: str) -> None:
        self.tmp = tmp
        self.messages = 0
        self.examples = 0
        self.stats: Counter[str] = Counter()
        macs = set()
        with contextlib.suppress(OSError):
            for nic in os.listdir("/sys/class/net"):
                with contextlib.suppress(OSError), open(f"/sys/class/net/{nic}/address") as f:
                    macs.add(f.read().strip().upper().replace("-", ":"))
        clash = [m for m in _MACS if m.upper().replace("-", ":") in macs]
        if clash:
            raise RuntimeError(f"the fuzzer's unknown MACs exist here: {clash}")


# -- the model and the checks ----------------------------------------------------------


class KvpFuzz(RuleBasedStateMachine):
    """One example: a fresh daemon and state directory, steps, SIGTERM; checked after each."""

    def __init__(self, rig: KvpRig) -> None:
        super().__init__()
        self.rig = rig
        self.kernel: ChardevKernel | None = None
        self.daemon: DaemonProcess | None = None
        self.pools = [PoolModel() for _ in range(POOLS)]
        self.state_dir = ""
        self.device = ""
        self.opens = 0  # expected opens of this kernel's device
        self.reopens = 0  # expected "; reopening" lines of this daemon process
        self.history: list[str] = []

    # -- set-up and tear-down ------------------------------------------------------

    @initialize()
    def start(self) -> None:
        rig = self.rig
        rig.examples += 1
        base = os.path.join(rig.tmp, f"x{rig.examples}")
        os.makedirs(base)
        self.state_dir = os.path.join(base, "state")
        self.device = os.path.join(base, "hv_kvp")
        self.kernel = ChardevKernel(self.device, "hv_kvp", timeout=HV_UTIL_TIMEOUT)
        self._spawn()
        self.check()

    def _spawn(self) -> None:
        assert self.kernel is not None
        self.daemon = DaemonProcess(
            [
                *launch.daemon_argv("hv_kvp_daemon"),
                "-n",
                "--device",
                self.device,
                "--state-dir",
                self.state_dir,
                # No helper scripts: GET_IP_INFO for a known NIC would run them.
                "--scripts-dir",
                os.path.join(self.state_dir, "no-scripts"),
            ]
        )
        self.opens += 1
        self.reopens = 0
        self._expect(
            until(lambda: _count(self.kernel, "register") >= self.opens),
            "no registration at start",
        )
        self._expect(self.kernel.wait_registered(GUARD), "not registered at start")

    def teardown(self) -> None:
        try:
            if self.daemon is not None and self.daemon.proc.poll() is None:
                self._stop(signal.SIGTERM)
        finally:
            if self.daemon is not None:
                self.daemon.kill()
            if self.kernel is not None:
                self.kernel.close()

    # -- steps -------------------------------------------------------------------------

    @rule(step=steps())
    def step(self, step: object) -> None:
        self.rig.stats[type(step).__name__] += 1
        self.history.append(repr(step))
        if hasattr(step, "message"):
            self._request(step.message())
        elif isinstance(step, Append):
            self._local(step.pool, lambda fd, size: _pwrite(fd, step.data, size))
            self.pools[step.pool].content += step.data
        elif isinstance(step, Overwrite):
            self._overwrite(step)
        elif isinstance(step, Truncate):
            self._truncate(step)
        elif isinstance(step, Replace):
            self._replace(step.pool, step.data)
        elif isinstance(step, Remove):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path(step.pool))
            self.pools[step.pool].content = b""
        elif isinstance(step, Hvctl):
            self._hvctl(step)
        elif isinstance(step, Hangup):
            assert self.kernel is not None
            self.kernel.hangup()
            self._reopened("hang-up")
        elif isinstance(step, Unplug):
            self._unplug(step.seconds)
        elif isinstance(step, Restart):
            self._restart(step.signum)
        else:
            raise AssertionError(f"unknown step {step!r}")
        self.check()

    # -- host requests -------------------------------------------------------------------

    def _request(self, msg: bytes) -> None:
        assert self.kernel is not None
        self.rig.messages += 1
        reply = self.kernel.request(msg)
        self._expect(reply is not None, f"the kernel answered the host itself: {_events(self)}")
        assert reply is not None
        self._expect(len(reply) == MSG, f"reply of {len(reply)} bytes")
        want = self._expected_reply(msg, reply)
        if reply != want:
            got_status = _U32.unpack_from(reply)[0]
            want_status = _U32.unpack_from(want)[0]
            diff = [i for i in range(MSG) if reply[i] != want[i]]
            raise Violation(
                f"reply status {got_status:#x}, model {want_status:#x}; "
                f"{len(diff)} bytes differ, first at {diff[:8]}" + self._context()
            )
        self.rig.stats[f"status {_U32.unpack_from(reply)[0]:#x}"] += 1

    def _expected_reply(self, msg: bytes, reply: bytes) -> bytes:
        """The model's reply: the request as received, with the status and what the op fills in."""
        if len(msg) != MSG:
            return _status(_fit(msg), FAIL)
        op, number = msg[kvp.OFF_OP], msg[kvp.OFF_POOL]
        if op in (kvp.KvpOp.GET, kvp.KvpOp.SET, kvp.KvpOp.DELETE, kvp.KvpOp.ENUMERATE):
            if number >= POOLS:
                return _status(msg, FAIL)
            pool = self.pools[number]
        if op == kvp.KvpOp.SET:
            key_size = _U32.unpack_from(msg, kvp.OFF_KV_KEY_SIZE)[0]
            value_size = _U32.unpack_from(msg, kvp.OFF_KV_VALUE_SIZE)[0]
            if not 0 < key_size <= KEY or value_size > VALUE:
                return _status(msg, CONT)
            key = cstr(msg[kvp.OFF_KV_KEY : kvp.OFF_KV_KEY + key_size])
            value = cstr(msg[kvp.OFF_KV_VALUE : kvp.OFF_KV_VALUE + value_size])
            pool.set(key, value)
            return _status(msg, OK)
        if op == kvp.KvpOp.GET:
            key_size = _U32.unpack_from(msg, kvp.OFF_KV_KEY_SIZE)[0]
            value_size = _U32.unpack_from(msg, kvp.OFF_KV_VALUE_SIZE)[0]
            if not 0 < key_size <= KEY or value_size > VALUE:
                return _status(msg, CONT)
            i = pool.find(cstr(msg[kvp.OFF_KV_KEY : kvp.OFF_KV_KEY + key_size]))
            if i is None:
                return _status(msg, CONT)
            # docs/protocol.md, "The answer to a GET": at 532, where the kernel reads.
            value = cstr(pool.records[i][KEY:])[: VALUE - 1]
            out = bytearray(_status(msg, OK))
            out[kvp.OFF_KV_VALUE : kvp.OFF_ENUM_VALUE + VALUE] = bytes(
                kvp.OFF_ENUM_VALUE - kvp.OFF_KV_VALUE
            ) + value.ljust(VALUE, b"\0")
            return bytes(out)
        if op == kvp.KvpOp.DELETE:
            key_size = _U32.unpack_from(msg, kvp.OFF_DEL_KEY_SIZE)[0]
            if not 0 < key_size <= KEY:
                return _status(msg, CONT)
            found = pool.delete(cstr(msg[kvp.OFF_DEL_KEY : kvp.OFF_DEL_KEY + key_size]))
            return _status(msg, OK if found else CONT)
        if op == kvp.KvpOp.ENUMERATE:
            index = _U32.unpack_from(msg, kvp.OFF_ENUM_INDEX)[0]
            if number == AUTO:
                return self._auto(msg, index, reply)
            recs = pool.records
            if index >= len(recs):
                return _status(msg, CONT)
            out = bytearray(_status(msg, OK))
            out[kvp.OFF_ENUM_KEY : kvp.OFF_ENUM_KEY + R] = recs[index]
            return bytes(out)
        if op == kvp.KvpOp.GET_IP_INFO:
            return _status(msg, FAIL)  # no interface has the MAC
        if op == kvp.KvpOp.SET_IP_INFO:
            return _status(msg, GUID_NOTFOUND)
        return _status(msg, FAIL)  # unknown operation

    def _auto(self, msg: bytes, index: int, reply: bytes) -> bytes:
        """The auto pool: its keys in order, the values the model knows; HV_S_CONT past the end.

        The daemon strcpy()s key and value over the request (the rest stays);
        a value the model cannot know (FQDN, OS name) is taken from the
        reply and only checked for form.
        """
        if index >= len(AUTO_KEYS):
            return _status(msg, CONT)
        key = AUTO_KEYS[index]
        value = cstr(reply[kvp.OFF_ENUM_VALUE : kvp.OFF_ENUM_VALUE + VALUE])
        known = AUTO_KNOWN.get(key)
        if known is not None:
            self._expect(value == known.encode(), f"auto item {key}: {value!r}, not {known!r}")
        if key.startswith("NetworkAddress"):
            version = 4 if key.endswith("IPv4") else 6
            for item in value.decode().split(";") if value else []:
                self._expect(ipaddress.ip_address(item).version == version, f"{key}: {value!r}")
        out = bytearray(_status(msg, OK))
        k = key.encode() + b"\0"
        out[kvp.OFF_ENUM_KEY : kvp.OFF_ENUM_KEY + len(k)] = k
        v = value + b"\0"
        out[kvp.OFF_ENUM_VALUE : kvp.OFF_ENUM_VALUE + len(v)] = v
        self.rig.stats["auto items"] += 1
        return bytes(out)

    # -- guest-side writes ---------------------------------------------------------------

    def _path(self, pool: int) -> str:
        return os.path.join(self.state_dir, f".kvp_pool_{pool}")

    def _local(self, pool: int, change: object) -> None:
        """change(fd, size) on the pool file, under the POSIX whole-file lock (like the C writer)."""
        assert callable(change)
        fd = os.open(self._path(pool), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX)
            change(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)  # drops the lock

    def _overwrite(self, step: Overwrite) -> None:
        model = self.pools[step.pool]
        size = len(model.content)
        if not size:
            return
        at = step.at % size
        data = step.data[: size - at]
        self._local(step.pool, lambda fd, _size: _pwrite(fd, data, at))
        model.content = model.content[:at] + data + model.content[at + len(data) :]

    def _truncate(self, step: Truncate) -> None:
        model = self.pools[step.pool]
        new = max(0, len(model.content) - step.cut)
        self._local(step.pool, lambda fd, _size: os.ftruncate(fd, new))
        model.content = model.content[:new]

    def _replace(self, pool: int, data: bytes) -> None:
        tmp = self._path(pool) + ".new"
        with open(tmp, "wb") as f:
            f.write(data)
        os.rename(tmp, self._path(pool))
        self.pools[pool].content = data

    def _hvctl(self, step: Hvctl) -> None:
        argv = [
            *launch.python_argv("hvdaemons.ctl.main"),
            "kvp",
            "set",
            "--pool",
            str(step.pool),
            "--state-dir",
            self.state_dir,
            step.key,
            step.value,
        ]
        res = launch.run(argv, capture_output=True, text=True, timeout=GUARD)
        self._expect(res.returncode == 0, f"hvctl kvp set: exit {res.returncode}: {res.stderr}")
        self.pools[step.pool].set(step.key.encode(), step.value.encode())

    # -- the device and the process --------------------------------------------------------

    def _reopened(self, why: str) -> None:
        assert self.kernel is not None
        self.reopens += 1
        self.opens += 1
        self.rig.stats["reopens"] += 1
        kernel = self.kernel
        self._expect(
            until(lambda: _count(kernel, "register") >= self.opens), f"no registration after {why}"
        )
        self._expect(kernel.wait_registered(GUARD), f"not registered after {why}")

    def _unplug(self, seconds: float) -> None:
        assert self.kernel is not None and self.daemon is not None
        daemon = self.daemon
        self.kernel.unplug()
        try:
            gone = until(lambda: not any(t.startswith("socket:") for t in daemon.fds().values()))
            self._expect(gone, "the daemon kept the unplugged device open")
            if seconds:
                daemon.log.wait_count("No such file or directory; retrying", 1, seconds)
        finally:
            self.kernel.plug()
        self._reopened("unplug")

    def _restart(self, signum: int) -> None:
        assert self.daemon is not None
        if signum == signal.SIGKILL:
            self.daemon.proc.kill()
            self.daemon.wait()
            self._check_log()
            self.daemon.kill()
            self.rig.stats["kills"] += 1
        else:
            self._stop(signum)
        self._spawn()

    def _stop(self, signum: int) -> None:
        assert self.daemon is not None
        self.daemon.proc.send_signal(signum)
        rc = self.daemon.wait()
        self._expect(rc == 0, f"{signal.Signals(signum).name}: exit status {rc}")
        self._check_log()
        self.daemon.kill()
        self.rig.stats["stops"] += 1

    # -- checks ----------------------------------------------------------------------------

    def _expect(self, ok: bool, what: str) -> None:
        if not ok:
            raise Violation(what + self._context())

    def _context(self) -> str:
        lines = self.daemon.log.lines[-20:] if self.daemon is not None else []
        return (
            "\n  steps (last):\n    "
            + "\n    ".join(self.history[-15:])
            + "\n  daemon log (last lines):\n    "
            + "\n    ".join(repr(x) for x in lines)
            + "\n  kernel events (last):\n    "
            + "\n    ".join(_events(self)[-10:])
        )

    def check(self) -> None:
        assert self.daemon is not None and self.kernel is not None
        self._expect(
            self.daemon.proc.poll() is None, f"the daemon exited: {self.daemon.proc.returncode}"
        )
        for n in range(POOLS):
            self._check_pool(n)
        bad = [e for e in self.kernel.events if e.what in _BAD_EVENTS]
        self._expect(not bad, f"kernel saw {[(e.what, e.detail) for e in bad]}")
        opens = _count(self.kernel, "open")
        self._expect(
            opens == self.opens, f"the device was opened {opens} times, model {self.opens}"
        )
        self._check_log()

    def _check_pool(self, n: int) -> None:
        model = self.pools[n]
        try:
            with open(self._path(n), "rb") as f:
                disk = f.read()
        except FileNotFoundError:
            disk = b""  # removed, not yet created again: an empty pool
        if disk != model.content:
            got, want = records(disk), model.records
            raise Violation(
                f"pool {n}: {len(disk)} bytes on disk ({len(got)} records), model "
                f"{len(model.content)} ({len(want)}); first differing record "
                f"{next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), None)}"
                + self._context()
            )
        journal = os.path.join(self.state_dir, f".kvp_journal_{n}")
        self._expect(not os.path.exists(journal), f"pool {n}: journal left behind")
        try:
            with open(os.path.join(self.state_dir, f".kvp_salvage_{n}"), "rb") as f:
                salvaged = f.read()
        except FileNotFoundError:
            salvaged = b""
        self._expect(
            salvaged == model.salvaged,
            f"pool {n}: {len(salvaged)} bytes salvaged, model {len(model.salvaged)}",
        )

    def _check_log(self) -> None:
        assert self.daemon is not None
        log = self.daemon.log
        log.poll()
        for line in log.lines:
            m = _PREFIX.match(line)
            if m is None or not any(p.fullmatch(m.group(2)) for p in _ALLOWED):
                raise Violation(f"unexpected log line: {line!r}" + self._context())
        seen = _reopens(log)
        self._expect(seen <= self.reopens, f"{seen} reopens logged, model {self.reopens}")
        if seen < self.reopens:
            self._expect(
                until(lambda: log.poll() or _reopens(log) >= self.reopens, 5.0),
                f"{self.reopens} reopens, {_reopens(log)} logged",
            )


class EventfulKvpFuzz(KvpFuzz):
    """KvpFuzz with restarts, device loss and hvctl ten times as often: short runs see each."""

    @rule(step=steps(restarts=15, hvctl=10))
    def step(self, step: object) -> None:
        super().step(step)


def _reopens(log: LogTail) -> int:
    """The device reopens logged ("<device>: <why>; reopening").

    Not LogTail.count(): the KVP log carries host-chosen keys and values, which
    may hold "; reopening" anywhere; only a line ending in it is a reopen."""
    return sum(line.endswith(REOPENING) for line in log.lines)


def _status(msg: bytes, status: int) -> bytes:
    return _U32.pack(status) + msg[4:]


def _fit(msg: bytes) -> bytes:
    """A message of the wrong size as the daemon answers it: cut or zero-padded to 7432."""
    return msg[:MSG].ljust(MSG, b"\0")


def _pwrite(fd: int, data: bytes, at: int) -> None:
    done = 0
    while done < len(data):
        done += os.pwrite(fd, data[done:], at + done)


def _count(kernel: ChardevKernel | None, what: str) -> int:
    assert kernel is not None
    return sum(e.what == what for e in kernel.events)


def _events(m: KvpFuzz) -> list[str]:
    return [f"{e.what} {e.detail}" for e in (m.kernel.events if m.kernel else [])]


@contextlib.contextmanager
def rig() -> Iterator[KvpRig]:
    with tempfile.TemporaryDirectory(prefix="kvp-fuzz-") as tmp:
        yield KvpRig(tmp)
