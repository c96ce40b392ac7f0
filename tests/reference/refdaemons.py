# SPDX-License-Identifier: GPL-2.0-only
"""Run Debian's unmodified reference Hyper-V daemons against a simulator.

Mirrors nothing upstream: this is test harness.  The reference binaries are
Debian's ``hyperv-daemons`` builds of the kernel's ``tools/hv`` daemons
(bookworm = Linux 6.1: kvp, vss, char-device fcopy; trixie = Linux 6.12: kvp,
vss), fetched and unpacked by ``fetch.sh``.  They are run with the
``hvshim.so`` LD_PRELOAD shim, which turns ``open("/dev/vmbus/hv_X")`` into a
``SOCK_SEQPACKET`` connection to ``$HVSHIM_DIR/hv_X`` and mirrors syslog lines
to stderr as ``<LEVEL>IDENT: message``, inside a private mount namespace with a
tmpfs over ``/var/lib/hyperv`` so nothing they write reaches the host.

Deliberately independent of the ``hvdaemons`` package (it must work before
that package builds).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pathlib
import select
import shlex
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence

HERE = pathlib.Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
FETCH_SH = HERE / "fetch.sh"
SHIM_SRC = HERE / "hvshim.c"

#: Which reference daemons each release's package ships.
DAEMONS: dict[str, tuple[str, ...]] = {
    "bookworm": ("hv_kvp_daemon", "hv_vss_daemon", "hv_fcopy_daemon"),
    "trixie": ("hv_kvp_daemon", "hv_vss_daemon"),
}
RELEASES: tuple[str, ...] = tuple(DAEMONS)

#: tmpfs mounts every sandbox gets unless told otherwise: the daemons' state dir.
DEFAULT_TMPFS: tuple[str, ...] = ("/var/lib/hyperv",)

# Filesystems on which the sandbox must never create a mount point: they are
# kernel-managed and (devtmpfs) shared with the whole host.
_PSEUDO_FS = frozenset({
    "devtmpfs", "sysfs", "proc", "devpts", "cgroup", "cgroup2", "securityfs",
    "debugfs", "tracefs", "configfs", "bpf", "mqueue", "hugetlbfs", "pstore",
    "efivarfs", "fusectl", "binfmt_misc", "autofs", "nsfs",
})
_PSEUDO_ROOTS = ("/dev", "/proc", "/sys")


def ref_root() -> pathlib.Path:
    """Directory holding the unpacked packages (``<root>/<release>/usr/sbin/...``).

    ``$HVDAEMONS_REF_DIR`` if set, else ``<repo>/.cache/reference``.
    """
    env = os.environ.get("HVDAEMONS_REF_DIR")
    return pathlib.Path(env) if env else REPO_ROOT / ".cache" / "reference"


def _complete(root: pathlib.Path) -> bool:
    for release, names in DAEMONS.items():
        if not (root / release / ".version").is_file():
            return False
        if not all(os.access(root / release / "usr" / "sbin" / n, os.X_OK) for n in names):
            return False
    return True


@contextlib.contextmanager
def _locked(root: pathlib.Path, name: str) -> Iterator[None]:
    """Hold an exclusive lock so parallel test workers don't fetch/build twice."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / name, "wb") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def ensure_reference() -> pathlib.Path:
    """Return :func:`ref_root`, running ``fetch.sh`` first if anything is missing.

    Raises RuntimeError (with fetch.sh's output) if the fetch fails.
    """
    root = ref_root()
    if _complete(root):
        return root
    with _locked(root, ".fetch.lock"):
        if _complete(root):
            return root
        res = subprocess.run(
            ["bash", str(FETCH_SH), str(root)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True,
        )
        if res.returncode != 0 or not _complete(root):
            raise RuntimeError(
                f"could not fetch the reference hyperv-daemons into {root} "
                f"(fetch.sh exit {res.returncode}):\n{res.stdout}"
            )
    return root


def ref_daemon(release: str, name: str) -> pathlib.Path:
    """Path of reference daemon *name* (e.g. ``hv_kvp_daemon``) from *release*."""
    if release not in DAEMONS:
        raise ValueError(f"unknown release {release!r} (known: {', '.join(RELEASES)})")
    if name not in DAEMONS[release]:
        raise ValueError(f"{release}'s hyperv-daemons has no {name!r} "
                         f"(has: {', '.join(DAEMONS[release])})")
    return ensure_reference() / release / "usr" / "sbin" / name


def build_shim() -> pathlib.Path:
    """Compile hvshim.c into the cache dir if missing or older than the source."""
    root = ref_root()
    out = root / "hvshim.so"

    def fresh() -> bool:
        return out.exists() and out.stat().st_mtime >= SHIM_SRC.stat().st_mtime

    if fresh():
        return out
    with _locked(root, ".shim.lock"):
        if fresh():
            return out
        # Build beside the target and rename, so a running daemon never maps a
        # half-written library.
        tmp = root / f".hvshim.{os.getpid()}.so"
        res = subprocess.run(
            ["gcc", "-shared", "-fPIC", "-O2", "-Wall", "-o", str(tmp), str(SHIM_SRC), "-ldl"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True,
        )
        if res.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise RuntimeError(f"building {SHIM_SRC} failed:\n{res.stdout}")
        os.replace(tmp, out)
    return out


def _mounts() -> list[tuple[str, str]]:
    """(mount point, fstype) of the current mount namespace."""
    result = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            # mountinfo escapes blanks and backslashes as \ooo octal
            point = fields[4].encode().decode("unicode_escape")
            result.append((point, fields[sep + 1]))
    return result


def _fstype_of(path: str) -> str:
    best, fstype = "", ""
    for point, typ in _mounts():
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, fstype = point, typ
    return fstype


def _under(path: str, prefixes: Sequence[str]) -> bool:
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in prefixes)


def _check_target(path: str, ephemeral: Sequence[str]) -> None:
    """Refuse a mount point that doesn't exist and can't safely be created.

    A missing mount point is created by the sandbox script (``mkdir -p``, or an
    empty file for a file bind).  Below an earlier tmpfs of the same sandbox
    that is ephemeral.  Otherwise it happens in the real filesystem (e.g. ``/var/lib/hyperv`` on the root fs),
    which we accept only because it is an *empty* directory or file at the
    daemons' standard location (the one the package and hv_kvp_daemon create
    themselves), and everything later written there lands in the tmpfs or bind
    mount covering it.  Never on /dev, /proc, /sys or other kernel-managed
    filesystems: those are shared with the host and not ours to change.
    """
    if not os.path.isabs(path):
        raise ValueError(f"sandbox mount point must be absolute: {path!r}")
    if os.path.lexists(path) or _under(path, ephemeral):
        return
    parent = path
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if _under(path, _PSEUDO_ROOTS) or _fstype_of(os.path.realpath(parent)) in _PSEUDO_FS:
        raise ValueError(f"refusing to create mount point {path} on a kernel-managed "
                         "filesystem; create it some other way")


def sandbox_argv(
    argv: Sequence[str],
    *,
    tmpfs: Sequence[str] = DEFAULT_TMPFS,
    binds: Mapping[str, str] | None = None,
) -> list[str]:
    """Wrap *argv* so it runs in a private mount namespace.

    The result runs ``unshare --mount --propagation private -- /bin/sh -c
    SCRIPT sh ARGV...``; SCRIPT mounts, in order,

    * a fresh tmpfs on each *tmpfs* entry, written ``PATH`` or
      ``PATH:OPTIONS`` (OPTIONS are appended to ``mode=0755``, e.g.
      ``"/var/lib/hyperv:size=64k"`` to test a full disk);
    * a bind mount for each *binds* item ``{source: target}`` (file or dir),
      after the tmpfs mounts, so targets may lie inside them (and sources
      are looked up after them too);

    then ``exec``s *argv*, so the returned command's pid is the program's pid.
    Missing mount points are created (see :func:`_check_target` for why that
    is acceptable and where it is refused).  Mounts vanish with the namespace
    when the process exits; nothing propagates back to the host.
    """
    binds = dict(binds or {})
    lines = ["set -e"]
    ephemeral: list[str] = []
    for entry in tmpfs:
        path, _, opts = entry.partition(":")
        _check_target(path, ephemeral)
        q = shlex.quote(path)
        lines.append(f"[ -d {q} ] || mkdir -p {q}")
        options = shlex.quote("mode=0755" + ("," + opts if opts else ""))
        lines.append(f"mount -t tmpfs -o {options} hvsandbox {q}")
        ephemeral.append(path)
    for src, dst in binds.items():
        if not os.path.isabs(src):
            raise ValueError(f"bind source must be absolute: {src!r}")
        _check_target(dst, ephemeral)
        s, d = shlex.quote(src), shlex.quote(dst)
        lines.append(
            f"if [ -d {s} ]; then [ -d {d} ] || mkdir -p {d}; "
            f"else [ -e {d} ] || {{ mkdir -p \"$(dirname {d})\"; : > {d}; }}; fi"
        )
        lines.append(f"mount --bind {s} {d}")
    lines.append('exec "$@"')
    return ["unshare", "--mount", "--propagation", "private", "--",
            "/bin/sh", "-c", "\n".join(lines), "sh", *argv]


def spawn_reference(
    release: str,
    name: str,
    hvshim_dir: os.PathLike[str] | str,
    extra_args: Sequence[str] = ("-n",),
    *,
    tmpfs: Sequence[str] = DEFAULT_TMPFS,
    binds: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start reference daemon *name* of *release* in a sandbox, via the shim.

    Its ``/dev/vmbus/<dev>`` becomes a connection to ``<hvshim_dir>/<dev>``
    (a listening SOCK_SEQPACKET socket the caller owns).  *env* (default: our
    environment) gets ``LD_PRELOAD`` and ``HVSHIM_DIR`` added.  stdin/stdout
    are /dev/null; stderr is a pipe carrying the mirrored syslog lines (see
    :class:`LogReader`).  The Popen's pid is the daemon's pid; the caller
    must kill and wait for it.
    """
    daemon = ref_daemon(release, name)
    shim = build_shim()
    full_env = dict(os.environ if env is None else env)
    full_env["LD_PRELOAD"] = str(shim)
    full_env["HVSHIM_DIR"] = os.fspath(hvshim_dir)
    argv = sandbox_argv([str(daemon), *extra_args], tmpfs=tmpfs, binds=binds)
    return subprocess.Popen(argv, env=full_env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


class LogReader:
    """Collects a spawned daemon's stderr (the shim's ``<LEVEL>IDENT: msg`` lines).

    Reads the raw pipe fd, so don't also read ``proc.stderr`` directly.
    """

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None, "spawn with stderr=PIPE"
        self._fd = proc.stderr.fileno()
        self._buf = b""
        self._eof = False
        self._next = 0  # index of the first line not yet matched by wait_for

    @property
    def lines(self) -> list[str]:
        """Complete lines received so far, without their newlines."""
        return self._buf.decode(errors="replace").split("\n")[:-1]

    def _fill(self, timeout: float) -> None:
        if self._eof:
            return
        ready, _, _ = select.select([self._fd], [], [], max(timeout, 0.0))
        if ready:
            chunk = os.read(self._fd, 65536)
            self._eof = not chunk
            self._buf += chunk

    def wait_for(self, needle: str, timeout: float = 10.0) -> str:
        """Return the next unseen line containing *needle*, waiting up to *timeout* s.

        Raises TimeoutError (showing everything received) if none arrives.
        """
        deadline = time.monotonic() + timeout
        while True:
            lines = self.lines
            for i in range(self._next, len(lines)):
                if needle in lines[i]:
                    self._next = i + 1
                    return lines[i]
            left = deadline - time.monotonic()
            if left <= 0 or self._eof:
                raise TimeoutError("no log line containing {!r} within {:.1f}s{}; got:\n{}".format(needle, timeout, " (stderr closed)" if self._eof else "",
                                      "\n".join(lines)))
            self._fill(left)

    def read_available(self) -> list[str]:
        """Read what the pipe holds now, without waiting; return all lines."""
        before = -1
        while not self._eof and len(self._buf) != before:
            before = len(self._buf)
            self._fill(0)
        return self.lines

    def drain(self, timeout: float = 5.0) -> list[str]:
        """Read until EOF (the daemon has exited) or *timeout*; return all lines."""
        deadline = time.monotonic() + timeout
        while not self._eof and time.monotonic() < deadline:
            self._fill(deadline - time.monotonic())
        return self.lines
