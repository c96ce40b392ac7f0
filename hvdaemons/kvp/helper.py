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

import errno
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
    import shlex  # only for a failure's log line: shlex brings re (0.3 MiB)

    return shlex.join(argv)


def _stderr_summary(stderr: bytes) -> str:
    text = stderr.decode("utf-8", "replace").strip().replace("\n", " | ")
    return text[:400] + "..." if len(text) > 400 else text


def _program(name: str, env: Mapping[str, str]) -> str:
    """name, or where env's PATH has it (execvpe()'s lookup)."""
    if "/" in name:
        return name
    for directory in os.get_exec_path(env):
        path = os.path.join(directory, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)


def _inheritable_fds() -> list[int]:
    """Descriptors above 2 that an exec would pass on."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if fd > 2 and os.get_inheritable(fd):
                found.append(fd)
        except OSError:  # listdir's own descriptor, closed by now
            pass
    return found


def _spawn(argv: list[str], env: Mapping[str, str]) -> tuple[int, int, int]:
    """Start argv in a session of its own: (pid, its stdout, its stderr).

    os.posix_spawn, not subprocess: subprocess brings locale and re, 0.75
    MiB that would stay in the daemon for its life after one GET_IP_INFO.
    The helper gets /dev/null, two pipes and nothing else: ours are
    close-on-exec (PEP 446), and what the daemon inherited open is closed as
    subprocess's close_fds does.  SIGHUP and SIGPIPE go back to default (the
    daemon ignores both, and an ignored signal stays ignored across exec).
    """
    path = _program(argv[0], env)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    actions: list[tuple[object, ...]] = [(os.POSIX_SPAWN_CLOSE, fd) for fd in _inheritable_fds()]
    actions += [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_DUP2, out_w, 1),
        (os.POSIX_SPAWN_DUP2, err_w, 2),
    ]
    try:
        pid = os.posix_spawn(
            path,
            argv,
            env,
            file_actions=actions,
            setsid=True,
            setsigdef=(signal.SIGHUP, signal.SIGPIPE, signal.SIGXFSZ),
        )
    except BaseException:
        os.close(out_r)
        os.close(err_r)
        raise
    finally:
        os.close(out_w)
        os.close(err_w)
    return pid, out_r, err_r


def _exit_status(pid: int, *, block: bool) -> int | None:
    """The helper's exit code (-N: killed by signal N), None while it runs."""
    done, status = os.waitpid(pid, 0 if block else os.WNOHANG)
    return os.waitstatus_to_exitcode(status) if done else None


def run(argv: list[str], timeout: float, *, env: Mapping[str, str] | None = None) -> HelperResult:
    """Run a helper without a shell, bounded in time and output.

    env defaults to the daemon's environment, with a default PATH added if
    it has none.  The helper gets its own session: a helper that overruns
    the timeout is killed together with everything it started.  Once the
    helper itself has exited, whatever it left running in the background
    is left alone.
    """
    full_env = dict(os.environ if env is None else env)
    full_env.setdefault("PATH", DEFAULT_PATH)
    try:
        pid, out_fd, err_fd = _spawn(argv, full_env)
    except OSError as e:
        return HelperResult(None, b"", b"", f"cannot run it: {e.strerror or e}")
    deadline = time.monotonic() + timeout
    chunks: dict[int, bytearray] = {out_fd: bytearray(), err_fd: bytearray()}
    returncode: int | None = None
    try:
        with selectors.DefaultSelector() as sel:
            for fd in chunks:
                os.set_blocking(fd, False)
                sel.register(fd, selectors.EVENT_READ)
            while sel.get_map():
                now = time.monotonic()
                if now >= deadline:
                    break
                if returncode is None:
                    returncode = _exit_status(pid, block=False)
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
    finally:
        os.close(out_fd)
        os.close(err_fd)
    failure: str | None = None
    while returncode is None and time.monotonic() < deadline:
        returncode = _exit_status(pid, block=False)
        if returncode is None:
            time.sleep(0.01)
    if returncode is None:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        _exit_status(pid, block=True)
        failure = f"did not finish within {timeout:g} s; killed"
    stdout = bytes(chunks[out_fd])
    stderr = bytes(chunks[err_fd])
    if returncode is not None and returncode < 0:
        failure = f"killed by signal {-returncode}: {_stderr_summary(stderr)}"
    elif returncode:
        failure = f"failed with exit status {returncode}: {_stderr_summary(stderr)}"
    return HelperResult(returncode, stdout, stderr, failure)
