# SPDX-License-Identifier: GPL-2.0-only
"""The one place the KVP daemon starts a program: its helper scripts.

Mirrors the popen()/system() calls of kvp_get_ip_info() and
kvp_set_ip_info() in tools/hv/hv_kvp_daemon.c (hv_get_dhcp_info,
hv_get_dns_info, hv_set_ifconfig from KVP_SCRIPTS_PATH), plus the nmcli
probe of the NetworkManager backend.  Unlike the reference: argv lists,
never a shell (an interface name may hold shell characters, and the
reference pastes it into a command line), a timeout that kills the helper's whole process group, and a
bounded read of its output.
"""

from __future__ import annotations

import os
import selectors
import signal
import time

from ..value import Value
from .paths import KvpPaths

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from collections.abc import Mapping

# Under systemd PATH may be unset; the scripts call nmcli, ip, awk, etc.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Enough for any sane helper output; more is read and dropped.
OUTPUT_MAX = 64 * 1024
# How long output is still read from the pipes once the helper has exited:
# a background child it left (a DHCP client started by ifup) may hold them.
_DRAIN = 0.2


class HelperResult(Value):
    # returncode: the exit status; None if the helper could not be started or
    # was killed for running too long.  failure: why it did not succeed, for a
    # log line; None after exit status 0.
    __slots__ = ("returncode", "stdout", "stderr", "failure")

    def __init__(
        self, returncode: int | None, stdout: bytes, stderr: bytes, failure: str | None = None
    ) -> None:
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.failure = failure


def script(paths: KvpPaths, name: str) -> str:
    """Where the helper script name is.

    An empty scripts_dir means "look it up in PATH" (openSUSE builds
    KVP_SCRIPTS_PATH empty).
    """
    return os.path.join(paths.scripts_dir, name) if paths.scripts_dir else name


def command_text(argv: list[str]) -> str:
    """argv for a log line, quoted so that odd interface names read unambiguously."""
    import shlex  # only for a failure's log line: shlex brings re (1 MiB)

    return shlex.join(argv)


def _stderr_summary(stderr: bytes) -> str:
    text = stderr.decode("utf-8", "replace").strip().replace("\n", " | ")
    return text[:400] + "..." if len(text) > 400 else text


def run(argv: list[str], timeout: float, *, env: Mapping[str, str] | None = None) -> HelperResult:
    """Run a helper without a shell, bounded in time and output.

    env defaults to the daemon's environment, with a default PATH added if
    it has none.  The helper gets its own session: a helper that overruns
    the timeout is killed together with everything it started.  Once the
    helper itself has exited, whatever it left running in the background
    is left alone.
    """
    # Imported here: a daemon only asked for pool items never needs it.
    import subprocess

    full_env = dict(os.environ if env is None else env)
    full_env.setdefault("PATH", DEFAULT_PATH)
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            close_fds=True,
            start_new_session=True,
            env=full_env,
        )
    except OSError as e:
        return HelperResult(None, b"", b"", f"cannot run it: {e.strerror or e}")
    assert proc.stdout is not None and proc.stderr is not None
    deadline = time.monotonic() + timeout
    chunks: dict[int, bytearray] = {
        proc.stdout.fileno(): bytearray(),
        proc.stderr.fileno(): bytearray(),
    }
    returncode: int | None = None
    with selectors.DefaultSelector() as sel:
        for fd in chunks:
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ)
        while sel.get_map():
            now = time.monotonic()
            if now >= deadline:
                break
            if returncode is None:
                returncode = proc.poll()
                if returncode is not None:
                    deadline = min(deadline, now + _DRAIN)
            for key, _ in sel.select(min(deadline - now, 0.1)):
                fd = int(key.fd)
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                if not data:
                    sel.unregister(fd)
                    continue
                buf = chunks[fd]
                if len(buf) < OUTPUT_MAX:
                    buf += data[: OUTPUT_MAX - len(buf)]
    failure: str | None = None
    if returncode is None:
        try:
            returncode = proc.wait(max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.wait()
            returncode = None
            failure = f"did not finish within {timeout:g} s; killed"
    stdout = bytes(chunks[proc.stdout.fileno()])
    stderr = bytes(chunks[proc.stderr.fileno()])
    proc.stdout.close()
    proc.stderr.close()
    if returncode is not None and returncode < 0:
        failure = f"killed by signal {-returncode}: {_stderr_summary(stderr)}"
    elif returncode:
        failure = f"failed with exit status {returncode}: {_stderr_summary(stderr)}"
    return HelperResult(returncode, stdout, stderr, failure)
