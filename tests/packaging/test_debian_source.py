# SPDX-License-Identifier: GPL-2.0-only
"""The Debian source package built by Debian's own tools: the release tarball
plus debian/, dpkg-buildpackage -us -uc in a clean bookworm root (mmdebstrap
--variant=buildd, build dependencies from debian/control only, no network
during the build) by packaging/build-debian.sh. Then: lintian, the binary
packages and their relations, the file lists against the nfpm packages, and
the packages installed: byte code compiled at install, none written at run
time (help texts, a VSS request against the simulator), nothing left after
purge. About three minutes (the build dependencies are downloaded once into
.cache/packaging/)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .conftest import REPO, Packages, Root, lintian_clean, run, version
from .distro import DebianBuild, Entry, build_debian, deb_entries, deb_packages, unexplained
from .test_install import daemon, hvsim, simulator

PROGRAMS = ("hv_kvp_daemon", "hv_vss_daemon", "hv_fcopy_daemon", "hv_fcopy_uio_daemon")


@pytest.fixture(scope="session")
def debian_build(tmp_path_factory: pytest.TempPathFactory) -> DebianBuild:
    return build_debian(tmp_path_factory.mktemp("debian-build"))


def fields(path: Path) -> dict[str, str]:
    """A deb822 file's first paragraph, continuation lines joined."""
    out: dict[str, str] = {}
    key = ""
    for line in path.read_text().split("\n\n")[0].splitlines():
        if line[:1] in (" ", "\t") and key:
            out[key] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def names(relations: str) -> set[str]:
    return {
        re.split(r"[\s(:]", r.strip(), maxsplit=1)[0]
        for r in relations.replace("\n", " ").split(",")
        if r.strip()
    }


def test_built_offline_from_the_release_tarball(debian_build: DebianBuild) -> None:
    v = version()
    orig = debian_build.out / f"hvdaemons_{v}.orig.tar.gz"
    assert orig.read_bytes() == debian_build.sdist.read_bytes()
    dsc = fields(debian_build.out / f"hvdaemons_{v}-1.dsc")
    assert dsc["Format"] == "3.0 (quilt)"
    debian_tar = run(
        ["tar", "-tJf", debian_build.out / f"hvdaemons_{v}-1.debian.tar.xz"]
    ).stdout.split()
    assert debian_tar and all(n.startswith("debian/") for n in debian_tar), debian_tar
    # What the build ran with, as dpkg recorded it: the build dependencies of
    # debian/control (and what they pull in) and build-essential, but no pip.
    info = fields(next(debian_build.out.glob("*.buildinfo")))
    installed = names(info["Installed-Build-Depends"])
    control = fields(REPO / "debian" / "control")
    wanted = names(control["Build-Depends"]) - {"debhelper-compat", "dh-sequence-python3"}
    assert wanted <= installed, wanted - installed
    assert {"debhelper", "dh-python"} <= installed
    assert not {"python3-pip", "python3-virtualenv", "python3-venv"} & installed
    log = (debian_build.out / "build.log").read_text()
    # pybuild's PEP 517 build against Debian's setuptools and cffi.
    assert "-m build --skip-dependency-check --no-isolation --wheel" in log, log[-3000:]


def test_lintian_clean(debian_build: DebianBuild) -> None:
    lintian_clean(next(debian_build.out.glob("*.changes")))


def test_binary_packages(debian_build: DebianBuild, packages: Packages) -> None:
    # debhelper adds a -dbgsym package for each package with a compiled module.
    assert set(debian_build.debs) == {
        "hvdaemons",
        "hvdaemons-sim",
        "hvdaemons-dbgsym",
        "hvdaemons-sim-dbgsym",
    }
    info = {n: fields_of_deb(p) for n, p in debian_build.debs.items() if not n.endswith("-dbgsym")}
    v = f"{version()}-1"
    assert info["hvdaemons"]["Version"] == v
    deps = names(info["hvdaemons"]["Depends"])
    assert {"python3", "python3-pyudev", "python3-cffi-backend-api-min", "libc6"} <= deps, deps
    assert f"hvdaemons (= {v})" in info["hvdaemons-sim"]["Depends"]
    assert "python3-cffi-backend-api-max" in info["hvdaemons"]["Depends"]
    # The same relations to the distributions' C daemons as the nfpm package.
    nfpm = fields_of_deb(packages.deb)
    for field in ("Conflicts", "Replaces", "Provides", "Suggests", "Section"):
        assert names(info["hvdaemons"][field]) == names(nfpm[field]), field


def fields_of_deb(deb: Path) -> dict[str, str]:
    text = run(["dpkg-deb", "-f", deb]).stdout
    out: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        if line[:1] == " " and key:
            out[key] += "\n" + line.strip()
        else:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def test_file_lists_match_nfpm(debian_build: DebianBuild, packages: Packages) -> None:
    """Per binary package: the same paths, kinds, modes, symlink targets and
    contents as the nfpm-built packages, but for what is explained here."""
    ours = {n: deb_entries(p) for n, p in debian_build.debs.items() if not n.endswith("-dbgsym")}
    theirs = {
        n: deb_entries(p)
        for n, p in deb_packages(sorted(packages.deb.parent.glob("*.deb"))).items()
    }
    assert set(ours) == set(theirs)

    def explained(path: str, a: Entry | None, b: Entry | None) -> bool:
        if b is None and re.fullmatch(
            r"/usr/share/python3(/runtime\.d(/[\w-]+\.rtupdate)?)?", path
        ):
            # dh_python3: re-compiles the private directory when Debian's
            # default python3 changes.
            return True
        # dh_installman turns the ".so" page into a symlink.
        return (
            path == "/usr/share/man/man8/hv_fcopy_uio_daemon.8.gz"
            and a == Entry("symlink", 0, "hv_fcopy_daemon.8.gz")
            and b is not None
            and b.kind == "file"
        )

    for name in ours:
        generated = frozenset(
            [p for p in ours[name] if p.endswith(".so")]
            # debian/changelog vs build.py's entry.
            + [f"/usr/share/doc/{name}/changelog.Debian.gz"]
        )
        diff = unexplained(ours[name], theirs[name], explained, ignore_content=generated)
        assert not diff, (name, diff)
    assert ours["hvdaemons"]["/usr/sbin/hv_kvp_daemon"].kind == "file"


def test_install_compiles_once_and_runs_without_writing(
    debian_root: Root, debian_build: DebianBuild, tmp_path: Path
) -> None:
    before = debian_root.files()
    debian_root.apt_install(debian_build.debs["hvdaemons"], debian_build.debs["hvdaemons-sim"])
    installed = debian_root.files()
    # py3compile (postinst) compiled every module of both packages.
    private = debian_root / "usr/lib/hvdaemons"
    sources = sorted(private.rglob("*.py"))
    assert len(sources) > 20
    for py in sources:
        assert list((py.parent / "__pycache__").glob(py.stem + ".cpython-3*.pyc")), py

    for prog in PROGRAMS:
        cp = debian_root.run([f"/usr/sbin/{prog}", "--help"], check=False)
        assert cp.returncode == 0 and prog in cp.stdout, cp.stdout + cp.stderr
    debian_root.run(["hvctl", "--help"])
    debian_root.run(["hvsim", "--help"])
    # A VSS request that freezes nothing (HOT_BACKUP: the daemon's
    # capabilities) through the installed daemon and simulator.
    simdir = tmp_path / "sim"
    simdir.mkdir()
    with (
        simulator(debian_root, simdir, "vss"),
        daemon(debian_root, simdir, "hv_vss_daemon", "hv_vss"),
    ):
        cp = hvsim(debian_root, simdir, "vss", "--dir", "/run/hvsim", "hot-backup")
        assert cp.returncode == 0 and "HOT_BACKUP" in cp.stdout.upper().replace("-", "_"), (
            cp.stdout + cp.stderr
        )
    written = debian_root.files() - installed
    assert not written, sorted(written)

    debian_root.run(["apt-get", "purge", "-y", "hvdaemons-sim", "hvdaemons"])
    after = debian_root.files()
    assert after == before, {"left": sorted(after - before), "lost": sorted(before - after)}
