# SPDX-License-Identifier: GPL-2.0-only
"""arm64 packages built on this amd64 machine and tested for real in an arm64
Debian bookworm root under qemu-user (``tox -e arm64``; not in the default run:
it needs root, the network, a foreign dpkg architecture and the cross tools
that ``packaging/install-build-deps.sh --arch arm64`` installs).

Two builds: ``packaging/build.py --arch arm64`` (the cffi modules compiled by
aarch64-linux-gnu-gcc against Debian's multiarch Python headers, packaged by
nfpm) and the Debian source package cross-built with ``dpkg-buildpackage -a
arm64`` in a clean root.  Each build's .debs are installed with apt into an
arm64 root (mmdebstrap, cached in .cache/packaging/) whose programs the kernel
runs through qemu-aarch64: the host's binfmt_misc entry if it has one, else a
private binfmt_misc in a user namespace (userns_binfmt.py, Linux >= 6.7), so
the host is left as it is.  There the modules import, tests/test_ring.py
passes, and the installed daemons serve the installed simulator: KVP, file
copy over the char device and over the uio ring for every kernel variant.

qemu-user on x86-64 runs the arm64 code with x86's stronger memory ordering:
a missing barrier in bindings/ring.c would not show here, only on arm64
hardware.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import (
    PACKAGING,
    REPO,
    ROOT_PACKAGES,
    Packages,
    Root,
    build,
    cached_root_tar,
    lintian_clean,
    need,
    rpmlint_clean,
    run,
    version,
)
from .distro import DebianBuild, build_debian
from .test_install import comm, daemon, host_copies, hvsim, simulator

pytestmark = pytest.mark.arm64

ARCH = "arm64"
TRIPLET = "aarch64-linux-gnu"
EM_AARCH64 = 0xB7
HERE = Path(__file__).resolve().parent
HOST_BINFMT = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
# The daemons' dependencies and pytest for tests/test_ring.py.
ROOT_TAR_PACKAGES = (*ROOT_PACKAGES, "python3-pytest")
PRIVATE = "/usr/lib/hvdaemons"
# The kernel variants of the uio channel (hvsim.uio.VARIANTS): ring bytes per
# direction and header size, and whether the daemon must write new_id.
UIO_VARIANTS = {
    "6.10": (0x4000, 4096, True),
    "6.15": (0x5000, 4096, True),
    "6.18": (0x5000, 4096, True),
    "7.2": (0x5000, 4096, False),
    "64k-pages": (0x20000, 0x10000, True),
}
FCOPY_CLASS_ID = "34d14be3-dee4-41c8-9ae7-6b174977c192"
S_OK = 0


def elf_machine(path: Path) -> int:
    head = path.read_bytes()[:20]
    assert head[:4] == b"\x7fELF", path
    return int.from_bytes(head[18:20], "little")


def deb_field(deb: Path, name: str) -> str:
    return run(["dpkg-deb", "-f", deb, name]).stdout.strip()


def deb_files(deb: Path) -> set[str]:
    """The paths in a .deb (dpkg-deb -c: mode, owner, size, date, time, path[ -> target])."""
    listing = run(["dpkg-deb", "-c", deb]).stdout.splitlines()
    return {line.split(maxsplit=5)[5].partition(" -> ")[0].lstrip(".") for line in listing}


def relations_but_libc(deb: Path) -> list[str]:
    """Depends without libc6, whose version follows the architecture's glibc symbols."""
    deps = [r.strip() for r in deb_field(deb, "Depends").split(",")]
    assert any(r.startswith("libc6 (>= ") for r in deps), deps
    return [r for r in deps if not r.startswith("libc6 ")]


# -- qemu-user: the host's binfmt_misc, or a private one ---------------------------


@pytest.fixture(scope="session")
def emulation() -> list[str]:
    """The command prefix under which the kernel runs arm64 programs."""
    need("qemu-aarch64-static")
    assert Path("/usr/share/binfmts/qemu-aarch64").is_file(), "qemu-user-static's binfmt rule"
    if HOST_BINFMT.is_file():
        entry = HOST_BINFMT.read_text().splitlines()
        flags = next((ln.split(":", 1)[1] for ln in entry if ln.startswith("flags:")), "")
        # F: the kernel opened qemu at registration, so it also runs in a chroot.
        if entry[0] == "enabled" and "F" in flags:
            return []
    return [sys.executable, str(HERE / "userns_binfmt.py"), ARCH]


class ForeignRoot(Root):
    """A root of another architecture: every command runs under `emulation`.
    In a user namespace no new proc can be mounted for the host's pid
    namespace, so the root gets the host's /proc (with the private
    binfmt_misc mounted on it) bound instead."""

    proc_mount = "mount --rbind /proc"

    def __init__(self, path: Path, emulation: Sequence[str]) -> None:
        super().__init__(path)
        self.emulation = list(emulation)

    def argv(self, cmd: Sequence[str], binds: Sequence[tuple[Path, str]] = ()) -> list[str]:
        return [*self.emulation, *super().argv(cmd, binds)]

    def python(self, code: str) -> subprocess.CompletedProcess[str]:
        """The root's python3 with the packages' private directory first."""
        return self.run(
            ["python3", "-c", code],
            env={"PYTHONPATH": PRIVATE, "PYTHONDONTWRITEBYTECODE": "1"},
            check=False,
        )


@pytest.fixture(scope="session")
def arm64_root_tar(emulation: list[str]) -> Path:
    """About 4-7 minutes the first time (every maintainer script runs under qemu)."""
    need("arch-test")  # mmdebstrap's check that the kernel runs arm64 programs
    return cached_root_tar("arm64-root", ROOT_TAR_PACKAGES, arch=ARCH, wrap=emulation, timeout=2400)


def fresh_root(tar: Path, path: Path, emulation: list[str]) -> ForeignRoot:
    path.mkdir()
    run(["tar", "--numeric-owner", "-xf", tar, "-C", path])
    return ForeignRoot(path, emulation)


# -- the two builds --------------------------------------------------------------------


@pytest.fixture(scope="session")
def arm64_packages(tmp_path_factory: pytest.TempPathFactory) -> Packages:
    return build(tmp_path_factory.mktemp("dist-arm64"), "1", arch=ARCH)


@pytest.fixture(scope="session")
def debian_cross_build(tmp_path_factory: pytest.TempPathFactory) -> DebianBuild:
    """dpkg-buildpackage -a arm64 of the release tarball plus debian/, in a
    clean bookworm root with crossbuild-essential-arm64 (about a minute with
    the build dependencies cached)."""
    return build_debian(tmp_path_factory.mktemp("debian-cross"), host_arch=ARCH)


def test_build_py_cross_compiles_for_arm64(arm64_packages: Packages, packages: Packages) -> None:
    v = version()
    assert arm64_packages.deb.name == f"hvdaemons_{v}-1_arm64.deb"
    assert arm64_packages.sim_deb.name == f"hvdaemons-sim_{v}-1_arm64.deb"
    assert arm64_packages.rpm.name == f"hvdaemons-{v}-1.aarch64.rpm"
    assert arm64_packages.sim_rpm.name == f"hvdaemons-sim-{v}-1.aarch64.rpm"
    for deb, native in (
        (arm64_packages.deb, packages.deb),
        (arm64_packages.sim_deb, packages.sim_deb),
    ):
        assert deb_field(deb, "Architecture") == ARCH
        # The same package for another machine: relations and file list.
        assert relations_but_libc(deb) == relations_but_libc(native)
        files = deb_files(deb)
        assert files == deb_files(native)
        assert "/usr/sbin/hv_fcopy_uio_daemon" in files or "/usr/bin/hvsim" in files
    for rpm in (arm64_packages.rpm, arm64_packages.sim_rpm):
        assert run(["rpm", "-qp", "--qf", "%{ARCH}", rpm]).stdout == "aarch64"
    requires = run(["rpm", "-qp", "--requires", arm64_packages.rpm]).stdout.splitlines()
    assert "libc.so.6()(64bit)" in requires


def extract(deb: Path, dest: Path) -> Path:
    dest.mkdir()
    run(["dpkg-deb", "-x", deb, dest])
    return dest


def test_build_py_modules_are_aarch64_and_hardened(
    arm64_packages: Packages, tmp_path: Path
) -> None:
    tree = extract(arm64_packages.deb, tmp_path / "deb")
    extract(arm64_packages.sim_deb, tree / "sim")
    modules = [
        *tree.glob("usr/lib/hvdaemons/hvdaemons/_hv.abi3.so"),
        *tree.glob("sim/usr/lib/hvdaemons/hvsim/_hvsim.abi3.so"),
    ]
    assert len(modules) == 2, modules
    for so in modules:
        assert elf_machine(so) == EM_AARCH64, so
        dyn = run(["readelf", "-d", so]).stdout
        assert "BIND_NOW" in dyn or ("FLAGS_1" in dyn and "NOW" in dyn)
        assert "GNU_RELRO" in run(["readelf", "-l", so]).stdout
        assert ".symtab" not in run(["readelf", "-S", so]).stdout  # stripped by the cross strip
        # The spin-wait hint of bindings/ring.c's cpu_relax(): yield, as the kernel's arm64 one.
        text = run([f"{TRIPLET}-objdump", "-d", so]).stdout
        assert re.search(r"\tyield\b", text), so


def test_build_py_lintian_and_rpmlint_clean(arm64_packages: Packages) -> None:
    lintian_clean(arm64_packages.deb, arm64_packages.sim_deb)
    rpmlint_clean(arm64_packages.rpm, arm64_packages.sim_rpm)


def path_without(tmp_path: Path, prefix: str) -> str:
    """A PATH with this machine's programs but those named prefix*."""
    farm = tmp_path / "bin"
    farm.mkdir()
    for d in ("/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"):
        for prog in sorted(Path(d).iterdir()) if Path(d).is_dir() else []:
            if not prog.name.startswith(prefix) and not (farm / prog.name).exists():
                (farm / prog.name).symlink_to(prog)
    nfpm = need("nfpm")
    return f"{farm}:{Path(nfpm).parent}"


def test_build_py_names_the_missing_cross_tools(tmp_path: Path) -> None:
    """Without the cross compiler: a clear message with the apt command, no package."""
    out = tmp_path / "dist"
    cp = run(
        [sys.executable, PACKAGING / "build.py", "--arch", ARCH, "--outdir", out],
        check=False,
        env=dict(os.environ, PATH=path_without(tmp_path, f"{TRIPLET}-")),
    )
    assert cp.returncode != 0
    assert f"missing: {TRIPLET}-gcc, {TRIPLET}-strip, {TRIPLET}-objdump" in cp.stderr, cp.stderr
    assert f"apt-get install gcc-{TRIPLET} " in cp.stderr, cp.stderr
    assert re.search(r"libpython3\.\d+-dev:arm64", cp.stderr), cp.stderr
    assert "Traceback" not in cp.stderr
    assert not out.exists() or not any(out.iterdir())


def test_fallback_hardening_flags_compile_for_arm64(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where dpkg-buildflags is missing, build.py's own flag set is used: it
    must suit the target (BTI/PAC on arm64, not x86's CET flag)."""
    spec = importlib.util.spec_from_file_location("hvdaemons_build_py", PACKAGING / "build.py")
    assert spec is not None and spec.loader is not None
    build_py = importlib.util.module_from_spec(spec)
    # Its dataclasses look their module up there.
    monkeypatch.setitem(sys.modules, spec.name, build_py)
    spec.loader.exec_module(build_py)
    target = build_py.target_for(ARCH, "x86_64")
    assert target.cross
    gcc = need(f"{TRIPLET}-gcc")
    with monkeypatch.context() as m:
        m.setenv("PATH", str(tmp_path))  # a machine without dpkg-buildflags
        flags = build_py.hardening_flags(tmp_path, target)
    assert "-mbranch-protection=standard" in flags["CFLAGS"]
    assert "-fcf-protection" not in flags["CFLAGS"]
    obj = tmp_path / "ring.o"
    run(
        [
            gcc,
            *flags["CFLAGS"].split(),
            *flags["CPPFLAGS"].split(),
            "-std=gnu11",
            "-I",
            REPO / "bindings",
            "-c",
            REPO / "bindings" / "ring.c",
            "-o",
            obj,
        ]
    )
    assert elf_machine(obj) == EM_AARCH64
    # -mbranch-protection=standard: BTI landing pads and return-address signing.
    text = run([f"{TRIPLET}-objdump", "-d", obj]).stdout
    assert re.search(r"\t(bti|hint\t#0x22|paciasp|hint\t#0x19)\b", text), text[:2000]


def test_debian_cross_build(debian_cross_build: DebianBuild) -> None:
    assert set(debian_cross_build.debs) == {
        "hvdaemons",
        "hvdaemons-sim",
        "hvdaemons-dbgsym",
        "hvdaemons-sim-dbgsym",
    }
    for deb in debian_cross_build.debs.values():
        assert deb.name.endswith("_arm64.deb"), deb
        assert deb_field(deb, "Architecture") == ARCH
    info = (debian_cross_build.out / f"hvdaemons_{version()}-1_{ARCH}.buildinfo").read_text()
    assert re.search(r"^Build-Architecture: amd64$", info, re.M), info[:800]
    log = (debian_cross_build.out / "build.log").read_text()
    assert f"dpkg-buildpackage: info: host architecture {ARCH}" in log
    # The modules compiled by the cross compiler, against the arm64 sysconfig.
    assert re.search(rf"^{TRIPLET}-gcc .*-c bindings/ring\.c", log, re.M), log[-3000:]
    lintian_clean(next(debian_cross_build.out.glob("*.changes")))


def test_debian_cross_build_modules_are_aarch64(
    debian_cross_build: DebianBuild, tmp_path: Path
) -> None:
    tree = extract(debian_cross_build.debs["hvdaemons"], tmp_path / "deb")
    extract(debian_cross_build.debs["hvdaemons-sim"], tree / "sim")
    modules = [*tree.rglob("_hv.*so"), *tree.rglob("_hvsim.*so")]
    assert len(modules) == 2, modules
    for so in modules:
        assert elf_machine(so) == EM_AARCH64, so


# -- installed in the arm64 root, run under qemu-user ----------------------------------


@dataclass
class Installed:
    build: str
    root: ForeignRoot


@pytest.fixture(scope="module", params=["build.py", "dpkg-buildpackage"])
def installed(
    request: pytest.FixtureRequest,
    arm64_root_tar: Path,
    emulation: list[str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Installed]:
    """A fresh arm64 root with both of one build's packages installed by apt."""
    if request.param == "build.py":
        p: Packages = request.getfixturevalue("arm64_packages")
        debs = [p.deb, p.sim_deb]
    else:
        d: DebianBuild = request.getfixturevalue("debian_cross_build")
        debs = [d.debs["hvdaemons"], d.debs["hvdaemons-sim"]]
    root = fresh_root(arm64_root_tar, tmp_path_factory.mktemp("arm64") / "root", emulation)
    cp = root.run(["dpkg", "--print-architecture"])
    assert cp.stdout.strip() == ARCH
    root.apt_install(*debs)
    yield Installed(request.param, root)
    shutil.rmtree(root.path, ignore_errors=True)


def test_installed_modules_import_on_arm64(installed: Installed) -> None:
    root = installed.root
    for pkg in ("hvdaemons", "hvdaemons-sim"):
        cp = root.run(["dpkg-query", "-W", "-f", "${db:Status-Abbrev}${Architecture}", pkg])
        assert cp.stdout.strip() == f"ii {ARCH}", cp.stdout
    cp = root.python(
        "import os, platform; import hvdaemons._hv as h, hvsim._hvsim as s; "
        "print(platform.machine(), os.uname().machine, h.__file__, s.__file__)"
    )
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert cp.stdout.split() == [
        "aarch64",
        "aarch64",
        f"{PRIVATE}/hvdaemons/_hv.abi3.so",
        f"{PRIVATE}/hvsim/_hvsim.abi3.so",
    ]
    # postinst's py3compile ran (under qemu) for both packages.
    for pkg in ("hvdaemons", "hvsim"):
        assert list((root / f"{PRIVATE}/{pkg}/__pycache__").glob("*.cpython-3*.pyc")), pkg
    for prog in ("hv_kvp_daemon", "hv_vss_daemon", "hv_fcopy_daemon", "hv_fcopy_uio_daemon"):
        cp = root.run([f"/usr/sbin/{prog}", "--help"], check=False)
        assert cp.returncode == 0 and prog in cp.stdout, cp.stdout + cp.stderr


def test_ring_tests_pass_on_arm64(installed: Installed) -> None:
    """tests/test_ring.py (not the slow soak) against the installed modules."""
    root = installed.root
    tree = root / "opt/hvdaemons-tests"
    (tree / "tests").mkdir(parents=True, exist_ok=True)
    shutil.copy2(REPO / "pyproject.toml", tree)
    for name in ("__init__.py", "conftest.py", "test_ring.py"):
        shutil.copy2(REPO / "tests" / name, tree / "tests")
    cp = root.run(
        [
            "sh",
            "-c",
            "cd /opt/hvdaemons-tests && python3 -m pytest -p no:cacheprovider -q tests/test_ring.py",
        ],
        env={"PYTHONPATH": PRIVATE, "PYTHONDONTWRITEBYTECODE": "1"},
        check=False,
        timeout=1200,
    )
    out = cp.stdout + cp.stderr
    print(out)
    assert cp.returncode == 0, out
    summary = out.strip().splitlines()[-1]
    m = re.search(r"(\d+) passed", summary)
    assert m and int(m.group(1)) >= 30, summary
    assert not re.search(r"skipped|failed|error", summary), summary


# Hang guards for the simulator's and the daemons' starts: qemu makes them slow.
START_TIMEOUT = 120.0


def test_kvp_end_to_end_on_arm64(installed: Installed, tmp_path: Path) -> None:
    root = installed.root
    simdir = tmp_path / "sim"
    simdir.mkdir()
    with (
        simulator(root, simdir, "kvp", START_TIMEOUT),
        daemon(root, simdir, "hv_kvp_daemon", "hv_kvp", START_TIMEOUT) as (proc, pid),
    ):
        # The launcher's name, as for the C daemon (the kernel names the process after it).
        assert comm(pid) == "hv_kvp_daemon"
        kvp = ("kvp", "--dir", "/run/hvsim")
        cp = hvsim(root, simdir, *kvp, "set", "--pool", "0", "Arm64Test", "from-qemu")
        assert cp.returncode == 0, cp.stdout + cp.stderr
        pool0 = (root / "var/lib/hyperv/.kvp_pool_0").read_bytes()
        assert b"Arm64Test\0" in pool0 and b"from-qemu\0" in pool0
        cp = hvsim(root, simdir, *kvp, "get", "--pool", "0", "Arm64Test")
        assert cp.returncode == 0 and "from-qemu" in cp.stdout, cp.stdout + cp.stderr
        # The guest's own items: the arm64 machine, the root's os-release.
        cp = hvsim(root, simdir, *kvp, "enumerate", "--pool", "2")
        assert cp.returncode == 0, cp.stdout + cp.stderr
        assert re.search(r"ProcessorArchitecture = aarch64$", cp.stdout, re.M), cp.stdout
        assert "Debian GNU/Linux" in cp.stdout, cp.stdout
        cp = hvsim(root, simdir, *kvp, "delete", "--pool", "0", "Arm64Test")
        assert cp.returncode == 0, cp.stdout + cp.stderr
        assert b"Arm64Test\0" not in (root / "var/lib/hyperv/.kvp_pool_0").read_bytes()
        assert proc.poll() is None


def test_fcopy_chardev_end_to_end_on_arm64(installed: Installed, tmp_path: Path) -> None:
    root = installed.root
    simdir = tmp_path / "sim"
    simdir.mkdir()
    payload = os.urandom(3_000_123)
    with (
        simulator(root, simdir, "fcopy", START_TIMEOUT),
        daemon(root, simdir, "hv_fcopy_daemon", "hv_fcopy", START_TIMEOUT),
    ):
        copy = host_copies(root, simdir, payload)
    assert copy.read_bytes() == payload


@pytest.mark.parametrize("variant", list(UIO_VARIANTS))
def test_fcopy_uio_end_to_end_on_arm64(installed: Installed, variant: str, tmp_path: Path) -> None:
    """hv_fcopy_uio_daemon on the simulated uio device of each kernel variant:
    the C ring code (bindings/ring.c) on both ends, spinning included."""
    root = installed.root
    work = tmp_path / "uio"
    work.mkdir()
    payload = os.urandom(1_048_699)  # not a multiple of a fragment
    (work / "src.bin").write_bytes(payload)
    shutil.copy2(HERE / "uio_copy.py", work)
    cp = root.run(
        ["python3", "/run/uio/uio_copy.py", variant, "/run/uio/src.bin", "/run/uio/dest"],
        binds=[(work, "/run/uio")],
        env={"PYTHONDONTWRITEBYTECODE": "1"},
        check=False,
        timeout=900,
    )
    lines = cp.stdout.strip().splitlines()
    assert lines, cp.stderr
    report = json.loads(lines[-1])
    log = "\n".join(report.get("log", []))
    assert cp.returncode == 0, cp.stdout + cp.stderr
    ring, header, needs_new_id = UIO_VARIANTS[variant]
    assert report["negotiate"] == S_OK, log
    assert report["versions"] == [[3, 0], [1, 1]], log
    assert report["new_id_writes"] == ([FCOPY_CLASS_ID] if needs_new_id else []), report
    assert f"ring {ring} bytes per direction, header {header}" in log, log
    fragments = -(-len(payload) // 6144)  # the daemon's DATA_FRAGMENT
    for name in ("host", "fast"):
        copy = report[name]
        assert copy["ok"] and copy["writes"] == fragments, (name, copy, log)
        assert (work / "dest" / f"{name}.bin").read_bytes() == payload, name
    assert report["exit"] == 0, log
