# SPDX-License-Identifier: GPL-2.0-only
"""The unmodified hv_vss_daemon against the simulated host, freezing real filesystems.

Every test runs in an FsBox: a private mount namespace whose mount table
holds only loop-mounted ext4/xfs images (one stacked on a loop file on
another), verified before any FREEZE.  Frozen state is probed with a second
FIFREEZE (EBUSY), and the sandbox's cleanup fails the test if it had to thaw.
"""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from hvdaemons.protocol import vss
from hvdaemons.protocol.status import HvStatus
from hvsim import launch
from hvsim.protocol import vss as sim_vss
from hvsim.protocol.vss import encode_host_message
from tests.support.vss_sandbox import STACKED, Daemon, need_root, sandbox, wait_until

IMAGES = ["/mnt/a", "/mnt/b", "/mnt/outer", "/mnt/inner"]
OK = bytes(12)


def test_list_prints_the_freeze_order_top_down_and_why_others_are_skipped() -> None:
    with sandbox(STACKED) as box:
        res = box.run([*launch.daemon_argv("hv_vss_daemon"), "--list"])
        assert res.returncode == 0, res.stderr
        lines = res.stdout.splitlines()
        order = [
            ln.split()[1] for ln in lines if ln.startswith("  ") and ln.split()[0].endswith(".")
        ]
        assert order == ["/mnt/a", "/mnt/b", "/mnt/inner", "/mnt/outer"]
        text = res.stdout
        assert "3. /mnt/inner (ext4 on /dev/loop" in text and "before /mnt/outer" in text
        assert "/mnt/abind (ext4 on /dev/loop" in text and "same filesystem as /mnt/a" in text
        assert "/ (overlay on hvfsbox-root): not a /dev/ block device" in text
        # A dry run freezes nothing.
        assert box.frozen() == []


def test_backup_freezes_every_filesystem_and_logs_only_after_thaw() -> None:
    with sandbox(STACKED) as box, Daemon(box) as d:
        r = d.host.hot_backup()
        assert r.status == HvStatus.S_OK and r.reply == OK
        box.verify()
        r = d.host.freeze()
        assert r.status == HvStatus.S_OK and r.reply == OK
        assert sorted(box.frozen()) == sorted(IMAGES)
        # Frozen: the daemon writes no log line (it would go to a journal on disk).
        # Unheld, the line would be in the pipe already: it is written before the reply.
        assert d.logs is not None
        assert not [ln for ln in d.logs.read_available() if "op=FREEZE" in ln]
        r = d.host.thaw()
        assert r.status == HvStatus.S_OK and r.reply == OK
        assert box.frozen() == []
        assert d.logs is not None
        d.logs.wait_for("VSS: op=CHECK HOT BACKUP")
        d.logs.wait_for("VSS: op=FREEZE: succeeded")
        d.logs.wait_for("VSS: op=THAW: succeeded")
        assert d.stop() == 0


def test_registration_and_log_texts_match_upstream() -> None:
    with sandbox(STACKED[:1]) as box, Daemon(box) as d:
        assert d.kernel.events[0].what == "open"
        reg = [e for e in d.kernel.events if e.what == "register"]
        assert reg and reg[0].detail == "81"  # VSS_OP_REGISTER1
        assert d.logs is not None
        assert d.logs.wait_for("VSS starting; pid is:").startswith("<6>Hyper-V VSS: ")
        d.logs.wait_for("VSS: kernel module version: 129")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_while_frozen_thaws_everything(sig: int) -> None:
    with sandbox(STACKED) as box, Daemon(box) as d:
        assert d.host.freeze().ok
        assert len(box.frozen()) == 4
        assert d.stop(sig) == 0
        assert box.frozen() == []
        assert d.logs is not None
        d.logs.wait_for("while frozen: thawed 4 filesystem(s)")
        # A clean stop removes the state file: nothing to recover.
        assert box.run(["test", "-e", "/run/hv_vss_daemon.frozen"]).returncode == 1


def test_freeze_twice_then_thaw() -> None:
    with sandbox(STACKED) as box, Daemon(box) as d:
        assert d.host.freeze().ok
        assert d.host.freeze().ok  # every FIFREEZE is EBUSY now: still success
        assert len(box.frozen()) == 4
        assert d.host.thaw().ok
        assert box.frozen() == []


def test_thaw_without_freeze_is_harmless() -> None:
    with sandbox(STACKED) as box, Daemon(box) as d:
        r = d.host.thaw()
        assert r.ok and r.reply == OK
        assert box.frozen() == []


def test_hibernation_fake_thaw_thaws_and_the_daemon_registers_again() -> None:
    with sandbox(STACKED) as box, Daemon(box) as d:
        assert d.host.freeze().ok
        d.host.hibernate()  # fake THAW; the kernel refuses the reply (READY)
        assert wait_until(lambda: box.frozen() == [], 10)
        assert d.kernel.wait_registered(10)
        assert [r.ok for r in d.host.backup(hold_ms=10)] == [True, True, True]
        assert box.frozen() == []


def test_ops_the_kernel_answers_never_reach_the_daemon() -> None:
    """hv_snapshot.c forwards HOT_BACKUP, FREEZE and THAW only, zeroed but for the op."""
    with sandbox(STACKED[:1]) as box, Daemon(box) as d:
        for op in (vss.VssOp.CREATE, vss.VssOp.GET_DM_INFO, vss.VssOp.AUTO_RECOVER, 200):
            r = d.host.request(op, flags=0xFFFFFFFF)
            assert (r.by, r.host_status, r.status) == ("kernel", HvStatus.S_OK, None)
        # A packet too short to hold a message is dropped: no reply at all.
        r = d.host.send(encode_host_message(vss.VssOp.FREEZE)[:11])
        assert (r.by, r.host_status) == ("nobody", None)
        assert box.frozen() == []
        # Flags, reserved bytes and LUN information stay with the kernel.
        body = encode_host_message(
            vss.VssOp.HOT_BACKUP, flags=5, reserved=b"\xff" * 7, lun_info=6000
        )
        r = d.host.send(body)
        assert r.by == "daemon" and r.reply == OK
        sent = [e.what for e in d.kernel.events]
        assert d.stop() == 0
        assert d.log_lines().count("<6>Hyper-V VSS: VSS: op=CHECK HOT BACKUP") == 1
        assert not [ln for ln in d.log_lines() if "Illegal op" in ln]
        assert sent.count("open") == 1


def test_an_unknown_op_on_the_device_gets_e_fail() -> None:
    """Defence in depth: the kernel never forwards one, but a daemon does not claim success."""
    with sandbox(STACKED[:1]) as box, Daemon(box) as d:
        reply = d.kernel.request(sim_vss.encode_request(vss.VssOp.GET_DM_INFO))
        assert reply is not None and sim_vss.decode_status_reply(reply) == HvStatus.E_FAIL
        assert d.logs is not None
        d.logs.wait_for("Illegal op:3")


def test_hvsim_cli_drives_a_backup() -> None:
    with sandbox(STACKED) as box:
        sim = os.path.join(box.sim_dir, "cli")
        serve = subprocess.Popen(
            [*launch.python_argv("hvsim.cli"), "serve", "--dir", sim, "--service", "vss"],
            cwd=launch.NEUTRAL_CWD,
            env=launch.child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert serve.stdout is not None
            assert "serving hv_vss" in serve.stdout.readline().decode()
            daemon = box.popen(
                [
                    *launch.daemon_argv("hv_vss_daemon"),
                    "-n",
                    "--device",
                    os.path.join(sim, "hv_vss"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

            def hvsim(*args: str) -> subprocess.CompletedProcess[str]:
                return subprocess.run(
                    [*launch.python_argv("hvsim.cli"), "vss", "--dir", sim, *args],
                    cwd=launch.NEUTRAL_CWD,
                    env=launch.child_env(),
                    capture_output=True,
                    text=True,
                    timeout=60,
                )

            # The daemon needs a moment to connect; the kernel fails requests meanwhile.
            assert wait_until(lambda: hvsim("hot-backup").returncode == 0, 20, 0.2)
            res = hvsim("backup", "--hold-ms", "50")
            assert res.returncode == 0, res.stdout + res.stderr
            lines = res.stdout.splitlines()
            assert [ln.split(":")[0] for ln in lines] == ["HOT_BACKUP", "FREEZE", "THAW"]
            assert all("S_OK (0x00000000) from the daemon" in ln for ln in lines)
            res = hvsim("freeze")
            assert res.returncode == 0 and len(box.frozen()) == 4
            res = hvsim("thaw")
            assert res.returncode == 0 and box.frozen() == []
            daemon.terminate()
            assert daemon.wait(10) == 0
        finally:
            serve.terminate()
            serve.wait(10)


def test_hvsim_demo_vss_runs_safely() -> None:
    need_root()
    res = subprocess.run(
        [*launch.python_argv("hvsim.cli"), "demo", "vss"],
        cwd=launch.NEUTRAL_CWD,
        env=launch.child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout
    out = res.stdout
    assert "mount table verified" in out
    assert (
        "frozen now (probed with a second FIFREEZE): /mnt/data, /mnt/logs, /mnt/images, /mnt/vm"
        in out
    )
    assert "THAW: S_OK (0x00000000) from the daemon" in out
    assert "left frozen" not in out
