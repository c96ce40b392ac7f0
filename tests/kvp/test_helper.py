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


def test_program_found_through_the_given_path(tmp_path: pathlib.Path) -> None:
    # openSUSE's empty KVP_SCRIPTS_PATH: the bare name is looked up in the
    # helper's PATH, not the daemon's.
    write_script(tmp_path / "hv_get_dns_info", "echo found\n")
    (tmp_path / "not-executable").write_text("#!/bin/sh\necho no\n")
    path = f"/nonexistent:{tmp_path}:/bin:/usr/bin"
    result = helper.run(["hv_get_dns_info"], 60.0, env={"PATH": path})
    assert (result.returncode, result.stdout) == (0, b"found\n")
    result = helper.run(["not-executable"], 60.0, env={"PATH": str(tmp_path)})
    assert result.failure == "cannot run it: No such file or directory"
    result = helper.run([str(tmp_path / "not-executable")], 60.0)
    assert result.failure == "cannot run it: Permission denied"


def test_helper_starts_clean(tmp_path: pathlib.Path) -> None:
    """Its own session, stdin from /dev/null, only descriptors 0-2, SIGHUP and SIGPIPE default."""
    # The daemon ignores both (hvdaemons.service); an ignored signal stays
    # ignored across exec unless the spawn resets it.
    old_hup = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    old_pipe = signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    leaked_r, leaked_w = os.pipe()
    try:
        result = helper.run(["cat", "/proc/self/status"], 60.0)
        fds = helper.run(["ls", "/proc/self/fd"], 60.0)
        stdin = helper.run(["readlink", "/proc/self/fd/0"], 60.0)
        session = helper.run(["sh", "-c", "ps -o sid= -p $$"], 60.0)
    finally:
        signal.signal(signal.SIGHUP, old_hup)
        signal.signal(signal.SIGPIPE, old_pipe)
        os.close(leaked_r)
        os.close(leaked_w)
    fields = dict(
        line.split(":\t", 1) for line in result.stdout.decode().splitlines() if ":\t" in line
    )
    ignored = int(fields["SigIgn"], 16)
    assert not ignored & (1 << (signal.SIGHUP - 1)), fields["SigIgn"]
    assert not ignored & (1 << (signal.SIGPIPE - 1)), fields["SigIgn"]
    assert int(fields["SigBlk"], 16) == 0
    # ls's own directory descriptor is the 3.
    assert fds.stdout.split() == [b"0", b"1", b"2", b"3"], fds.stdout
    assert stdin.stdout == b"/dev/null\n"
    assert session.returncode == 0 and int(session.stdout) != os.getsid(0)
