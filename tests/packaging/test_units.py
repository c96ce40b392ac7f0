# SPDX-License-Identifier: GPL-2.0-only
"""The systemd units as shipped in the .deb: systemd-analyze verify, the
hardening scores of systemd-analyze security --offline=true, and the
activation/ordering rules that keep them from hanging a boot."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from .conftest import PACKAGING, REPO, Packages, run

UNITS = ("hv-kvp-daemon.service", "hv-vss-daemon.service", "hv-fcopy-daemon.service")
# Debian's units score 6.1 (KVP) and 9.6 (VSS, file copy).
MAX_EXPOSURE = {
    "hv-kvp-daemon.service": 3.5,
    "hv-vss-daemon.service": 5.5,
    "hv-fcopy-daemon.service": 4.5,
}
DAEMON = {
    "hv-kvp-daemon.service": "hv_kvp_daemon",
    "hv-vss-daemon.service": "hv_vss_daemon",
    "hv-fcopy-daemon.service": "hv_fcopy_daemon",
}
# Options that give a service its own mount namespace: the VSS daemon must
# see (and freeze) the host's real mounts.
MOUNT_NAMESPACE_OPTIONS = (
    "ProtectSystem",
    "ProtectHome",
    "PrivateTmp",
    "PrivateDevices",
    "PrivateMounts",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectControlGroups",
    "ProtectProc",
    "ProcSubset",
    "ReadWritePaths",
    "ReadOnlyPaths",
    "InaccessiblePaths",
    "TemporaryFileSystem",
    "BindPaths",
    "BindReadOnlyPaths",
    "RootDirectory",
    "RootImage",
    "StateDirectory",
    "RuntimeDirectory",
    "PrivateNetwork",
    "MountAPIVFS",
    "DynamicUser",
)


def parse_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Sections -> [(key, value)] in order (keys repeat in unit files)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections.setdefault(current, [])
            continue
        key, _, value = line.partition("=")
        assert current is not None, f"{path}: key outside a section"
        sections[current].append((key.strip(), value.strip()))
    return sections


def values(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def unit_dir(deb_tree: Path) -> Path:
    return deb_tree / "lib/systemd/system"


def test_deb_and_rpm_ship_the_same_units(
    deb_tree: Path, packages: Packages, tmp_path: Path
) -> None:
    rpm_tree = tmp_path / "rpm"
    rpm_tree.mkdir()
    run(["sh", "-c", f"rpm2cpio '{packages.rpm}' | cpio -idm --quiet"], cwd=rpm_tree)
    for name in UNITS:
        deb_unit = unit_dir(deb_tree) / name
        rpm_unit = rpm_tree / "usr/lib/systemd/system" / name
        assert (
            deb_unit.read_bytes()
            == rpm_unit.read_bytes()
            == (PACKAGING / "systemd" / name).read_bytes()
        )
    # RHEL's names resolve to ours (relative alias symlinks).
    for alias, target in (
        ("hypervkvpd", "hv-kvp-daemon"),
        ("hypervvssd", "hv-vss-daemon"),
        ("hypervfcopyd", "hv-fcopy-daemon"),
    ):
        link = rpm_tree / "usr/lib/systemd/system" / f"{alias}.service"
        assert link.is_symlink() and str(link.readlink()) == f"{target}.service"


def test_systemd_analyze_verify(deb_tree: Path, tmp_path: Path) -> None:
    """verify --root against the package's own files: ExecStart binaries,
    Documentation= man pages, referenced units. The host's units supply the
    targets (sysinit.target, ...) that a real system has."""
    root = tmp_path / "root"
    shutil.copytree(deb_tree, root, symlinks=True)
    sysdir = root / "lib/systemd/system"
    for unit in Path("/lib/systemd/system").iterdir():
        if not (sysdir / unit.name).exists() and not unit.name.startswith("hv-"):
            if unit.is_symlink():
                (sysdir / unit.name).symlink_to(unit.readlink())
            elif unit.is_file():
                shutil.copy2(unit, sysdir / unit.name)
    # man(1) is what verify runs for Documentation=man:...; point it at the package.
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "MANPATH": str(root / "usr/share/man")}
    cp = run(["systemd-analyze", "verify", f"--root={root}", *UNITS], check=False, env=env)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert cp.stderr.strip() == "", cp.stderr

    # And verify does catch what it should: a unit whose ExecStart is missing.
    (root / "usr/sbin/hv_kvp_daemon").unlink()
    cp = run(
        ["systemd-analyze", "verify", f"--root={root}", "hv-kvp-daemon.service"],
        check=False,
        env=env,
    )
    assert cp.returncode != 0 and "hv_kvp_daemon" in cp.stderr


@pytest.mark.parametrize("name", UNITS)
def test_security_exposure(deb_tree: Path, name: str) -> None:
    cp = run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", unit_dir(deb_tree) / name],
        check=False,
    )
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", cp.stdout)
    assert m, cp.stdout + cp.stderr
    score = float(m.group(1))
    print(f"{name}: {score}")
    assert score <= MAX_EXPOSURE[name], cp.stdout


@pytest.mark.parametrize("name", UNITS)
def test_unit_activation_and_ordering(deb_tree: Path, name: str) -> None:
    unit = parse_unit(unit_dir(deb_tree) / name)
    # udev activation only: no [Install] (no WantedBy=multi-user.target that
    # waits for an absent device), no ConditionPathExists= guard.
    assert "Install" not in unit
    assert not [k for k, _ in unit["Unit"] if k.startswith("ConditionPath")]
    binds = values(unit, "Unit", "BindsTo")
    assert len(binds) == 1 and binds[0].endswith(".device")
    assert binds[0] in " ".join(values(unit, "Unit", "After")).split()
    svc = dict(unit["Service"])
    assert svc["Type"] == "notify"
    assert svc["ExecStart"] == f"/usr/sbin/{DAEMON[name]} --no-daemon"
    assert svc["Restart"] == "on-failure"
    # Type=notify must never stall boot for the default 90 s.
    assert (
        re.fullmatch(r"[0-9]+s", svc["TimeoutStartSec"]) and int(svc["TimeoutStartSec"][:-1]) <= 30
    )
    assert values(unit, "Unit", "IgnoreOnIsolate") == ["yes"]


def test_kvp_unit_runs_before_cloud_init(deb_tree: Path) -> None:
    unit = parse_unit(unit_dir(deb_tree) / "hv-kvp-daemon.service")
    assert values(unit, "Unit", "DefaultDependencies") == ["no"]
    before = " ".join(values(unit, "Unit", "Before")).split()
    assert {"cloud-init-local.service", "walinuxagent.service", "shutdown.target"} <= set(before)
    assert "shutdown.target" in " ".join(values(unit, "Unit", "Conflicts")).split()
    assert values(unit, "Unit", "RequiresMountsFor") == ["/var/lib/hyperv"]
    assert values(unit, "Service", "StateDirectory") == ["hyperv"]
    # The IP injection helper needs CAP_NET_ADMIN and nothing else.
    assert values(unit, "Service", "CapabilityBoundingSet") == ["CAP_NET_ADMIN"]


def test_vss_unit_keeps_host_mount_namespace_and_thaws(deb_tree: Path) -> None:
    unit = parse_unit(unit_dir(deb_tree) / "hv-vss-daemon.service")
    keys = {k for k, _ in unit["Service"]}
    assert not keys & set(MOUNT_NAMESPACE_OPTIONS), keys & set(MOUNT_NAMESPACE_OPTIONS)
    assert values(unit, "Service", "ExecStopPost") == ["/usr/sbin/hv_vss_daemon --thaw"]
    caps = set(" ".join(values(unit, "Service", "CapabilityBoundingSet")).split())
    assert "CAP_SYS_ADMIN" in caps


def test_fcopy_unit_can_write_anywhere(deb_tree: Path) -> None:
    """Copy-VMFile targets any path: no read-only or private file system views."""
    unit = parse_unit(unit_dir(deb_tree) / "hv-fcopy-daemon.service")
    keys = {k for k, _ in unit["Service"]}
    assert not keys & {
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "ReadOnlyPaths",
        "InaccessiblePaths",
        "TemporaryFileSystem",
    }
    allow = values(unit, "Service", "DeviceAllow")
    assert "char-uio rw" in allow and "/dev/vmbus/hv_fcopy rw" in allow


def test_units_match_the_udev_rules(deb_tree: Path) -> None:
    """Every unit a rule wants exists, and each unit's BindsTo= device is the
    device unit systemd derives from the rules (systemd-escape)."""
    rules = "\n".join(
        p.read_text() for p in sorted((deb_tree / "lib/udev/rules.d").glob("*.rules"))
    )
    assert "RUN" not in re.sub(r"#.*", "", rules)
    wanted = set(re.findall(r'ENV\{SYSTEMD_WANTS\}\+="([^"]+)"', rules))
    assert wanted == set(UNITS)
    expected_device = {
        "hv-kvp-daemon.service": "/sys/devices/virtual/misc/vmbus!hv_kvp",
        "hv-vss-daemon.service": "/sys/devices/virtual/misc/vmbus!hv_vss",
    }
    aliases = set(re.findall(r'ENV\{SYSTEMD_ALIAS\}\+="([^"]+)"', rules))
    assert aliases == {"/sys/subsystem/vmbus/devices/hv_fcopy"}
    expected_device["hv-fcopy-daemon.service"] = aliases.pop()
    for name, sysfs in expected_device.items():
        device_unit = run(["systemd-escape", "--path", "--suffix=device", sysfs]).stdout.strip()
        unit = parse_unit(unit_dir(deb_tree) / name)
        assert values(unit, "Unit", "BindsTo") == [device_unit]


def test_repo_rules_are_the_shipped_rules(deb_tree: Path) -> None:
    shipped = sorted(p.name for p in (deb_tree / "lib/udev/rules.d").iterdir())
    assert shipped == sorted(p.name for p in (REPO / "udev").glob("*.rules"))
    assert shipped == ["70-hv-fcopy.rules", "70-hv-kvp.rules", "70-hv-ptp.rules", "70-hv-vss.rules"]
