# SPDX-License-Identifier: GPL-2.0-only
"""hvdaemons.spec built by rpmbuild from the release tarball (rpmbuild -ta),
with Debian's rpm tools and a stand-in for Fedora's macro packages
(tests/packaging/fedora/macros.stand-in; packaging/README.md lists what only
a Fedora build root checks): packages, relations, scriptlets, rpmlint, the
file lists against the nfpm packages, and install/erase with rpm --root."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .conftest import PACKAGING, Packages, Root, run, version
from .distro import Entry, build_sdist, rpm_entries, rpm_packages, unexplained

FEDORA = Path(__file__).parent / "fedora"
UNITS = ("hv-kvp-daemon.service", "hv-vss-daemon.service", "hv-fcopy-daemon.service")


@pytest.fixture(scope="module")
def spec_rpms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Package name -> .rpm (the source package as "src")."""
    top = tmp_path_factory.mktemp("rpmbuild")
    sdist = build_sdist(top / "sdist")
    run(
        [
            "rpmbuild",
            "--load",
            FEDORA / "macros.stand-in",
            "--define",
            f"_stand_in_dir {FEDORA}",
            "--define",
            f"_topdir {top}",
            # Debian's rpm database knows none of Fedora's build requirements.
            "--nodeps",
            "-ta",
            sdist,
        ],
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8", "PIP_NO_INDEX": "1"},
    )
    found = rpm_packages(sorted((top / "RPMS").rglob("*.rpm")))
    (srpm,) = (top / "SRPMS").glob("*.src.rpm")
    found["src"] = srpm
    return found


def test_packages(spec_rpms: dict[str, Path]) -> None:
    assert set(spec_rpms) == {
        "src",
        "hvdaemons",
        "hvdaemons-sim",
        "hvdaemons-debuginfo",
        "hvdaemons-debugsource",
    }
    q = run(["rpm", "-qp", "--qf", "%{VERSION}-%{RELEASE}", spec_rpms["hvdaemons"]]).stdout
    assert q == f"{version()}-1"


def test_relations(spec_rpms: dict[str, Path]) -> None:
    requires = set(run(["rpm", "-qp", "--requires", spec_rpms["hvdaemons"]]).stdout.splitlines())
    assert {"python3-cffi", "python3-pyudev", "/usr/bin/python3"} <= requires
    # The .pyc files are compiled at build time for one Python version.
    assert any(re.fullmatch(r"python\(abi\) = 3\.\d+", r) for r in requires), requires
    conflicts = set(run(["rpm", "-qp", "--conflicts", spec_rpms["hvdaemons"]]).stdout.split())
    assert conflicts == {"hyperv-daemons", "hypervkvpd", "hypervvssd", "hypervfcopyd"}
    sim = run(["rpm", "-qp", "--requires", spec_rpms["hvdaemons-sim"]]).stdout.splitlines()
    assert f"hvdaemons(x86-64) = {version()}-1" in sim


def test_scriptlets(spec_rpms: dict[str, Path], packages: Packages) -> None:
    text = run(["rpm", "-qp", "--scripts", spec_rpms["hvdaemons"]]).stdout
    parts = re.split(r"^(\w+) scriptlet \(using /bin/sh\):$", text, flags=re.M)
    scripts = dict(zip(parts[1::2], parts[2::2]))
    assert set(scripts) == {"postinstall", "preuninstall", "postuninstall"}
    # %systemd_post/%systemd_preun/%systemd_postun_with_restart with every unit.
    for body in scripts.values():
        assert " ".join(UNITS) in body

    # The first install replays the devices through udev with the same
    # commands as the nfpm package's %post (packaging/scripts/rpm/post).
    def triggers(s: str) -> list[str]:
        return re.findall(r"udevadm trigger[^>|]*", s.replace("\\\n", " "))

    nfpm_post = (PACKAGING / "scripts" / "rpm" / "post").read_text()
    assert triggers(scripts["postinstall"]) and [
        " ".join(t.split()) for t in triggers(scripts["postinstall"])
    ] == [" ".join(t.split()) for t in triggers(nfpm_post)]
    cfg = run(["rpm", "-qpc", spec_rpms["hvdaemons"]]).stdout.split()
    assert cfg == ["/etc/chrony/conf.d/hvdaemons-ptp-hyperv.conf"]


def test_rpmlint_clean(spec_rpms: dict[str, Path]) -> None:
    # The -debuginfo/-debugsource packages are the build tools' own.
    checked = [spec_rpms[n] for n in ("hvdaemons", "hvdaemons-sim", "src")]
    cp = run(
        ["rpmlint", "-c", PACKAGING / "rpmlint.toml", "-r", FEDORA / "rpmlintrc", *checked],
        check=False,
    )
    out = cp.stdout + cp.stderr
    reported = re.findall(r"^(\S+): ([EW]): (\S+)", out, re.M)
    assert not reported, out


# Why the spec's packages differ from the nfpm ones, path by path.
PYC = re.compile(r"^/usr/lib/hvdaemons/.*(/__pycache__|\.pyc)$")
BUILD_ID = re.compile(r"^/usr/lib/\.build-id(/.*)?$")


def test_file_lists_match_nfpm(spec_rpms: dict[str, Path], packages: Packages) -> None:
    nfpm = rpm_packages(sorted(packages.rpm.parent.glob("*.rpm")))
    ours = {n: rpm_entries(spec_rpms[n]) for n in ("hvdaemons", "hvdaemons-sim")}
    theirs = {n: rpm_entries(p) for n, p in nfpm.items()}
    assert set(ours) == set(theirs)

    def explained(path: str, a: Entry | None, b: Entry | None) -> bool:
        if b is None and (PYC.match(path) or BUILD_ID.match(path)):
            # Fedora byte-compiles at build time (the .pyc are package files;
            # nfpm's %post compiles); rpmbuild adds build-id links.
            return True
        # rpm keeps shared objects executable, as Fedora ships them.
        return bool(path.endswith(".so") and a and b and (a.mode, b.mode) == (0o755, 0o644))

    for name in ours:
        # The compiled modules: built separately by each build.
        so = frozenset(p for p in ours[name] if p.endswith(".so"))
        diff = unexplained(ours[name], theirs[name], explained, ignore_content=so)
        assert not diff, (name, diff)
    # The comparison saw the programs, not just empty packages.
    assert (
        ours["hvdaemons"]["/usr/sbin/hv_kvp_daemon"]
        == theirs["hvdaemons"]["/usr/sbin/hv_kvp_daemon"]
    )
    assert ours["hvdaemons"]["/usr/sbin/hv_kvp_daemon"].kind == "file"


def test_rpm_install_run_erase(debian_root: Root, spec_rpms: dict[str, Path]) -> None:
    """rpm --root into a fresh Debian root (python3, cffi and pyudev there,
    not in an RPM database: --nodeps). The byte code is the package's own:
    running the programs writes none, and rpm -V stays clean."""
    r = str(debian_root.path)
    (debian_root / "usr/share/licenses").mkdir()
    before = debian_root.files()
    rpm = ["rpm", "--root", r, "--dbpath", "/var/lib/rpm", "--nodeps"]
    run([*rpm, "-i", spec_rpms["hvdaemons"], spec_rpms["hvdaemons-sim"]])
    installed = debian_root.files()
    for prog in ("hv_kvp_daemon", "hv_vss_daemon", "hv_fcopy_daemon", "hv_fcopy_uio_daemon"):
        cp = debian_root.run([f"/usr/sbin/{prog}", "--help"], check=False)
        assert cp.returncode == 0 and prog in cp.stdout, cp.stdout + cp.stderr
    debian_root.run(["hvctl", "--help"])
    debian_root.run(["hvsim", "--help"])
    assert debian_root.files() == installed
    verify = run([*rpm, "-V", "hvdaemons", "hvdaemons-sim"], check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    run([*rpm, "-e", "hvdaemons-sim", "hvdaemons"])
    after = debian_root.files()
    assert after == before, {"left": sorted(after - before), "lost": sorted(before - after)}
