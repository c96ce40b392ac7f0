# SPDX-License-Identifier: GPL-2.0-only
"""Fixtures for the packaging tests: the .deb/.rpm built once per session by
packaging/build.py, their extracted trees, and a cached minimal Debian root
(mmdebstrap) to install them into.

Everything here needs root (chroot, mount namespaces) and the tools that
.ci/run installs: nfpm, dpkg-dev, rpm, lintian, rpmlint, mmdebstrap, udev,
systemd. A missing tool is a failure, never a skip.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGING = REPO / "packaging"
CACHE = REPO / ".cache" / "packaging"
SUITE = "bookworm"


def mirror() -> str:
    """The Debian archive this machine's apt is configured with (never a hard-coded host)."""
    for f in [
        Path("/etc/apt/sources.list"),
        *sorted(Path("/etc/apt/sources.list.d").glob("*.list")),
    ]:
        if not f.is_file():
            continue
        for line in f.read_text(encoding="utf-8").splitlines():
            words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
            if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE:
                return words[1]
    for f in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for stanza in f.read_text(encoding="utf-8").split("\n\n"):
            fields = dict(
                (k.strip(), v.strip())
                for k, _, v in (ln.partition(":") for ln in stanza.splitlines())
                if v
            )
            if (
                SUITE in fields.get("Suites", "").split()
                and "deb" in fields.get("Types", "").split()
            ):
                return fields["URIs"].split()[0]
    raise AssertionError(f"no apt source for {SUITE} configured on this machine")


# What the package depends on, preinstalled so that apt resolves offline.
ROOT_PACKAGES = ("python3", "python3-cffi-backend", "python3-pyudev")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "packaging: builds and installs the .deb/.rpm (root, nfpm, lintian, ...)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Everything below tests/packaging carries the marker, so a run can
    # select (-m packaging) or leave out (-m "not packaging") these tests.
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.packaging)


def version() -> str:
    text = (REPO / "hvdaemons" / "__init__.py").read_text(encoding="utf-8")
    m = re.search(r'^__version__\s*=\s*"([^"]+)"', text, re.M)
    assert m, "no __version__ in hvdaemons/__init__.py"
    return m.group(1)


def run(
    cmd: Sequence[str | os.PathLike[str]], *, check: bool = True, timeout: float = 600, **kw: object
) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing text output; on failure show all of it."""
    cp: subprocess.CompletedProcess[str] = subprocess.run(  # type: ignore[call-overload]
        [str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw
    )
    if check and cp.returncode != 0:
        raise AssertionError(
            f"{cmd!r} exited {cp.returncode}\nstdout:\n{cp.stdout}\nstderr:\n{cp.stderr}"
        )
    return cp


def need(tool: str) -> str:
    path = shutil.which(tool)
    assert path, f"{tool} is required for the packaging tests (see .ci/run)"
    return path


def lintian_clean(*paths: Path) -> None:
    """lintian finds no error or warning in the .debs (or a .changes)."""
    cp = run(
        ["lintian", "--fail-on", "error,warning", "--display-level", ">=warning", *paths],
        check=False,
    )
    out = cp.stdout + cp.stderr
    assert cp.returncode == 0, out
    assert not re.search(r"^[EW]: ", out, re.M), out


def rpmlint_clean(*rpms: Path) -> None:
    """rpmlint (with packaging/rpmlint.toml) finds no error or warning."""
    cp = run(["rpmlint", "-c", PACKAGING / "rpmlint.toml", *rpms], check=False)
    out = cp.stdout + cp.stderr
    assert cp.returncode == 0, out
    assert f"{len(rpms)} packages and 0 specfiles checked; 0 errors, 0 warnings" in out, out


@dataclass(frozen=True)
class Packages:
    """The daemons' packages (deb, rpm) and the simulator's (sim_deb, sim_rpm)."""

    deb: Path
    rpm: Path
    sim_deb: Path
    sim_rpm: Path
    release: str


def build(
    outdir: Path, release: str, formats: str = "deb,rpm", arch: str | None = None
) -> Packages:
    need("nfpm")
    cp = run(
        [
            sys.executable,
            PACKAGING / "build.py",
            "--release",
            release,
            "--formats",
            formats,
            "--outdir",
            outdir,
            *(["--arch", arch] if arch else []),
        ]
    )
    outs = [Path(line) for line in cp.stdout.split()]

    def find(prefix: str, suffix: str) -> Path:
        found = [p for p in outs if p.name.startswith(prefix) and p.suffix == suffix]
        assert len(found) == 1, (prefix, suffix, outs)
        return found[0]

    return Packages(
        find("hvdaemons_", ".deb"),
        find(f"hvdaemons-{version()}-", ".rpm"),
        find("hvdaemons-sim_", ".deb"),
        find(f"hvdaemons-sim-{version()}-", ".rpm"),
        release,
    )


@pytest.fixture(scope="session")
def packages(tmp_path_factory: pytest.TempPathFactory) -> Packages:
    """This tree's packages (release 1), built with the one documented command."""
    return build(tmp_path_factory.mktemp("dist"), "1")


@pytest.fixture(scope="session")
def previous_packages(tmp_path_factory: pytest.TempPathFactory) -> Packages:
    """An older build of the same tree (release 0): what an upgrade starts from."""
    return build(tmp_path_factory.mktemp("dist-prev"), "0", "deb,rpm")


@pytest.fixture(scope="session")
def deb_tree(packages: Packages, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The daemons' .deb's files, extracted."""
    d = tmp_path_factory.mktemp("deb-tree")
    run(["dpkg-deb", "-x", packages.deb, d])
    return d


@pytest.fixture(scope="session")
def sim_deb_tree(packages: Packages, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The simulator's .deb's files, extracted."""
    d = tmp_path_factory.mktemp("sim-deb-tree")
    run(["dpkg-deb", "-x", packages.sim_deb, d])
    return d


def cached_root_tar(
    name: str,
    packages: Sequence[str],
    variant: str = "apt",
    *,
    arch: str | None = None,
    wrap: Sequence[str] = (),
    timeout: float = 1200,
) -> Path:
    """A minimal bookworm root (mmdebstrap's variant) with packages, made once
    with mmdebstrap and cached as .cache/packaging/<SUITE>-<name>.tar.
    arch: another architecture's root (mmdebstrap runs its programs through
    binfmt_misc), wrap: the command mmdebstrap runs under (e.g. one that
    provides that binfmt_misc)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    tar = CACHE / f"{SUITE}-{name}.tar"
    if not tar.exists():
        need("mmdebstrap")
        tmp = tar.with_suffix(".tmp.tar")
        run(
            [
                *wrap,
                "mmdebstrap",
                f"--variant={variant}",
                *([f"--arch={arch}"] if arch else []),
                *(["--include=" + ",".join(packages)] if packages else []),
                SUITE,
                tmp,
                f"deb {mirror()} {SUITE} main",
            ],
            timeout=timeout,
        )
        tmp.rename(tar)
    return tar


@pytest.fixture(scope="session")
def debian_root_tar() -> Path:
    """The package's dependencies only (about 30 s the first time)."""
    return cached_root_tar("root", ROOT_PACKAGES)


@pytest.fixture(scope="session")
def hyperv_daemons_deb() -> Path:
    """Debian's own hyperv-daemons (C daemons): what ours must replace and be
    replaced by."""
    d = CACHE / "debs"
    d.mkdir(parents=True, exist_ok=True)
    found = sorted(d.glob("hyperv-daemons_*.deb"))
    if not found:
        run(["apt-get", "download", "hyperv-daemons"], cwd=d)
        found = sorted(d.glob("hyperv-daemons_*.deb"))
    assert found, "apt-get download hyperv-daemons produced nothing"
    return found[-1]


class Root:
    """A fresh Debian root; commands run chrooted in a private mount namespace
    with /proc and /dev mounted, so nothing leaks to the host."""

    # How /proc gets into the root (ForeignRoot binds the host's instead).
    proc_mount = "mount -t proc proc"

    def __init__(self, path: Path) -> None:
        self.path = path

    def __truediv__(self, rel: str) -> Path:
        return self.path / rel.lstrip("/")

    def argv(self, cmd: Sequence[str], binds: Sequence[tuple[Path, str]] = ()) -> list[str]:
        """cmd chrooted into the root, in a mount namespace of its own."""
        r = str(self.path)
        mounts = [f"{self.proc_mount} {r}/proc", f"mount --rbind /dev {r}/dev"]
        for src, dst in binds:
            mounts.append(f"mkdir -p {r}{dst} && mount --bind {src} {r}{dst}")
        script = " && ".join(mounts) + ' && exec chroot "$0" "$@"'
        return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, r, *cmd]

    def run(
        self,
        cmd: Sequence[str],
        *,
        binds: Sequence[tuple[Path, str]] = (),
        check: bool = True,
        env: dict[str, str] | None = None,
        timeout: float = 600,
    ) -> subprocess.CompletedProcess[str]:
        full_env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "LC_ALL": "C.UTF-8",
            "DEBIAN_FRONTEND": "noninteractive",
            **(env or {}),
        }
        return run(
            self.argv(cmd, binds),
            check=check,
            env=full_env,
            timeout=timeout,
        )

    def popen(
        self,
        cmd: Sequence[str],
        *,
        binds: Sequence[tuple[Path, str]] = (),
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[str]:
        full_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8", **(env or {})}
        return subprocess.Popen(
            self.argv(cmd, binds),
            env=full_env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def apt_install(self, *debs: Path) -> subprocess.CompletedProcess[str]:
        """apt-get install of local .deb files, offline (dependencies are in the root)."""
        names = []
        for deb in debs:
            shutil.copy2(deb, self / "tmp" / deb.name)
            names.append(f"/tmp/{deb.name}")
        return self.run(
            [
                "apt-get",
                "install",
                "-y",
                "--no-install-recommends",
                "-o",
                "Debug::pkgProblemResolver=0",
                *names,
            ]
        )

    def files(self) -> set[str]:
        """Every path in the root except the package manager's own state."""
        skip = (
            "var/lib/dpkg/",
            "var/lib/apt/",
            "var/cache/",
            "var/log/",
            "tmp/",
            "proc/",
            "dev/",
            "run/",
            "var/lib/rpm/",
            "usr/lib/sysimage/",
        )
        out = set()
        for dirpath, dirnames, filenames in os.walk(self.path):
            rel = os.path.relpath(dirpath, self.path)
            rel = "" if rel == "." else rel + "/"
            if rel.startswith(skip):
                dirnames[:] = []
                continue
            for n in dirnames + filenames:
                if (rel + n + "/").startswith(skip):
                    continue
                out.add(rel + n)
        return out


@pytest.fixture
def debian_root(debian_root_tar: Path, tmp_path: Path) -> Iterator[Root]:
    root = tmp_path / "root"
    root.mkdir()
    run(["tar", "--numeric-owner", "-xf", debian_root_tar, "-C", root])
    yield Root(root)
    shutil.rmtree(root, ignore_errors=True)
