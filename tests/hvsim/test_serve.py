# SPDX-License-Identifier: GPL-2.0-only
"""`hvsim serve`: one server per directory, and each removes only its own sockets.

The installed hvsim runs as a separate process (hvsim.launch); the checks
are on the directory's real sockets: their inodes, whether they answer.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hvsim import launch
from hvsim.server import call
from hvsim.sockets import OwnedSocket
from hvsim.sockets import answers as listening

SERVE = ("serve", "--service", "kvp")


def serve(d: Path) -> subprocess.Popen[str]:
    """A running `hvsim serve` in d (returns once it says it serves)."""
    proc: subprocess.Popen[str] = launch.popen(
        launch.python_argv("hvsim.cli", *SERVE, "--dir", str(d)),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert f"serving hv_kvp in {d}" in line, (line, proc.communicate(timeout=30))
    return proc


def refused(d: Path) -> subprocess.CompletedProcess[str]:
    """`hvsim serve` in d, expected to give up at once."""
    res: subprocess.CompletedProcess[str] = launch.run(
        launch.python_argv("hvsim.cli", *SERVE, "--dir", str(d)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return res


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> tuple[int, str]:
    if proc.poll() is None:
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    return proc.returncode, err


@pytest.fixture
def servers() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.communicate()


def inodes(d: Path) -> dict[str, int]:
    return {p.name: p.lstat().st_ino for p in d.iterdir()}


def answers(d: Path) -> bool:
    reply = call(str(d), {"command": "kvp.status"}, timeout=30)
    return reply == {"ok": True, "registered": False}


def stale_socket(path: Path) -> None:
    """A socket file whose server is gone (bound, then closed without unlink)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.bind(str(path))
    s.close()


def test_a_second_server_refuses_and_touches_nothing(
    tmp_path: Path, servers: list[subprocess.Popen[str]]
) -> None:
    d = tmp_path / "sim"
    servers.append(serve(d))
    before = inodes(d)
    assert set(before) == {"control", "hv_kvp"}

    second = refused(d)
    assert second.returncode == 1
    assert second.stdout == ""
    assert second.stderr.splitlines() == [
        f"hvsim: a simulator is already serving in {d} ({d}/control answers);"
        " stop it or use another --dir"
    ]
    assert inodes(d) == before
    assert answers(d)  # the first server still works

    rc, err = stop(servers[0])
    assert (rc, err) == (0, "")
    assert list(d.iterdir()) == []  # it removed its own sockets


def test_a_stale_socket_is_replaced(tmp_path: Path, servers: list[subprocess.Popen[str]]) -> None:
    d = tmp_path / "sim"
    d.mkdir()
    stale_socket(d / "control")
    stale_socket(d / "hv_kvp")
    # Extra names keep the stale inodes alive: the new sockets cannot reuse them.
    keep = tmp_path / "keep"
    keep.mkdir()
    for p in d.iterdir():
        os.link(p, keep / p.name)
    servers.append(serve(d))
    assert set(inodes(d)) == {"control", "hv_kvp"}
    assert all(inodes(d)[n] != i for n, i in inodes(keep).items())
    assert answers(d)


def test_something_else_at_the_control_path_is_left_alone(tmp_path: Path) -> None:
    d = tmp_path / "sim"
    d.mkdir()
    (d / "control").write_text("not a socket\n")
    res = refused(d)
    assert res.returncode == 1
    assert res.stderr.splitlines() == [
        f"hvsim: cannot serve in {d}: {d}/control: exists and is not a socket"
    ]
    assert [p.name for p in d.iterdir()] == ["control"]
    assert (d / "control").read_text() == "not a socket\n"


def test_a_server_never_removes_another_servers_sockets(
    tmp_path: Path, servers: list[subprocess.Popen[str]]
) -> None:
    d = tmp_path / "sim"
    first = serve(d)
    servers.append(first)
    # Its sockets are removed behind its back and a new server takes the names.
    for p in d.iterdir():
        p.unlink()
    second = serve(d)
    servers.append(second)
    taken = inodes(d)

    rc, err = stop(first)
    assert (rc, err) == (0, "")
    assert inodes(d) == taken  # the first server left the second one's sockets
    assert answers(d)

    rc, err = stop(second)
    assert (rc, err) == (0, "")
    assert list(d.iterdir()) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signals_end_the_server_cleanly(
    tmp_path: Path, servers: list[subprocess.Popen[str]], sig: int
) -> None:
    d = tmp_path / "sim"
    proc = serve(d)
    servers.append(proc)
    assert answers(d)
    rc, err = stop(proc, sig)
    assert rc == 0
    assert err == ""  # no traceback, nothing at all
    assert list(d.iterdir()) == []
    assert not os.path.lexists(d / "control")


def test_a_reused_inode_number_is_not_taken_for_ours(tmp_path: Path) -> None:
    """Once a socket file is gone its inode number may come back for the next one."""
    path = tmp_path / "sock"
    first = OwnedSocket(str(path))
    path.unlink()
    second = OwnedSocket(str(path))
    st = path.lstat()
    first.identity = (st.st_dev, st.st_ino)  # what a reused inode number looks like
    first.close()
    assert listening(str(path))  # the second socket's path is still there and answers
    second.close()
    assert not path.exists()
