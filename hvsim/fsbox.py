# SPDX-License-Identifier: GPL-2.0-only
"""A private mount namespace whose mount table holds only test filesystems.

Simulator infrastructure, mirrors nothing upstream.  Freezing blocks every
writer of a filesystem, and the machine's root filesystem is a real block
device, so a VSS daemon (ours or the reference) is only ever run where the
mount table it reads cannot lead to it:

* `unshare --mount --propagation private` starts an agent process;
* the agent mounts a read-only overlay of `/` as the new root (so programs
  and libraries are found at their usual paths, but the overlay's own
  superblock has no block device and FIFREEZE on it fails EOPNOTSUPP),
  a writable overlay on /tmp (the host's /tmp read-only underneath), tmpfs on
  /run, /mnt and /dev/shm, proc, optionally sysfs, /dev,
  a bind of the work directory (itself on the host's /dev/shm tmpfs), and
  the test images (ext4, xfs; stacked loop-on-loop) with `mount -o loop`
  under /mnt;
* it pivot_root()s into that root and lazily unmounts the old one, so
  /proc/self/mountinfo shows nothing else;
* FsBox.verify() then checks from outside, before anything is frozen, that
  every mount is one of those: an anonymous-device virtual filesystem at its
  expected place, or one of our loop devices with our image as its backing
  file.  Nothing else passes.

Programs run inside with `nsenter -t AGENT -m`.  The agent also probes
frozen state (a second FIFREEZE fails EBUSY on a frozen filesystem; on a
thawed one it succeeds and is undone at once with FITHAW: these are our own
idle images) and thaws everything in cleanup.  The namespace, its mounts and
the autoclear loop devices go away when the agent exits.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import IO, Any

from hvdaemons.errors import HvError
from hvdaemons.vss.freeze import FIFREEZE, FITHAW
from hvdaemons.vss.mounts import Mount, parse_mountinfo

from . import launch

BASE = "/dev/shm"  # a tmpfs on the host: the work directory's bind is anonymous-device
MNT = "/mnt"
DEFAULT_SIZE_MB = {"ext4": 16, "xfs": 300}  # mkfs.xfs refuses less than 300 MiB (sparse anyway)
_VIRTUAL = {
    "/": "overlay",
    "/proc": "proc",
    "/sys": "sysfs",
    "/dev": "devtmpfs",
    "/dev/shm": "tmpfs",
    "/tmp": "overlay",
    "/run": "tmpfs",
    MNT: "tmpfs",
}


class SandboxError(HvError):
    """The sandbox cannot be set up or used."""


class UnsafeSandbox(SandboxError):
    """The namespace's mount table holds something that is not ours: never freeze there."""


@dataclass(frozen=True)
class FsSpec:
    """One test filesystem, mounted at /mnt/<name> inside the box."""

    name: str
    fstype: str = "ext4"  # ext4 | xfs
    size_mb: int = 0  # 0: DEFAULT_SIZE_MB
    inside: str | None = None  # the image file lives on this (earlier) filesystem
    readonly: bool = False
    bind_of: str | None = None  # not an image: a bind mount of /mnt/<bind_of>

    @property
    def mount_point(self) -> str:
        return f"{MNT}/{self.name}"


def sweep() -> None:
    """Remove work directories of boxes whose agent is gone (a killed test run).

    Their namespace died with the agent, and with it the mounts; only the
    image files in /dev/shm (memory) remain.
    """
    for name in os.listdir(BASE):
        if not name.startswith("hvvss-"):
            continue
        path = os.path.join(BASE, name)
        try:
            with open(os.path.join(path, "agent.pid")) as f:
                pid = int(f.read())
        except (OSError, ValueError):
            continue  # being set up right now, or not ours
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                alive = b"hvsim.fsbox" in f.read()
        except OSError:
            alive = False
        if not alive:
            shutil.rmtree(path, ignore_errors=True)


class FsBox:
    """The sandbox seen from outside.  Use as a context manager or start()/close()."""

    def __init__(self, specs: Sequence[FsSpec], *, sysfs: bool = True) -> None:
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError("file system names must be unique")
        known: dict[str, FsSpec] = {}
        for s in specs:
            if s.bind_of is not None:
                if s.bind_of not in known:
                    raise ValueError(f"{s.name}: bind of unknown or later {s.bind_of}")
            else:
                if s.fstype not in DEFAULT_SIZE_MB:
                    raise ValueError(f"{s.name}: unsupported fstype {s.fstype}")
                if s.inside is not None:
                    host = known.get(s.inside)
                    if host is None or host.bind_of is not None or host.readonly:
                        raise ValueError(f"{s.name}: {s.inside} must be an earlier writable image")
                    if not sysfs:
                        # Without sysfs no daemon can see the stacking and
                        # would freeze the holder first: a real deadlock.
                        raise ValueError("stacked filesystems need sysfs in the box")
            known[s.name] = s
        self.specs = list(specs)
        self.sysfs = sysfs
        self.workdir = ""
        self.pid = 0
        self._agent: subprocess.Popen[bytes] | None = None
        self._procs: list[subprocess.Popen[bytes]] = []
        self._log: IO[bytes] | None = None

    # -- set-up ----------------------------------------------------------------

    @property
    def sim_dir(self) -> str:
        """Where the simulator's device sockets go (visible at the same path inside)."""
        return os.path.join(self.workdir, "sim")

    def image_mount_points(self) -> list[str]:
        """One mount point per image (no bind mounts), holders before what they hold."""
        return [s.mount_point for s in self.specs if s.bind_of is None]

    def start(self) -> FsBox:
        sweep()
        self.workdir = tempfile.mkdtemp(prefix="hvvss-", dir=BASE)
        for d in ("img", "sim", "empty", "root"):
            os.mkdir(os.path.join(self.workdir, d))
        os.chmod(self.sim_dir, 0o755)
        config = {
            "workdir": self.workdir,
            "sysfs": self.sysfs,
            "specs": [asdict(s) for s in self.specs],
        }
        cfg = os.path.join(self.workdir, "config.json")
        with open(cfg, "w") as f:
            json.dump(config, f)
        self._log = open(os.path.join(self.workdir, "agent.log"), "w+b")  # noqa: SIM115 (lives with the box)
        self._agent = launch.popen(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "--",
                *launch.python_argv("hvsim.fsbox", "agent", cfg),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        self.pid = self._agent.pid
        with open(os.path.join(self.workdir, "agent.pid"), "w") as f:
            f.write(f"{self.pid}\n")
        first = self._read()
        if not first.get("ready"):
            err = first.get("error", "agent exited")
            detail = self.agent_log()
            self.close()
            raise SandboxError(f"sandbox set-up failed: {err}\n{detail}")
        try:
            self.verify()
        except BaseException:
            self.close()
            raise
        return self

    def __enter__(self) -> FsBox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def agent_log(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    # -- verification ------------------------------------------------------------

    def mounts(self) -> list[Mount]:
        """The box's mount table, read from outside."""
        with open(f"/proc/{self.pid}/mountinfo", "rb") as f:
            return parse_mountinfo(f.read())

    def verify(self) -> list[Mount]:
        """Raise UnsafeSandbox unless every mount is a known virtual one or one of our loop images."""
        mounts = self.mounts()
        host_root = os.stat("/").st_dev
        host_dev = (os.major(host_root), os.minor(host_root))
        specs = {s.mount_point: s for s in self.specs}
        by_name = {s.name: s for s in self.specs}
        virtual = dict(_VIRTUAL)
        virtual[self.workdir] = "tmpfs"
        if not self.sysfs:
            del virtual["/sys"]
        seen = set()
        for m in mounts:
            what = f"{m.mount_point} ({m.fstype} on {m.source}, {m.major}:{m.minor})"
            if m.dev == host_dev:
                raise UnsafeSandbox(f"the host's root filesystem is visible: {what}")
            if virtual.get(m.mount_point) == m.fstype:
                if m.major != 0:
                    raise UnsafeSandbox(f"virtual mount with a block device: {what}")
                if m.mount_point == "/" and "ro" not in m.mount_options:
                    raise UnsafeSandbox(f"root overlay is writable: {what}")
                continue
            spec = specs.get(m.mount_point)
            if spec is None:
                raise UnsafeSandbox(f"unexpected mount {what}")
            image = by_name[spec.bind_of] if spec.bind_of is not None else spec
            if m.fstype != image.fstype or not m.source.startswith("/dev/loop"):
                raise UnsafeSandbox(f"{what} is not a loop-mounted {image.fstype} image")
            st = os.stat(m.source)
            if (
                not stat.S_ISBLK(st.st_mode)
                or (os.major(st.st_rdev), os.minor(st.st_rdev)) != m.dev
            ):
                raise UnsafeSandbox(f"{what}: {m.source} is not its block device")
            try:
                with open(f"/sys/dev/block/{m.major}:{m.minor}/loop/backing_file") as f:
                    backing = f.read().rstrip("\n")
            except OSError as e:
                raise UnsafeSandbox(f"{what} is not on a loop device: {e}") from e
            if image.inside is None:
                want = os.path.join(self.workdir, "img", f"{image.name}.img")
            else:
                want = f"{MNT}/{image.inside}/{image.name}.img"
            if backing != want:
                raise UnsafeSandbox(f"{what}: backing file {backing}, expected {want}")
            seen.add(m.mount_point)
        missing = set(specs) - seen
        if missing:
            raise UnsafeSandbox(f"test filesystems not mounted: {sorted(missing)}")
        return mounts

    # -- running things inside -----------------------------------------------------

    def popen(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> subprocess.Popen[bytes]:
        """Start argv inside the box; the Popen's pid is the program's.  Killed in close()."""
        proc: subprocess.Popen[bytes] = launch.popen(
            ["nsenter", "-t", str(self.pid), "-m", "--", *argv], env=env, **kwargs
        )
        self._procs.append(proc)
        return proc

    def run(
        self, argv: Sequence[str], *, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run argv inside the box to completion, capturing text output."""
        return launch.run(
            ["nsenter", "-t", str(self.pid), "-m", "--", *argv],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    # -- agent calls ----------------------------------------------------------------

    def _read(self) -> dict[str, Any]:
        assert self._agent is not None and self._agent.stdout is not None
        line = self._agent.stdout.readline()
        if not line:
            return {"error": "agent exited"}
        reply: dict[str, Any] = json.loads(line)
        return reply

    def call(self, cmd: str, **kw: Any) -> dict[str, Any]:
        if self._agent is None or self._agent.poll() is not None or self._agent.stdin is None:
            raise SandboxError("sandbox agent is not running")
        self._agent.stdin.write(json.dumps({"cmd": cmd, **kw}).encode() + b"\n")
        self._agent.stdin.flush()
        reply = self._read()
        if "error" in reply:
            raise SandboxError(f"sandbox agent: {reply['error']}")
        return reply

    def probe(
        self, paths: Sequence[str] | None = None, *, parallel: bool = False
    ) -> dict[str, str]:
        """mount point -> "frozen" | "thawed" | "error: ..." (second-FIFREEZE probe).

        parallel: probe every path at once (one thread each).  Freezing a
        thawed filesystem waits for RCU grace periods; in parallel the
        waits overlap, so a round costs about one filesystem's.
        """
        result: dict[str, str] = self.call(
            "probe", paths=list(paths or self.image_mount_points()), parallel=parallel
        )["result"]
        return result

    def frozen(self, paths: Sequence[str] | None = None) -> list[str]:
        """The mount points that are frozen now."""
        return [p for p, s in self.probe(paths).items() if s == "frozen"]

    def freeze(self, paths: Sequence[str]) -> dict[str, str]:
        """FIFREEZE from outside any daemon (fault set-up)."""
        result: dict[str, str] = self.call("freeze", paths=list(paths))["result"]
        return result

    def thaw(self, paths: Sequence[str] | None = None) -> dict[str, str]:
        """FITHAW each: "thawed" (it was frozen), "not-frozen", or "error: ..."."""
        result: dict[str, str] = self.call("thaw", paths=list(paths or self.image_mount_points()))[
            "result"
        ]
        return result

    def shutdown(self, path: str) -> None:
        """Shut a filesystem down (XFS_IOC_GOINGDOWN, also ext4): FIFREEZE then fails with EIO."""
        self.call("shutdown", path=path)

    # -- clean-up --------------------------------------------------------------------

    def kill_all(self) -> None:
        for p in self._procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        self._procs.clear()

    def close(self) -> list[str]:
        """Kill what runs inside, thaw everything, tear down.  Returns what was left frozen."""
        self.kill_all()
        leaked: list[str] = []
        agent = self._agent
        if agent is not None and agent.poll() is None:
            try:
                leaked = [p for p, s in self.thaw().items() if s == "thawed"]
                self.call("exit")
            except (SandboxError, OSError, ValueError):
                pass
            try:
                agent.wait(10)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()
        if agent is not None:
            for stream in (agent.stdin, agent.stdout):
                if stream is not None:
                    stream.close()
        self._agent = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return leaked


# -- the agent (runs inside the namespace) ---------------------------------------------


def _run(*argv: str) -> None:
    res = subprocess.run(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    if res.returncode != 0:
        raise SandboxError(f"{' '.join(argv)}: {res.stdout.decode(errors='replace').strip()}")


def _mkfs(fstype: str, path: str, size_mb: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size_mb << 20)
    if fstype == "ext4":
        _run("mkfs.ext4", "-q", "-F", path)
    else:
        _run("mkfs.xfs", "-q", "-f", path)


def _setup(cfg: dict[str, Any]) -> None:
    work = str(cfg["workdir"])
    new = os.path.join(work, "root")
    _run("mount", "-t", "overlay", "-o", f"ro,lowerdir=/:{work}/empty", "hvfsbox-root", new)
    dirs = ["proc", "dev", "tmp", "run", "mnt"] + (["sys"] if cfg["sysfs"] else [])
    for d in dirs:
        if not os.path.isdir(os.path.join(new, d)):
            raise SandboxError(f"/{d} is missing on the host: cannot build the box")
    _run("mount", "-t", "proc", "proc", f"{new}/proc")
    if cfg["sysfs"]:
        _run("mount", "-t", "sysfs", "sysfs", f"{new}/sys")
    _run("mount", "--bind", "/dev", f"{new}/dev")
    _run("mount", "-t", "tmpfs", "-o", "mode=1777,size=1m", "hvfsbox", f"{new}/dev/shm")
    os.makedirs(new + work)
    _run("mount", "--bind", work, new + work)
    # /tmp: writable, but still showing the host's /tmp underneath (read only),
    # so a daemon or venv installed below /tmp (a CI checkout) runs in the box.
    # The writes land in an upper layer on the work directory's tmpfs.
    os.makedirs(f"{work}/tmp-upper/data")
    os.makedirs(f"{work}/tmp-upper/work")
    _run(
        "mount",
        "-t",
        "overlay",
        "-o",
        f"lowerdir=/tmp,upperdir={work}/tmp-upper/data,workdir={work}/tmp-upper/work",
        "hvfsbox-tmp",
        f"{new}/tmp",
    )
    _run("mount", "-t", "tmpfs", "-o", "mode=755", "hvfsbox", f"{new}/run")
    _run("mount", "-t", "tmpfs", "-o", "mode=755", "hvfsbox", f"{new}{MNT}")
    for raw in cfg["specs"]:
        spec = FsSpec(**raw)
        mp = new + spec.mount_point
        os.mkdir(mp)
        if spec.bind_of is not None:
            _run("mount", "--bind", f"{new}{MNT}/{spec.bind_of}", mp)
            if spec.readonly:
                _run("mount", "-o", "remount,bind,ro", mp)
            continue
        if spec.inside is None:
            # Through the bind that stays after pivot_root, so the loop's
            # backing_file reads the same inside and outside.
            image = os.path.join(new + work, "img", f"{spec.name}.img")
        else:
            image = f"{new}{MNT}/{spec.inside}/{spec.name}.img"
        _mkfs(spec.fstype, image, spec.size_mb or DEFAULT_SIZE_MB[spec.fstype])
        _run("mount", "-t", spec.fstype, "-o", "loop,ro" if spec.readonly else "loop", image, mp)
    old = f"{new}/tmp/.oldroot"
    os.mkdir(old)
    _run("pivot_root", new, old)
    os.chdir("/")
    _run("umount", "-l", "/tmp/.oldroot")
    os.rmdir("/tmp/.oldroot")


def _ioctl(path: str, cmd: int) -> int | None:
    """ioctl on a mount point; the errno, or None on success."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        return e.errno
    try:
        fcntl.ioctl(fd, cmd, 0)
    except OSError as e:
        return e.errno
    finally:
        os.close(fd)
    return None


def _probe(path: str) -> str:
    err = _ioctl(path, FIFREEZE)
    if err == errno.EBUSY:
        return "frozen"
    if err is None:
        _ioctl(path, FITHAW)  # it was thawed: undo the probe's own freeze at once
        return "thawed"
    return f"error: {os.strerror(err)}"


def _probe_all(paths: list[str]) -> dict[str, str]:
    """_probe() of every path, each in its own thread (the ioctls release the GIL).

    A stacked image whose holder is frozen by a neighbouring probe just
    waits for that probe's FITHAW, which comes at once: no cycle.
    """
    found: dict[str, str] = {}

    def probe_one(path: str) -> None:
        found[path] = _probe(path)

    threads = [threading.Thread(target=probe_one, args=(p,)) for p in paths]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {p: found[p] for p in paths}


def _thaw(path: str) -> str:
    err = _ioctl(path, FITHAW)
    if err is None:
        return "thawed"
    if err == errno.EINVAL:
        return "not-frozen"
    return f"error: {os.strerror(err)}"


def _freeze(path: str) -> str:
    err = _ioctl(path, FIFREEZE)
    if err is None:
        return "frozen"
    return f"error: {os.strerror(err)}"


def _dirty(path: str, kib: int) -> str:
    """Leave kib KiB of unwritten data on an idle test filesystem (benchmarks).

    Never on a frozen one: the write would block this agent for good.  The
    probe runs first, and nothing else freezes while the caller waits.
    """
    state = _probe(path)
    if state != "thawed":
        return f"refused: {state}"
    fd = os.open(os.path.join(path, ".hvbench-dirty"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, b"\xa5" * (kib << 10))
    finally:
        os.close(fd)
    return "dirty"


def _serve(cfg: dict[str, Any]) -> None:
    out = sys.stdout
    for line in sys.stdin:
        try:
            req = json.loads(line)
            cmd = req["cmd"]
            if cmd == "exit":
                out.write(json.dumps({"ok": True}) + "\n")
                out.flush()
                return
            if cmd == "probe" and req.get("parallel"):
                reply: dict[str, Any] = {"result": _probe_all(req["paths"])}
            elif cmd in ("probe", "thaw", "freeze"):
                fn = {"probe": _probe, "thaw": _thaw, "freeze": _freeze}[cmd]
                reply = {"result": {p: fn(p) for p in req["paths"]}}
            elif cmd == "dirty":
                reply = {"result": {p: _dirty(p, int(req["kib"])) for p in req["paths"]}}
            elif cmd == "shutdown":
                _run("xfs_io", "-x", "-c", "shutdown", str(req["path"]))
                reply = {"ok": True}
            else:
                reply = {"error": f"unknown command {cmd!r}"}
        except Exception as e:
            reply = {"error": f"{type(e).__name__}: {e}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


def agent_main(config_path: str) -> int:
    # The agent dies with its parent's pipe, and with it the namespace.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with open(config_path) as f:
        cfg = json.load(f)
    try:
        _setup(cfg)
    except Exception as e:
        sys.stdout.write(json.dumps({"error": f"{type(e).__name__}: {e}"}) + "\n")
        sys.stdout.flush()
        return 1
    sys.stdout.write(json.dumps({"ready": True}) + "\n")
    sys.stdout.flush()
    _serve(cfg)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "agent":
        sys.exit(agent_main(sys.argv[2]))
    sys.exit("usage: python -m hvsim.fsbox agent CONFIG")
