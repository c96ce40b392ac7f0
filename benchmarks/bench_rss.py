#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-only
"""Memory: VmRSS of each daemon after a realistic workload, ours beside the reference C daemons.

Mirrors nothing upstream: a benchmark.  Our daemons run as the .deb runs
them: the launcher packaging/build.py writes (``#!/usr/bin/python3 -I``, the
package in a private directory, byte-compiled beforehand, no .pyc written),
under Debian's /usr/bin/python3 unless --python says otherwise, with a
$NOTIFY_SOCKET and $WATCHDOG_USEC as systemd gives them (the bench collects
the datagrams).  The reference daemons are Debian's (bookworm), through the
LD_PRELOAD shim.  Each daemon is measured alone, after:

* KVP: registration, then 300 SETs, 300 GETs, 100 DELETEs and 300
  ENUMERATEs on small pools (10 records), ten sweeps of the auto pool (its
  address lists come from rtnetlink) and three GET_IP_INFOs (the helper
  scripts run), in a network namespace holding one veth NIC, the pools and
  the helper scripts bind-mounted where the daemons look for them;
* KVP with a 5,000-record pool (12.8 MB of records) on top: 300 GETs and
  100 SETs on it, reported separately (what the pool cache costs);
* VSS: ten HOT_BACKUP/FREEZE/THAW cycles of two loop-mounted filesystems,
  in a private mount namespace holding only test filesystems (hvsim.fsbox);
* file copy, char device: three copies of 8 MiB and ten small files;
* file copy, uio ring (ours only: Debian packages no uio daemon): three
  copies of 8 MiB through the simulated ring, the host's interrupt-driven
  and its polling mode; once with the simulator's trees passed as
  --sysfs-root/--dev-root, once as a guest runs it ("uio, guest paths"): no
  options, the simulator's trees mounted on /sys and /dev in a private mount
  namespace, so the daemon also listens to the kernel's uevents.

Columns: VmRSS after the workload, split into RssAnon and RssFile, the
peak (VmHWM) and VmRSS once registered ("start").  --imports prints what
each module costs when imported into a bare interpreter and on top of each
daemon's own imports (median of 3 runs).

    python3 benchmarks/bench_rss.py [--python /usr/bin/python3] [--imports]
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The tests package from this checkout; hvdaemons and hvsim from the installed
# packages (appended: the checkout itself has no compiled modules).
sys.path.append(str(REPO))

import hvdaemons  # noqa: E402
from hvdaemons.kvp.pool import record_bytes  # noqa: E402
from hvdaemons.protocol import fcopy as fcopy_proto  # noqa: E402
from hvdaemons.protocol.status import HvStatus  # noqa: E402
from hvsim import launch  # noqa: E402
from hvsim import uio as sim_uio  # noqa: E402
from hvsim.chardev import ChardevKernel  # noqa: E402
from hvsim.fcopy import FcopyHost  # noqa: E402
from hvsim.fsbox import FsBox, FsSpec  # noqa: E402
from hvsim.kvp import KvpHost  # noqa: E402
from hvsim.vss import VssHost  # noqa: E402
from tests.reference import refdaemons  # noqa: E402
from tests.support.fcopy import wait_listening  # noqa: E402
from tests.support.netns import NetNs  # noqa: E402

RELEASE = "bookworm"  # the release that ships all three reference daemons
GOAL_MIB = {"kvp": 12.0, "vss": 12.0, "fcopy": 14.0, "fcopy-uio": 14.0, "fcopy-uio-sys": 14.0}
NIC_MAC = "00:15:5d:00:00:42"
ENV_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon and RssFile of pid, in KiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[name] = int(rest.split()[0])
    return out


def mib(kib: int) -> str:
    return f"{kib / 1024:5.1f}"


# -- our daemons, installed as the .deb installs them ---------------------------------


def _build_module() -> object:
    spec = importlib.util.spec_from_file_location("hvd_build", REPO / "packaging" / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


class Install:
    """The installed package copied into a private directory, byte-compiled, with launchers."""

    def __init__(self, top: Path, python: str) -> None:
        build = _build_module()
        self.private = top / "private"
        shutil.copytree(
            os.path.dirname(hvdaemons.__file__),
            self.private / "hvdaemons",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        # As the package's postinst (py3compile) does, with the daemons' interpreter.
        subprocess.run([python, "-m", "compileall", "-q", str(self.private)], check=True)
        self.scripts = self.private / "hvdaemons" / "kvp" / "scripts"
        self.python = python
        self.bin = top / "sbin"
        self.bin.mkdir()
        launcher: str = build.LAUNCHER  # type: ignore[attr-defined]
        for name, module in launch.DAEMON_MODULES.items():
            names = [name] + (["hv_fcopy_uio_daemon"] if name == "hv_fcopy_daemon" else [])
            for prog in names:
                path = self.bin / prog
                text = launcher.format(
                    target=f"{module}:main", private=self.private, module=module, func="main"
                )
                if python != "/usr/bin/python3":
                    text = text.replace("#!/usr/bin/python3 -I", f"#!{python} -I", 1)
                path.write_text(text)
                path.chmod(0o755)

    def argv(self, prog: str, *args: str) -> list[str]:
        return [str(self.bin / prog), *args]


class Notifications:
    """$NOTIFY_SOCKET as systemd provides it: READY=1, STATUS= and WATCHDOG=1 are read and dropped.

    Read at once by a thread, as the service manager does: sd_notify blocks
    while the socket's queue (net.unix.max_dgram_qlen datagrams) is full.
    """

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.count = 0
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        try:
            while self.sock.recv(4096):
                self.count += 1
        except OSError:
            pass  # closed

    def env(self) -> dict[str, str]:
        return {"NOTIFY_SOCKET": self.path, "WATCHDOG_USEC": "60000000"}

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(5)


def base_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """A service's environment: PATH and what the caller adds, nothing of ours."""
    return {"PATH": ENV_PATH, "HVSHIM_NO_SYSLOG": "1", **(extra or {})}


# -- KVP ------------------------------------------------------------------------------


def seed_pools(state: Path, big: bool) -> None:
    small = b"".join(record_bytes(b"key%d" % i, b"value %d " % i * 10) for i in range(10))
    for n in (0, 1, 3, 4):
        (state / f".kvp_pool_{n}").write_bytes(small)
    (state / ".kvp_pool_2").write_bytes(b"")
    if big:
        (state / ".kvp_pool_1").write_bytes(
            b"".join(record_bytes(b"telemetry-%05d" % i, b"event %d " % i * 8) for i in range(5000))
        )


@contextmanager
def guest_network() -> Iterator[NetNs]:
    """A network namespace with one NIC (a veth end) configured as a guest's eth0."""
    ns = NetNs()
    try:
        ns.veth("eth0", NIC_MAC, "peer0", "00:15:5d:00:00:43")
        ns.ip("addr", "add", "192.0.2.10/24", "dev", "eth0")
        ns.ip("-6", "addr", "add", "2001:db8::10/64", "dev", "eth0")
        ns.ip("route", "add", "default", "via", "192.0.2.1", "dev", "eth0")
        yield ns
    finally:
        ns.delete()


def kvp_workload(host: KvpHost, big: bool) -> None:
    def ok(reply: object, what: str) -> None:
        st = getattr(reply, "status")  # noqa: B009
        if st not in (HvStatus.S_OK, HvStatus.S_CONT):
            raise RuntimeError(f"{what}: status 0x{st:08x}")

    for i in range(300):
        ok(host.set(i % 2, f"key{i % 20}", f"new value {i}"), "SET")
    for i in range(300):
        ok(host.get(i % 2, f"key{i % 20}"), "GET")
    for i in range(100):
        ok(host.delete(0, f"key{10 + i % 10}"), "DELETE")
    for i in range(300):
        ok(host.enumerate((0, 1, 3, 4)[i % 4], i % 12), "ENUMERATE")
    for _ in range(10):
        items, _end = host.enumerate_all(2)
        if len(items) != 10:
            raise RuntimeError(f"auto pool: {len(items)} items")
    for _ in range(3):
        reply = host.get_ip_info(NIC_MAC.upper())
        if reply.status != HvStatus.S_OK:
            raise RuntimeError(f"GET_IP_INFO: status 0x{reply.status:08x}")
    if big:
        for i in range(300):
            ok(host.get(1, f"telemetry-{(i * 7919) % 5000:05d}"), "GET (big pool)")
        for i in range(100):
            ok(host.set(1, f"telemetry-{(i * 7919) % 5000:05d}", f"updated {i}"), "SET (big pool)")


@contextmanager
def registered(
    argv: Sequence[str],
    env: dict[str, str],
    log_path: Path,
    kernel: ChardevKernel,
    what: str,
    popen: Callable[..., subprocess.Popen[bytes]] | None = None,
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """The daemon started (output to log_path) and registered with kernel: (it, VmRSS then).

    Stopped on leaving.  popen: how to start it (default: from /).
    """
    start = popen or functools.partial(subprocess.Popen, cwd="/")
    with open(log_path, "wb") as log:
        proc = start(list(argv), env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        if not kernel.wait_registered(60):
            raise RuntimeError(f"{what} did not register; see {log_path}")
        yield proc, status(proc.pid)["VmRSS"]
    finally:
        launch.stop(proc)


def kvp_run(who: str, inst: Install, work: Path, ns: NetNs, big: bool) -> dict[str, int]:
    tag = f"kvp-{who}-{'big' if big else 'small'}"
    sim, state = work / f"{tag}-sim", work / f"{tag}-state"
    sim.mkdir()
    state.mkdir()
    seed_pools(state, big)
    scripts = (
        inst.scripts
        if who == "ours"
        else refdaemons.ref_root() / RELEASE / "usr/libexec/hypervkvpd"
    )
    binds = {str(state): "/var/lib/hyperv", str(scripts): "/usr/libexec/hypervkvpd"}
    notes = Notifications(work / f"{tag}-notify")
    kernel = ChardevKernel(str(sim / "hv_kvp"), "hv_kvp", timeout=60)
    program = (
        inst.argv("hv_kvp_daemon", "--no-daemon")
        if who == "ours"
        else [str(refdaemons.ref_daemon(RELEASE, "hv_kvp_daemon")), "-n"]
    )
    env = base_env({"LD_PRELOAD": str(refdaemons.build_shim()), "HVSHIM_DIR": str(sim)})
    env.update(notes.env())
    argv = [
        "ip",
        "netns",
        "exec",
        ns.name,
        *refdaemons.sandbox_argv(program, tmpfs=(), binds=binds),
    ]
    try:
        with registered(argv, env, work / f"{tag}.log", kernel, f"KVP {who}") as (proc, started):
            kvp_workload(KvpHost(kernel), big)
            return {**status(proc.pid), "Started": started}
    finally:
        kernel.close()
        notes.close()


# -- VSS ------------------------------------------------------------------------------


def vss_run(who: str, inst: Install, box: FsBox, work: Path) -> dict[str, int]:
    d = Path(box.sim_dir) / f"rss-{who}"
    d.mkdir(exist_ok=True)
    kernel = ChardevKernel(str(d / "hv_vss"), "hv_vss")
    notes = Notifications(work / f"vss-{who}-notify")
    box.verify()  # nothing but our test filesystems, before any daemon runs
    if who == "ours":
        argv = inst.argv("hv_vss_daemon", "--no-daemon", "--device", kernel.path)
        env = base_env()
    else:
        argv = [str(refdaemons.ref_daemon(RELEASE, "hv_vss_daemon")), "-n"]
        env = base_env({"LD_PRELOAD": str(refdaemons.build_shim()), "HVSHIM_DIR": str(d)})
    env.update(notes.env())
    log_path = work / f"vss-{who}.log"
    try:
        with registered(argv, env, log_path, kernel, f"VSS {who}", box.popen) as (proc, started):
            host = VssHost(kernel)
            mps = box.image_mount_points()
            for _ in range(10):
                results = host.backup()
                if not all(r.ok for r in results) or len(results) != 3:
                    raise RuntimeError(f"VSS {who}: backup failed: {results}")
                if box.frozen(mps):
                    raise RuntimeError(f"VSS {who}: left frozen")
            return {**status(proc.pid), "Started": started}
    finally:
        if box.frozen(box.image_mount_points()):
            box.thaw(box.image_mount_points())
        kernel.close()
        notes.close()


# -- file copy ------------------------------------------------------------------------

COPY_SIZE = 8 << 20


def fcopy_legacy_run(who: str, inst: Install, work: Path, payload: bytes) -> dict[str, int]:
    d = work / f"fcopy-{who}"
    target = work / f"fcopy-{who}-target"
    d.mkdir()
    target.mkdir()
    kernel = ChardevKernel(str(d / "hv_fcopy"), "hv_fcopy", timeout=60)
    notes = Notifications(work / f"fcopy-{who}-notify")
    # Ours is given the simulated device (a socket) with --device: in the
    # sandbox there is no /dev/vmbus/hv_fcopy for it to find.
    program = (
        inst.argv("hv_fcopy_daemon", "--no-daemon", "--device", kernel.path)
        if who == "ours"
        else [str(refdaemons.ref_daemon(RELEASE, "hv_fcopy_daemon")), "-n"]
    )
    env = base_env({"LD_PRELOAD": str(refdaemons.build_shim()), "HVSHIM_DIR": str(d)})
    env.update(notes.env())
    argv = refdaemons.sandbox_argv(program)
    log_path = work / f"fcopy-{who}.log"
    try:
        with registered(argv, env, log_path, kernel, f"file copy {who}") as (proc, started):
            host = FcopyHost(kernel)
            for i in range(3):
                statuses = host.copy_file(
                    payload, str(target), f"big{i}.bin", fcopy_proto.OVER_WRITE
                )
                if set(statuses) != {HvStatus.S_OK}:
                    raise RuntimeError(f"file copy {who}: {statuses[:3]}...{statuses[-2:]}")
            for i in range(10):
                statuses = host.copy_file(b"small file %d\n" % i, str(target), f"small{i}.txt")
                if set(statuses) != {HvStatus.S_OK}:
                    raise RuntimeError(f"file copy {who}: {statuses}")
            return {**status(proc.pid), "Started": started}
    finally:
        kernel.close()
        notes.close()


def fcopy_uio_run(inst: Install, work: Path, payload: bytes, guest_paths: bool) -> dict[str, int]:
    tag = "uio-sys" if guest_paths else "uio"
    root = work / f"{tag}-sim"
    dest = work / f"{tag}-dest"
    src = work / f"{tag}-source.bin"
    src.write_bytes(payload)
    notes = Notifications(work / f"{tag}-notify")
    sim = sim_uio.UioSim(str(root))
    try:
        if guest_paths:
            # Offered once the daemon waits for it (below).
            argv = sim_uio.at_guest_paths(
                str(root), inst.argv("hv_fcopy_uio_daemon", "--no-daemon")
            )
        else:
            sim.offer()
            argv = inst.argv(
                "hv_fcopy_uio_daemon",
                "--no-daemon",
                "--sysfs-root",
                str(root / "sys"),
                "--dev-root",
                str(root / "dev"),
            )
        env = base_env(notes.env())
        with open(work / f"{tag}.log", "wb") as log:
            proc = subprocess.Popen(
                argv, cwd="/", env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        try:
            if guest_paths:
                # The device is offered once the daemon waits for it as on a
                # guest: listening to the kernel's uevents (its own proof that
                # it took a guest's discovery, not the simulator's options).
                if not wait_listening(proc):
                    raise RuntimeError(f"uio ({tag}): no uevent socket while waiting")
                sim.offer()
            host = sim_uio.UioHost(sim)
            sim_uio._wait_bound(sim, 30.0, proc)
            host.connect()
            st, _ = host.negotiate()
            if st != 0:
                raise RuntimeError(f"uio negotiation: status {st:#x}")
            started = status(proc.pid)["VmRSS"]
            for i, fast in enumerate((False, False, True)):
                result = host.copy_file(str(src), str(dest), f"copy{i}.bin", fast=fast)
                if not result.ok:
                    raise RuntimeError(f"uio copy {i}: {result}")
            return {**status(proc.pid), "Started": started}
        finally:
            launch.stop(proc)
    finally:
        sim.close()
        notes.close()


# -- what each import costs -----------------------------------------------------------

IMPORTS = {
    name: f"import {name}"
    for name in (
        "_cffi_backend",
        "enum",
        "re",
        "struct",
        "select",
        "socket",
        "threading",
        "logging",
        "argparse",
        "json",
        "subprocess",
        "typing",
        "dataclasses",
        "secrets",
        "shutil",
        "pyudev",
        "hvdaemons._ffi",
    )
}
# A parser built: argparse's asks shutil for the terminal width and calls
# gettext, which brings locale; the daemons' (hvdaemons.cli, on getopt) neither.
# The file-copy daemon's discovery on the real /sys: the scan and the kernel's
# uevent socket (pyudev, above, is what it would cost instead).
IMPORTS["argparse's parser"] = "import argparse; argparse.ArgumentParser()"
IMPORTS["cli.CommandLine"] = (
    "from hvdaemons import cli\n"
    "class A(cli.Args): __slots__ = ('no_daemon',)\n"
    "cli.CommandLine('p', 'd', cli.common_options(None)).parse(['-n'], A)"
)
IMPORTS["discovery on /sys"] = (
    "from hvdaemons.fcopy.discovery import make_discovery; make_discovery().fcopy_devices()"
)
DAEMON_IMPORTS = {
    "kvp": "hvdaemons.kvp.daemon",
    "vss": "hvdaemons.vss.daemon",
    "fcopy": "hvdaemons.fcopy.daemon",
}
# The standard library modules the daemons import themselves (the rest comes
# with these).  --imports says what each of these, and each module taken out
# of the daemons, costs imported last, on top of this set.
DAEMON_STDLIB = (
    "enum",
    "socket",
    "select",
    "signal",
    "struct",
    "threading",
    "fcntl",
    "zlib",
    "mmap",
    "contextlib",
    "syslog",
    "_cffi_backend",
)
TAKEN_OUT = ("logging", "argparse", "getopt", "json", "re", "subprocess", "shlex")

_PROBE = """
import sys
sys.path.insert(0, {private!r})
{code}
with open("/proc/self/status") as f:
    rss = int(f.read().split("VmRSS:")[1].split()[0])
print(rss, len(sys.modules))
"""


def probe(inst: Install, code: str) -> tuple[int, int]:
    """(VmRSS KiB, module count) after code in a fresh `python -I`: median of 3."""
    runs = []
    for _ in range(3):
        out = subprocess.run(
            [inst.python, "-I", "-c", _PROBE.format(private=str(inst.private), code=code)],
            cwd="/",
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        runs.append((int(out[0]), int(out[1])))
    return (int(statistics.median(r[0] for r in runs)), runs[0][1])


def import_costs(inst: Install) -> None:
    bare, bare_n = probe(inst, "pass")
    print(f"\nWhat an import costs ({inst.python} -I, VmRSS KiB over the base, median of 3)")
    print(f"  bare interpreter: {mib(bare)} MiB, {bare_n} modules")
    base = {k: probe(inst, f"import {m}") for k, m in DAEMON_IMPORTS.items()}
    for k, (kib, n) in base.items():
        print(f"  import {DAEMON_IMPORTS[k]}: {mib(kib)} MiB, {n} modules")
    head = f"  {'import':18} {'alone':>7}" + "".join(f" {'+' + k:>7}" for k in base)
    print(head)
    for name, code in IMPORTS.items():
        alone = probe(inst, code)[0] - bare
        row = f"  {name:18} {alone:7d}"
        for k, (kib, _n) in base.items():
            row += f" {probe(inst, f'import {DAEMON_IMPORTS[k]}; {code}')[0] - kib:7d}"
        print(row)
    print("  imported last, on top of the daemons' other standard library imports:")
    for m in ("enum", "socket", "threading", *TAKEN_OUT):
        others = "import " + ", ".join(x for x in DAEMON_STDLIB if x != m)
        without = probe(inst, others)[0]
        print(f"  {m:18} {probe(inst, f'{others}; import {m}')[0] - without:7d}")


# -- main -----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--python", default="/usr/bin/python3", help="our daemons' interpreter")
    p.add_argument("--imports", action="store_true", help="also print what each import costs")
    p.add_argument(
        "--only",
        default="kvp,kvp-big,vss,fcopy,fcopy-uio,fcopy-uio-sys",
        help="which rows (comma-separated)",
    )
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_rss: needs root (namespaces, loop devices, the daemons' default paths)")
        return 1
    refdaemons.ensure_reference()
    rows = args.only.split(",")
    results: dict[str, dict[str, dict[str, int]]] = {}
    payload = os.urandom(COPY_SIZE)
    with tempfile.TemporaryDirectory(prefix="bench-rss-") as tmp:
        work = Path(tmp)
        inst = Install(work, args.python)
        if "kvp" in rows or "kvp-big" in rows:
            with guest_network() as ns:
                for row, big in (("kvp", False), ("kvp-big", True)):
                    if row in rows:
                        results[row] = {w: kvp_run(w, inst, work, ns, big) for w in ("ref", "ours")}
        if "vss" in rows:
            specs = [FsSpec("fs0", size_mb=32), FsSpec("fs1", size_mb=32)]
            with FsBox(specs, sysfs=False) as box:
                results["vss"] = {w: vss_run(w, inst, box, work) for w in ("ref", "ours")}
        if "fcopy" in rows:
            results["fcopy"] = {
                w: fcopy_legacy_run(w, inst, work, payload) for w in ("ref", "ours")
            }
        for row in ("fcopy-uio", "fcopy-uio-sys"):
            if row in rows:
                guest_paths = row == "fcopy-uio-sys"
                results[row] = {"ours": fcopy_uio_run(inst, work, payload, guest_paths)}
        labels = {
            "kvp": "KVP, small pools",
            "kvp-big": "KVP, 5,000-record pool",
            "vss": "VSS, 10 backups",
            "fcopy": "file copy, char device",
            "fcopy-uio": "file copy, uio ring",
            "fcopy-uio-sys": "uio, guest paths",
        }
        print(
            f"\nVmRSS after the workload, MiB (ours: {args.python} -I; reference: Debian {RELEASE})"
        )
        print(
            f"  {'':24} {'reference':>9} {'ours':>6} {'(anon':>6} {'file)':>6} {'peak':>6}"
            f" {'start':>6} {'goal':>6}"
        )
        misses = []
        for row, res in results.items():
            ref = res.get("ref")
            ours = res["ours"]
            goal = GOAL_MIB.get(row)
            print(
                f"  {labels[row]:24} {mib(ref['VmRSS']) if ref else '    -':>9} {mib(ours['VmRSS']):>6}"
                f" {mib(ours['RssAnon']):>6} {mib(ours['RssFile']):>6} {mib(ours['VmHWM']):>6}"
                f" {mib(ours['Started']):>6}"
                f" {goal if goal and row != 'kvp-big' else '':>6}"
            )
            if goal and row != "kvp-big" and ours["VmRSS"] > goal * 1024:
                misses.append(f"{labels[row]}: {ours['VmRSS'] / 1024:.1f} MiB > {goal} MiB")
        for m in misses:
            print(f"  missed: {m}")
        if not misses:
            print("  all goals met")
        if args.imports:
            import_costs(inst)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
