# SPDX-License-Identifier: GPL-2.0-only
"""hvdaemons.kvp.helper: the runner of the KVP helper scripts, on real processes."""

from __future__ import annotations

import os
import pathlib
import signal
import threading

from hvdaemons.kvp import helper
from hvdaemons.kvp.paths import KvpPaths
from tests.support.process import gone, write_script


def test_output_is_bounded(tmp_path: pathlib.Path) -> None:
    script = tmp_path / "noisy"
    write_script(script, "head -c 1000000 /dev/zero | tr '\\0' x; echo done >&2\n")
    result = helper.run([str(script)], 60.0)
    assert result.returncode == 0 and result.failure is None
    assert len(result.stdout) == helper.OUTPUT_MAX and set(result.stdout) == {ord("x")}
    assert result.stderr == b"done\n"


def test_failures_are_described(tmp_path: pathlib.Path) -> None:
    script = tmp_path / "failing"
    write_script(script, "echo partial; echo 'nmcli: no' >&2; echo again >&2; exit 4\n")
    result = helper.run([str(script)], 60.0)
    assert (result.returncode, result.stdout) == (4, b"partial\n")
    assert result.failure == "failed with exit status 4: nmcli: no | again"
    result = helper.run([str(tmp_path / "missing")], 60.0)
    assert result.returncode is None
    assert result.failure == "cannot run it: No such file or directory"
    write_script(script, "kill -TERM $$\n")
    assert helper.run([str(script)], 60.0).failure == "killed by signal 15: "


def test_overrun_kills_the_process_group(tmp_path: pathlib.Path) -> None:
    script = tmp_path / "hanging"
    # Both far longer than the join() below, a hang guard: returning at all
    # shows they were cut short.
    write_script(script, f"sleep 600 & echo $! > {str(tmp_path / 'bg.pid')!r}; exec sleep 600\n")
    results: list[helper.HelperResult] = []
    worker = threading.Thread(target=lambda: results.append(helper.run([str(script)], 1.0)))
    worker.start()
    worker.join(120)
    assert not worker.is_alive(), "the runner did not give up on the helper"
    assert results[0].returncode is None
    assert results[0].failure == "did not finish within 1 s; killed"
    assert gone(int((tmp_path / "bg.pid").read_text()))


def test_background_child_is_left_alone(tmp_path: pathlib.Path) -> None:
    # A helper that exits and leaves a child holding its stdout (ifup's DHCP
    # client): its result counts, the child lives on.
    script = tmp_path / "ifup-like"
    write_script(script, f"sleep 600 & echo $! > {str(tmp_path / 'bg.pid')!r}; echo ok\n")
    result = helper.run([str(script)], 60.0)
    assert (result.returncode, result.stdout, result.failure) == (0, b"ok\n", None)
    bg = int((tmp_path / "bg.pid").read_text())
    assert not gone(bg, timeout=0)
    os.kill(bg, signal.SIGKILL)
    assert gone(bg)


def test_environment(tmp_path: pathlib.Path) -> None:
    script = tmp_path / "env"
    write_script(script, 'printf "%s|%s" "$PATH" "${HV_X-unset}"\n')
    # Under systemd PATH may be unset: the scripts still find their tools.
    result = helper.run([str(script)], 60.0, env={"HV_X": "1"})
    assert result.stdout == f"{helper.DEFAULT_PATH}|1".encode()
    result = helper.run([str(script)], 60.0, env={"PATH": "/bin"})
    assert result.stdout == b"/bin|unset"


def test_script_path() -> None:
    assert helper.script(KvpPaths(), "hv_set_ifconfig") == "/usr/libexec/hypervkvpd/hv_set_ifconfig"
    # openSUSE builds KVP_SCRIPTS_PATH empty: PATH lookup.
    assert helper.script(KvpPaths(scripts_dir=""), "hv_set_ifconfig") == "hv_set_ifconfig"
    assert helper.command_text(["/x/hv_get_dns_info", "a;b$c"]) == "/x/hv_get_dns_info 'a;b$c'"
