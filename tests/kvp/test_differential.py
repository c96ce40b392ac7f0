# SPDX-License-Identifier: GPL-2.0-only
"""Our hv_kvp_daemon against Debian's reference C daemons (bookworm 6.1, trixie 6.12).

Each daemon runs the same way: unmodified defaults (/dev/vmbus/hv_kvp,
/var/lib/hyperv), the hvshim.so LD_PRELOAD shim turning the device into a
socket of a simulated kernel, in a private mount namespace whose
/var/lib/hyperv is a bind mount of a per-daemon directory seeded with the
same pool files.  The same scenario of kernel-format requests (and of
changes other programs make to the pools between requests) is played to
each, and every reply and the final pool files are compared.

Where we deliberately differ, the difference is asserted, not skipped:

* GET: the reference copies value_size (0 from the kernel) bytes to offset
  528, so the host gets an empty value; we put the value at 532 where the
  kernel reads it (docs/protocol.md).
* Records we write are zero-filled after each terminator; the reference
  leaves the old value's bytes behind a shorter new value (kvp_key_add_or_modify()), so
  those pool file bytes (and the ENUMERATE arrays carrying them) differ
  after the NUL, while every string the host sees is the same.
* An unknown operation: the reference answers HV_S_OK, we HV_E_FAIL.
* key_size 0: the reference's memcmp of 0 bytes matches the first record
  (GET answers HV_S_OK); we answer HV_S_CONT.
* Requests that make the reference read out of bounds (pool > 4, an
  ENUMERATE index >= 2^31, DELETE with key_size > 512) are sent to ours
  only: HV_E_FAIL / HV_S_CONT.
"""

from __future__ import annotations

import fcntl
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from hvdaemons.protocol import kvp
from hvdaemons.protocol.status import HvStatus
from hvsim import launch
from hvsim.chardev import ChardevKernel
from hvsim.protocol import kvp as sim_kvp
from tests.reference import refdaemons
from tests.reference.refdaemons import LogReader
from tests.support.kvp import (
    NEUTRAL_CWD,
    R,
    daemon_argv,
    daemon_env,
    golden_parse,
    golden_record,
    reference_record,
    write_pool,
)

S_OK, S_CONT, E_FAIL = HvStatus.S_OK, HvStatus.S_CONT, HvStatus.E_FAIL
u32 = struct.Struct("<I").pack

SEED = {
    0: [
        reference_record(b"seed-a", b"1", junk=b"stale bytes "),
        reference_record(b"seed-b", b"two", junk=b"\x01\x02\x03"),
        reference_record(b"seed-c", b"three"),
    ],
    3: [
        reference_record(b"HostName", b"hyperv-host.example"),
        reference_record(b"VirtualMachineName", b"vm01"),
    ],
}


def _with(msg: bytes, off: int, data: bytes) -> bytes:
    b = bytearray(msg)
    b[off : off + len(data)] = data
    return bytes(b)


def _append_cloud_init(state: Path) -> None:
    with open(state / ".kvp_pool_1", "ab") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(golden_record(b"cloud-init", b"provisioning report"))


def _rewrite_hostname(state: Path) -> None:
    with open(state / ".kvp_pool_3", "r+b") as f:
        fcntl.lockf(f, fcntl.LOCK_EX)
        f.write(golden_record(b"HostName", b"other-host.example"))


@dataclass
class Step:
    label: str
    msg: bytes = b""
    # "same": identical reply bytes; "host": the same HostReply (strings the
    # kernel forwards); "ours-only": not sent to the reference (it would read
    # out of bounds); anything else is a deliberate difference checked below.
    compare: str = "same"
    before: Callable[[Path], None] | None = None


def scenario() -> list[Step]:
    steps = [Step(f"auto {i}", sim_kvp.encode_enumerate_request(2, i)) for i in range(11)]
    steps += [Step(f"enum seed 0/{i}", sim_kvp.encode_enumerate_request(0, i)) for i in range(4)]
    steps += [
        Step("enum seed 3/0", sim_kvp.encode_enumerate_request(3, 0)),
        Step("set new", sim_kvp.encode_set_request(0, "new-key", "new value ✓")),
        Step("set shorter over stale", sim_kvp.encode_set_request(0, "seed-a", "x")),
        Step("set longer", sim_kvp.encode_set_request(0, "seed-c", "a much longer value than before")),
        Step("set u32", sim_kvp.encode_set_request(1, "u32", 4_000_000_000, sim_kvp.RegType.U32)),
        Step("set u64", sim_kvp.encode_set_request(1, "u64", 2**63, sim_kvp.RegType.U64)),
        Step("set other type", sim_kvp.encode_set_request(1, "binary", "dropped", 3)),
        Step("set pool 2 file", sim_kvp.encode_set_request(2, "stored", "in the file")),
        Step("set pool 3", sim_kvp.encode_set_request(3, "VirtualMachineName", "vm02")),
        Step("set pool 4", sim_kvp.encode_set_request(4, "internal", "yes")),
        Step("set long key", sim_kvp.encode_set_request(4, "k" * 600, "v" * 3000)),
        Step("set key_size 600", _with(sim_kvp.encode_set_request(0, "k", "v"), 8, u32(600))),
        Step("set value_size 3000", _with(sim_kvp.encode_set_request(0, "k", "v"), 12, u32(3000))),
        Step("get found", sim_kvp.encode_get_request(0, "new-key"), "get"),
        Step("get pool 2 file", sim_kvp.encode_get_request(2, "stored"), "get"),
        Step("get missing", sim_kvp.encode_get_request(0, "missing")),
        Step("get key_size 513", _with(sim_kvp.encode_get_request(0, "k"), 8, u32(513))),
        Step("get key_size 0", _with(sim_kvp.encode_get_request(0, "k"), 8, u32(0)), "key_size 0"),
        Step("delete middle", sim_kvp.encode_delete_request(0, "seed-b")),
        Step("delete missing", sim_kvp.encode_delete_request(0, "seed-b")),
        Step("delete last", sim_kvp.encode_delete_request(4, "internal")),
        Step("enum after delete", sim_kvp.encode_enumerate_request(0, 1), "host"),
        Step("enum updated", sim_kvp.encode_enumerate_request(0, 0), "stale"),
        Step("enum past end", sim_kvp.encode_enumerate_request(0, 1000)),
        Step("unknown op", _with(sim_kvp.encode_enumerate_request(0, 0), 0, b"\x2a"), "unknown"),
        Step("cloud-init append", sim_kvp.encode_enumerate_request(1, 3), before=_append_cloud_init),
        Step("same-size rewrite", sim_kvp.encode_enumerate_request(3, 0), before=_rewrite_hostname),
        Step("pool 5", sim_kvp.encode_enumerate_request(5, 0), "ours-only"),
        Step("pool 255 set", sim_kvp.encode_set_request(255, "k", "v"), "ours-only"),
        Step("index 2^31", sim_kvp.encode_enumerate_request(0, 0x80000000), "ours-only"),
        Step(
            "delete key_size 100000",
            _with(sim_kvp.encode_delete_request(0, "k"), 4, u32(100000)),
            "ours-only",
        ),
    ]
    steps += [
        Step(f"final pool {p}/{i}", sim_kvp.encode_enumerate_request(p, i), "host")
        for p in (0, 1, 3, 4)
        for i in range(5)
    ]
    return steps


@dataclass
class Run:
    replies: dict[str, bytes | None] = field(default_factory=dict)
    pools: dict[int, bytes] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)


def play(tmp: Path, who: str, release: str) -> Run:
    sim = tmp / f"sim-{who}"
    state = tmp / f"state-{who}"
    sim.mkdir()
    state.mkdir()
    for n in range(5):
        write_pool(state / f".kvp_pool_{n}", SEED.get(n, []))
    kernel = ChardevKernel(str(sim / "hv_kvp"), "hv_kvp", timeout=10)
    binds = {str(state): "/var/lib/hyperv"}
    if who == "ref":
        proc = refdaemons.spawn_reference(
            release, "hv_kvp_daemon", sim, ("-n",), tmpfs=(), binds=binds
        )
    else:
        env = daemon_env()
        env["LD_PRELOAD"] = str(refdaemons.build_shim())
        env["HVSHIM_DIR"] = str(sim)
        argv = refdaemons.sandbox_argv([*daemon_argv(), "-n"], tmpfs=(), binds=binds)
        proc = subprocess.Popen(
            argv,
            cwd=NEUTRAL_CWD,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    log = LogReader(proc)
    run = Run()
    try:
        assert kernel.wait_registered(30), f"{who} did not register:\n" + "\n".join(log.drain(1))
        log.wait_for("KVP LIC Version")
        for step in scenario():
            if step.compare == "ours-only" and who == "ref":
                continue
            if step.before is not None:
                step.before(state)
            run.replies[step.label] = kernel.request(step.msg)
        assert proc.poll() is None, f"{who} died"
    finally:
        launch.stop(proc)
        kernel.close()
        run.log = log.drain(2)
    for n in range(5):
        run.pools[n] = (state / f".kvp_pool_{n}").read_bytes()
    return run


@pytest.fixture(scope="module")
def reference_available() -> None:
    # The oracle missing is a failure, never a skip (as in tests/fcopy/test_reference.py).
    try:
        refdaemons.ensure_reference()
        refdaemons.build_shim()
    except (RuntimeError, OSError) as e:
        pytest.fail(f"reference daemons unavailable: {e}")


def _host(op_msg: bytes, reply: bytes | None) -> sim_kvp.HostReply:
    assert reply is not None
    return sim_kvp.decode_reply(op_msg[0], reply)


@pytest.mark.parametrize("release", refdaemons.RELEASES)
def test_same_answers_as_the_reference(
    tmp_path: Path, release: str, reference_available: None
) -> None:
    ref = play(tmp_path, "ref", release)
    ours = play(tmp_path, "ours", release)

    for step in scenario():
        r, o = ref.replies.get(step.label), ours.replies.get(step.label)
        where = f"{release}: {step.label}"
        if step.compare == "ours-only":
            assert r is None and o is not None, where
            want = S_CONT if step.label.startswith(("index", "delete")) else E_FAIL
            assert sim_kvp.decode_status_reply(o) == want, where
            continue
        assert r is not None and o is not None, where
        if step.compare == "same":
            assert o == r, where
        elif step.compare == "host":
            assert _host(step.msg, o) == _host(step.msg, r), where
        elif step.compare == "get":
            # Deliberate: the reference's GET reaches the host empty.
            assert r == kvp.encode_status_reply(step.msg, S_OK), where
            assert _host(step.msg, r) == sim_kvp.HostReply(S_OK, value=""), where
            assert sim_kvp.decode_status_reply(o) == S_OK and _host(step.msg, o).value, where
            assert o[:528] == r[:528] and o[528:532] == bytes(4), where
        elif step.compare == "stale":
            # Same strings; the reference's record keeps the old value's tail.
            assert (
                _host(step.msg, o)
                == _host(step.msg, r)
                == sim_kvp.HostReply(S_OK, key="seed-a", value="x")
            )
            assert o[532:534] == r[532:534] == b"x\0"
            assert o[534 : 532 + 2048] == bytes(2046) and r[534 : 532 + 2048] != bytes(2046), where
        elif step.compare == "unknown":
            assert r == kvp.encode_status_reply(step.msg, S_OK), where
            assert o == kvp.encode_status_reply(step.msg, E_FAIL), where
        elif step.compare == "key_size 0":
            assert sim_kvp.decode_status_reply(r) == S_OK and sim_kvp.decode_status_reply(o) == S_CONT, where
        else:
            raise AssertionError(step.compare)

    assert (
        _host(sim_kvp.encode_enumerate_request(1, 3), ours.replies["cloud-init append"]).key == "cloud-init"
    )
    assert (
        _host(sim_kvp.encode_enumerate_request(3, 0), ours.replies["same-size rewrite"]).value
        == "other-host.example"
    )

    for n in range(5):
        assert golden_parse(ours.pools[n]) == golden_parse(ref.pools[n]), f"{release}: pool {n}"
        assert len(ours.pools[n]) == len(ref.pools[n])
    # Every record we wrote is zero-filled; the reference's may carry old
    # values or uninitialised heap bytes after the terminators (tools/hv/hv_kvp_daemon.c).
    # Seeded records nobody rewrote keep their exact bytes in both.
    for n in range(5):
        untouched = [rec for rec in SEED.get(n, []) if rec in ref.pools[n]]
        for i in range(0, len(ours.pools[n]), R):
            rec = ours.pools[n][i : i + R]
            assert rec == golden_record(*golden_parse(rec)[0]) or rec in untouched, (
                f"{release}: pool {n}/{i // R}"
            )
    assert golden_record(b"seed-c", b"a much longer value than before") in ours.pools[0]
    assert ours.pools[0][:R] == golden_record(b"seed-a", b"x") != ref.pools[0][:R]
    assert ours.pools[3][R : 2 * R] == golden_record(b"VirtualMachineName", b"vm02")

    for needle in ("KVP starting; pid is:", "KVP LIC Version: 3.1"):
        assert any(needle in line for line in ref.log), ref.log
        assert any(needle in line for line in ours.log), ours.log
