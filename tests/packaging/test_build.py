# SPDX-License-Identifier: GPL-2.0-only
"""The packages built by packaging/build.py: hvdaemons (the daemons) and
hvdaemons-sim (the simulator), names and version from hvdaemons/__init__.py,
relations, contents (the daemons' package holds no simulator file),
maintainer scripts, and a clean bill from lintian and rpmlint (remaining tags
are overridden with reasons in packaging/lintian-overrides*,
packaging/rpmlint.toml)."""

from __future__ import annotations

import re
from pathlib import Path

from .conftest import PACKAGING, Packages, lintian_clean, rpmlint_clean, run, version

SBIN = ("hv_kvp_daemon", "hv_vss_daemon", "hv_fcopy_daemon", "hv_fcopy_uio_daemon")


def deb_field(deb: Path, name: str) -> str:
    return run(["dpkg-deb", "-f", deb, name]).stdout.strip()


def relations(text: str) -> list[str]:
    return [r.strip() for r in text.split(",") if r.strip()]


def test_names_and_version_come_from_the_package(packages: Packages) -> None:
    v = version()
    assert packages.deb.name == f"hvdaemons_{v}-1_amd64.deb"
    assert packages.rpm.name == f"hvdaemons-{v}-1.x86_64.rpm"
    assert packages.sim_deb.name == f"hvdaemons-sim_{v}-1_amd64.deb"
    assert packages.sim_rpm.name == f"hvdaemons-sim-{v}-1.x86_64.rpm"
    for deb, name in ((packages.deb, "hvdaemons"), (packages.sim_deb, "hvdaemons-sim")):
        assert deb_field(deb, "Package") == name
        assert deb_field(deb, "Version") == f"{v}-1"
        assert deb_field(deb, "Architecture") == "amd64"
    for rpm, name in ((packages.rpm, "hvdaemons"), (packages.sim_rpm, "hvdaemons-sim")):
        q = run(["rpm", "-qp", "--qf", "%{NAME} %{VERSION} %{RELEASE} %{ARCH}", rpm]).stdout
        assert q == f"{name} {v} 1 x86_64"


def test_deb_relations(packages: Packages) -> None:
    deps = relations(deb_field(packages.deb, "Depends"))
    # Distribution packages only; the compiled module is stable-ABI (abi3).
    assert "python3 (>= 3.9)" in deps
    assert {"python3-cffi-backend", "python3-pyudev"} <= set(deps)
    assert any(d.startswith("libc6 (>= ") for d in deps)
    assert any(d.startswith("python3-cffi-backend-api-min (<= ") for d in deps)
    # Replaces Debian's hyperv-daemons (and Ubuntu's equivalent) both ways.
    for field in ("Conflicts", "Replaces"):
        assert {"hyperv-daemons", "linux-cloud-tools-common"} <= set(
            relations(deb_field(packages.deb, field))
        )
    assert relations(deb_field(packages.deb, "Provides")) == ["hyperv-daemons"]


def test_sim_deb_relations(packages: Packages) -> None:
    v = version()
    deps = relations(deb_field(packages.sim_deb, "Depends"))
    # The daemons of the very same build, and what its own compiled module needs.
    assert deps[0] == f"hvdaemons (= {v}-1)"
    assert {"python3 (>= 3.9)", "python3-cffi-backend"} <= set(deps)
    assert any(d.startswith("libc6 (>= ") for d in deps)
    assert relations(deb_field(packages.sim_deb, "Recommends")) == ["e2fsprogs", "xfsprogs"]
    # Takes /usr/bin/hvsim over from builds that shipped it inside hvdaemons.
    for field in ("Breaks", "Replaces"):
        assert relations(deb_field(packages.sim_deb, field)) == [f"hvdaemons (<< {v}-1)"]


def test_rpm_relations(packages: Packages) -> None:
    requires = run(["rpm", "-qp", "--requires", packages.rpm]).stdout.splitlines()
    assert {"python3 >= 3.9", "python3-cffi", "python3-pyudev", "/usr/bin/python3"} <= set(requires)
    assert "libc.so.6()(64bit)" in requires
    conflicts = set(run(["rpm", "-qp", "--conflicts", packages.rpm]).stdout.splitlines())
    assert conflicts == {"hyperv-daemons", "hypervkvpd", "hypervvssd", "hypervfcopyd"}
    # Conflicts, not Obsoletes: swapping back to RHEL's packages must be possible.
    assert run(["rpm", "-qp", "--obsoletes", packages.rpm]).stdout.strip() == ""
    sim = run(["rpm", "-qp", "--requires", packages.sim_rpm]).stdout.splitlines()
    assert f"hvdaemons = {version()}-1" in sim
    assert {"python3 >= 3.9", "python3-cffi", "/usr/bin/python3"} <= set(sim)


def test_rpm_file_list(packages: Packages) -> None:
    files = set(run(["rpm", "-qpl", packages.rpm]).stdout.splitlines())
    expected = {
        *(f"/usr/sbin/{b}" for b in SBIN),
        "/usr/bin/hvctl",
        "/usr/lib/systemd/system/hv-kvp-daemon.service",
        "/usr/lib/systemd/system/hypervkvpd.service",
        "/usr/lib/udev/rules.d/70-hv-kvp.rules",
        "/usr/lib/udev/rules.d/70-hv-fcopy.rules",
        "/usr/lib/udev/rules.d/70-hv-ptp.rules",
        "/usr/lib/udev/rules.d/70-hv-vss.rules",
        "/etc/chrony/conf.d/hvdaemons-ptp-hyperv.conf",
        "/var/lib/hyperv",
        "/usr/libexec/hvdaemons/chrony-ptp-hyperv",
        "/usr/lib/hvdaemons/hvdaemons/__init__.py",
    }
    assert expected <= files, expected - files
    assert any(re.fullmatch(r"/usr/lib/hvdaemons/hvdaemons/_hv\..*\.so", f) for f in files)
    # A man page for every program (rpmlint 2.4 cannot tell, see rpmlint.toml).
    docs = set(run(["rpm", "-qpd", packages.rpm]).stdout.splitlines())
    for b in SBIN:
        assert f"/usr/share/man/man8/{b}.8.gz" in docs
    assert "/usr/share/man/man1/hvctl.1.gz" in docs
    # Helper scripts where KvpPaths.scripts_dir points, executable, no ".sh".
    listing = run(["rpm", "-qplv", packages.rpm]).stdout
    scripts = re.findall(r"^(-\S+) .* (/usr/libexec/hypervkvpd/\S+)$", listing, re.M)
    assert scripts, "no KVP helper scripts packaged"
    for mode, path in scripts:
        assert mode.startswith("-rwxr-xr-x") and not path.endswith(".sh"), (mode, path)
    # Nothing that is not meant for the target system.
    assert not [f for f in files if "/tests/" in f or f.endswith((".pyc", ".c", ".h"))]
    assert not [f for f in files if f.startswith("/usr/lib/hvdaemons/hvdaemons/kvp/scripts")]


def test_rpm_scripts(packages: Packages) -> None:
    text = run(["rpm", "-qp", "--scripts", packages.rpm]).stdout
    parts = re.split(r"^(\w+) scriptlet \(using /bin/sh\):$", text, flags=re.M)
    scripts = dict(zip(parts[1::2], parts[2::2]))
    assert set(scripts) == {"postinstall", "preuninstall", "postuninstall"}
    assert "udevadm trigger" in scripts["postinstall"] and '"$1" -eq 1' in scripts["postinstall"]
    assert "systemctl stop hv-kvp-daemon.service" in scripts["preuninstall"]
    assert "try-restart hv-kvp-daemon.service" in scripts["postuninstall"]
    assert "daemon-reload" in scripts["postuninstall"]
    for body in scripts.values():
        assert "[ -d /run/systemd/system ]" in body or "systemctl" not in body
    cfg = run(["rpm", "-qpc", packages.rpm]).stdout.split()
    assert cfg == ["/etc/chrony/conf.d/hvdaemons-ptp-hyperv.conf"]


def simulator_files(files: set[str]) -> list[str]:
    return sorted(f for f in files if "hvsim" in f or "_hvsim" in f)


def test_the_daemons_package_carries_no_simulator_file(packages: Packages, deb_tree: Path) -> None:
    deb_files = {"/" + str(p.relative_to(deb_tree)) for p in deb_tree.rglob("*")}
    rpm_files = set(run(["rpm", "-qpl", packages.rpm]).stdout.splitlines())
    assert "/usr/lib/hvdaemons/hvdaemons/_ffi.py" in deb_files & rpm_files  # real listings
    assert simulator_files(deb_files) == []
    assert simulator_files(rpm_files) == []
    # Nor does its metadata announce a simulator command.
    (meta,) = (deb_tree / "usr/lib/hvdaemons").glob("*.dist-info")
    assert "hvsim" not in (meta / "entry_points.txt").read_text()
    assert "hvsim" not in (meta / "top_level.txt").read_text()


def test_the_simulator_package_holds_the_simulator(packages: Packages, sim_deb_tree: Path) -> None:
    deb = {
        "/" + str(p.relative_to(sim_deb_tree)) for p in sim_deb_tree.rglob("*") if not p.is_dir()
    }
    rpm = set(run(["rpm", "-qpl", packages.sim_rpm]).stdout.splitlines())
    for files, doc in ((deb, "/usr/share/doc/hvdaemons-sim/"), (rpm, "/usr/share/licenses/")):
        assert {"/usr/bin/hvsim", "/usr/share/man/man1/hvsim.1.gz"} <= files
        assert any(re.fullmatch(r"/usr/lib/hvdaemons/hvsim/_hvsim\..*\.so", f) for f in files)
        assert "/usr/lib/hvdaemons/hvsim/cli.py" in files
        # Nothing of the daemons' package: only the simulator and its docs.
        others = [
            f
            for f in files
            if not f.startswith(("/usr/lib/hvdaemons/hvsim", doc, "/usr/share/lintian/"))
            and f
            not in {
                "/usr/bin/hvsim",
                "/usr/share/man/man1/hvsim.1.gz",
                "/usr/share/doc/hvdaemons-sim/changelog.Debian.gz",
            }
        ]
        assert others == [], others
    assert "/usr/lib/hvdaemons/hvdaemons/__init__.py" not in deb | rpm


def test_compiled_modules_are_hardened(deb_tree: Path, sim_deb_tree: Path) -> None:
    for so in (
        next((deb_tree / "usr/lib/hvdaemons/hvdaemons").glob("_hv.*so")),
        next((sim_deb_tree / "usr/lib/hvdaemons/hvsim").glob("_hvsim.*so")),
    ):
        dyn = run(["readelf", "-d", so]).stdout
        assert "RPATH" not in dyn and "RUNPATH" not in dyn
        assert "BIND_NOW" in dyn or ("FLAGS_1" in dyn and "NOW" in dyn)
        assert "GNU_RELRO" in run(["readelf", "-l", so]).stdout
        assert ".symtab" not in run(["readelf", "-S", so]).stdout  # stripped


def test_launchers(deb_tree: Path, sim_deb_tree: Path) -> None:
    """Upstream binary names in /usr/sbin, python3 from the distribution, the
    private module directory first on sys.path."""
    entry = {
        "hv_kvp_daemon": "hvdaemons.kvp.daemon",
        "hv_vss_daemon": "hvdaemons.vss.daemon",
        "hv_fcopy_daemon": "hvdaemons.fcopy.daemon",
    }
    for name, module in entry.items():
        text = (deb_tree / "usr/sbin" / name).read_text()
        assert text.startswith("#!/usr/bin/python3 -I\n")
        assert 'sys.path.insert(0, "/usr/lib/hvdaemons")' in text
        assert f"from {module} import main" in text
    uio = deb_tree / "usr/sbin/hv_fcopy_uio_daemon"
    assert uio.is_symlink() and str(uio.readlink()) == "hv_fcopy_daemon"
    assert "from hvdaemons.ctl.main import main" in (deb_tree / "usr/bin/hvctl").read_text()
    hvsim = (sim_deb_tree / "usr/bin/hvsim").read_text()
    assert hvsim.startswith("#!/usr/bin/python3 -I\n")
    assert 'sys.path.insert(0, "/usr/lib/hvdaemons")' in hvsim
    assert "from hvsim.cli import main" in hvsim


def test_lintian_clean(packages: Packages) -> None:
    lintian_clean(packages.deb, packages.sim_deb)


def test_lintian_overrides_are_justified() -> None:
    """Each override is preceded by a comment saying why."""
    for name, pkg in (
        ("lintian-overrides", "hvdaemons"),
        ("lintian-overrides-sim", "hvdaemons-sim"),
    ):
        lines = (PACKAGING / name).read_text().splitlines()
        overrides = [i for i, line in enumerate(lines) if line.startswith(f"{pkg}:")]
        assert overrides, name
        for i in overrides:
            assert lines[i - 1].startswith("#"), lines[i]


def test_rpmlint_clean(packages: Packages) -> None:
    rpmlint_clean(packages.rpm, packages.sim_rpm)
