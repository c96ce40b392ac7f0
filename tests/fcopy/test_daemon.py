# SPDX-License-Identifier: GPL-2.0-only
"""hv_fcopy_daemon's command line and its choice of transport (hvdaemons.fcopy.daemon)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from hvdaemons import log
from hvdaemons.fcopy import chardev
from hvdaemons.fcopy import daemon as D
from hvdaemons.fcopy.discovery import SysfsDiscovery
from hvdaemons.service import Stopper
from tests.reference.refdaemons import LogReader
from tests.support.fcopy import NEUTRAL_CWD, daemon_env, vmbus_device


def test_choose_legacy_when_the_char_device_exists(tmp_path: Path) -> None:
    legacy = tmp_path / "hv_fcopy"
    legacy.write_bytes(b"")
    vmbus_device(tmp_path / "sys", "eb765408-105f-49b6-b4aa-c123b64d17d4")
    assert (
        D.choose_transport(str(legacy), SysfsDiscovery(str(tmp_path / "sys")), Stopper())
        == "legacy"
    )


def test_choose_legacy_when_hv_utils_owns_the_channel(tmp_path: Path) -> None:
    vmbus_device(tmp_path / "sys", "eb765408-105f-49b6-b4aa-c123b64d17d4", driver="hv_utils")
    disc = SysfsDiscovery(str(tmp_path / "sys"))
    assert D.choose_transport(str(tmp_path / "none"), disc, Stopper()) == "legacy"


@pytest.mark.parametrize("driver", [None, "uio_hv_generic"])
def test_choose_uio_for_a_file_copy_vmbus_device(tmp_path: Path, driver: str | None) -> None:
    # Any instance GUID: the class decides.
    vmbus_device(tmp_path / "sys", "00000000-1111-2222-3333-444444444444", driver=driver)
    disc = SysfsDiscovery(str(tmp_path / "sys"))
    assert D.choose_transport(str(tmp_path / "none"), disc, Stopper()) == "uio"


def test_wait_for_either_transport_logs_once(
    tmp_path: Path, logs: log.Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(D, "RESCAN_INTERVAL", 0.05)
    disc = SysfsDiscovery(str(tmp_path / "sys"))
    legacy = tmp_path / "hv_fcopy"
    timer = threading.Timer(0.5, legacy.write_bytes, (b"",))
    timer.start()
    assert D.choose_transport(str(legacy), disc, Stopper()) == "legacy"
    timer.join()
    waits = [r for r in logs.records if "waiting for" in r.message]
    assert len(waits) == 1
    # Stopped while waiting: no transport, no error.
    stopper = Stopper()
    threading.Timer(0.2, stopper.request).start()
    assert D.choose_transport(str(tmp_path / "none"), disc, stopper) is None


def run_daemon(argv0: str, args: list[str]) -> subprocess.Popen[bytes]:
    code = (
        "import sys; sys.argv[0] = sys.argv[1]; del sys.argv[1]\n"
        "from hvdaemons.fcopy.daemon import main; sys.exit(main())"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, argv0, *args],
        cwd=NEUTRAL_CWD,
        env=daemon_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.mark.parametrize(
    ("argv0", "ident"), [("hv_fcopy_daemon", "HV_FCOPY"), ("hv_fcopy_uio_daemon", "HV_UIO_FCOPY")]
)
def test_waits_quietly_without_any_transport(tmp_path: Path, argv0: str, ident: str) -> None:
    (tmp_path / "sys").mkdir()
    p = run_daemon(
        argv0, ["-n", "--sysfs-root", str(tmp_path / "sys"), "--dev-root", str(tmp_path)]
    )
    logs = LogReader(p)
    try:
        logs.wait_for(f"<6>{ident}: starting; pid is:{p.pid}")
        logs.wait_for(f"<6>{ident}: waiting for {chardev.DEVICE} or a file-copy VMBus device")
        assert p.poll() is None
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0
        assert p.stdout is not None and p.stderr is not None
        p.stdout.close()
        p.stderr.close()
    assert len(logs.lines) == 2, logs.lines


def test_help_and_bad_options() -> None:
    p = run_daemon("hv_fcopy_daemon", ["-h"])
    out, _ = p.communicate(timeout=20)
    assert p.returncode == 0
    assert b"usage: hv_fcopy_daemon" in out and b"--no-daemon" in out and b"--device" in out
    p = run_daemon("hv_fcopy_uio_daemon", ["--bogus"])
    _, err = p.communicate(timeout=20)
    assert p.returncode == 1 and b"usage: hv_fcopy_uio_daemon" in err
