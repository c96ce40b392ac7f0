# SPDX-License-Identifier: GPL-2.0-only
"""hvdaemons.kvp.ipinject: SET_IP_INFO's files, detection, hand-over and statuses.

Interfaces come from a /sys/class/net tree made here (KvpPaths.sys_class_net):
a veth has no VMBus device GUID.  tests/kvp/test_ipinfo_daemon.py runs the
same through the daemon executable, against real sysfs and networkd.
"""

from __future__ import annotations

import os
import pathlib
import stat
import threading

import pytest

from hvdaemons import log
from hvdaemons.kvp import ipinject
from hvdaemons.kvp.paths import KvpPaths
from hvdaemons.protocol.kvp import IpValue
from hvdaemons.protocol.status import HvStatus
from tests.kvp.renderers.cases import CASES, GUID, expected
from tests.support.process import gone, write_script

SCRIPTS = pathlib.Path(ipinject.__file__).resolve().parent / "scripts"
CASE = CASES["static"]  # eth0
INFO = CASE.value


@pytest.fixture
def sysfs(tmp_path: pathlib.Path) -> pathlib.Path:
    """eth0 with a device GUID, a VF sharing its MAC (PCI, no device_id), another NIC."""
    root = tmp_path / "sys_class_net"
    for name, mac, guid in (
        ("eth0", CASE.mac.lower(), GUID),
        ("enP1s1", CASE.mac.lower(), None),
        ("eth9", "00:15:5d:aa:00:09", "{00000000-0000-0000-0000-000000000009}"),
    ):
        (root / name / "device").mkdir(parents=True)
        (root / name / "address").write_text(mac + "\n")
        if guid:
            (root / name / "device" / "device_id").write_text(guid + "\n")
    return root


@pytest.fixture
def state_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    d = tmp_path / "state"
    d.mkdir()
    return d


# Records its arguments, its environment and the staged file.
RECORDER = """\
here=$(dirname "$0")
printf "%s\\n" "$@" > "$here/argv"
printf "%s|%s|%s" "${HV_KVP_NETSTACK-unset}" "${HV_KVP_CONFIG-unset}" "${HV_KVP_ROOT-unset}" > "$here/env"
if [ -n "${HV_KVP_CONFIG-}" ]; then cat "$HV_KVP_CONFIG" > "$here/staged"; fi
"""


def recorder(d: pathlib.Path, tail: str = "exit 0\n") -> pathlib.Path:
    d.mkdir(exist_ok=True)
    write_script(d / "hv_set_ifconfig", RECORDER + tail)
    return d


def paths_for(sysfs: pathlib.Path, state: pathlib.Path, scripts: pathlib.Path) -> KvpPaths:
    return KvpPaths(state_dir=str(state), scripts_dir=str(scripts), sys_class_net=str(sysfs))


def files(state: pathlib.Path) -> list[str]:
    return sorted(p.name for p in state.iterdir())


def test_writes_both_files_and_stages_the_backend(
    sysfs: pathlib.Path, state_dir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    scripts = recorder(tmp_path / "s")
    root = tmp_path / "root"
    (root / "etc/sysconfig/network-scripts").mkdir(parents=True)
    env = {"HV_KVP_ROOT": str(root), "PATH": "/usr/bin:/bin"}
    old = os.umask(0o022)
    try:
        status = ipinject.set_ip_info(INFO, paths_for(sysfs, state_dir, scripts), environ=env)
    finally:
        os.umask(old)
    assert status == HvStatus.S_OK
    ifcfg, keyfile = state_dir / "ifcfg-eth0", state_dir / "eth0.nmconnection"
    assert ifcfg.read_text() == expected("handoff", "static", ".ifcfg")
    assert keyfile.read_text() == expected("handoff", "static", ".nmconnection")
    assert stat.S_IMODE(ifcfg.stat().st_mode) == stat.S_IMODE(keyfile.stat().st_mode) == 0o600
    # Two arguments, as for every hv_set_ifconfig; the ifcfg backend was
    # found below HV_KVP_ROOT and its file staged; gone once the helper ran.
    assert (scripts / "argv").read_text() == f"{ifcfg}\n{keyfile}\n"
    staged = state_dir / "eth0.ifcfg"
    assert (scripts / "env").read_text() == f"ifcfg|{staged}|{root}"
    assert (scripts / "staged").read_text() == expected("ifcfg", "static")
    assert files(state_dir) == ["eth0.nmconnection", "ifcfg-eth0"]


def test_no_backend(
    sysfs: pathlib.Path,
    state_dir: pathlib.Path,
    tmp_path: pathlib.Path,
    logs: log.Capture,
) -> None:
    # Nothing detected: the helper still gets the two files (a third-party
    # one needs nothing else), and no stale HV_KVP_CONFIG.
    scripts = recorder(tmp_path / "s")
    env = {"HV_KVP_ROOT": str(tmp_path / "empty"), "HV_KVP_CONFIG": "/etc/passwd"}
    status = ipinject.set_ip_info(INFO, paths_for(sysfs, state_dir, scripts), environ=env)
    assert status == HvStatus.S_OK
    assert "no supported network configuration system found for eth0" in logs.text
    assert (scripts / "env").read_text() == f"unset|unset|{tmp_path / 'empty'}"
    assert files(state_dir) == ["eth0.nmconnection", "ifcfg-eth0"]

    # An unknown HV_KVP_NETSTACK reaches the helper as it is (ours refuses it).
    env = {"HV_KVP_ROOT": str(tmp_path / "empty"), "HV_KVP_NETSTACK": "wicked"}
    status = ipinject.set_ip_info(INFO, paths_for(sysfs, state_dir, scripts), environ=env)
    assert "unknown HV_KVP_NETSTACK 'wicked'" in logs.text
    assert (scripts / "env").read_text() == f"wicked|unset|{tmp_path / 'empty'}"


def test_notes_are_logged(
    sysfs: pathlib.Path,
    state_dir: pathlib.Path,
    tmp_path: pathlib.Path,
    logs: log.Capture,
) -> None:
    scripts = recorder(tmp_path / "s")
    root = tmp_path / "root"
    (root / "etc/network").mkdir(parents=True)
    (root / "etc/network/interfaces").write_text("iface eth0 inet dhcp\n")
    env = {"HV_KVP_ROOT": str(root), "HV_KVP_NETSTACK": "ifupdown"}
    assert ipinject.set_ip_info(INFO, paths_for(sysfs, state_dir, scripts), environ=env) == 0
    assert f"SET_IP_INFO: {root}/etc/network/interfaces does not source interfaces.d" in logs.text
    assert "SET_IP_INFO: eth0 is also configured elsewhere" in logs.text


def test_guid_not_found(
    sysfs: pathlib.Path, state_dir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    scripts = recorder(tmp_path / "s")
    info = IpValue("{11111111-2222-3333-4444-555555555555}", 1, True)
    status = ipinject.set_ip_info(info, paths_for(sysfs, state_dir, scripts), environ={})
    assert status == HvStatus.GUID_NOTFOUND
    assert files(state_dir) == []
    assert not (scripts / "argv").exists()


@pytest.mark.parametrize(
    "field,value", [("ip_addr", "10.0.0.1\nDEVICE=evil"), ("sub_net", "64;255.255.255.0")]
)
def test_invalid_argument(
    sysfs: pathlib.Path, state_dir: pathlib.Path, tmp_path: pathlib.Path, field: str, value: str
) -> None:
    scripts = recorder(tmp_path / "s")
    fields = {
        "adapter_id": GUID,
        "addr_family": 3,
        "dhcp_enabled": False,
        "ip_addr": "192.0.2.10;2001:db8::5",
        "sub_net": "255.255.255.0;64",
    }
    info = IpValue(**{**fields, field: value})
    status = ipinject.set_ip_info(info, paths_for(sysfs, state_dir, scripts), environ={})
    assert status == HvStatus.INVALIDARG
    assert files(state_dir) == []  # nothing half-written
    assert not (scripts / "argv").exists()


def test_failing_missing_hanging_helper(
    sysfs: pathlib.Path,
    state_dir: pathlib.Path,
    tmp_path: pathlib.Path,
    logs: log.Capture,
) -> None:
    env = {"HV_KVP_NETSTACK": "networkd"}
    scripts = recorder(tmp_path / "fail", "echo 'nmcli: no' >&2; exit 4\n")
    status = ipinject.set_ip_info(INFO, paths_for(sysfs, state_dir, scripts), environ=env)
    assert status == HvStatus.E_FAIL
    assert "Failed to execute cmd" in logs.text
    assert "failed with exit status 4: nmcli: no" in logs.text
    assert files(state_dir) == ["eth0.nmconnection", "ifcfg-eth0"]  # staged file removed

    logs.clear()
    paths = paths_for(sysfs, state_dir, tmp_path / "nothing-here")
    assert ipinject.set_ip_info(INFO, paths, environ=env) == HvStatus.E_FAIL
    assert "hv_set_ifconfig" in logs.text
    assert "cannot run it: No such file or directory" in logs.text

    logs.clear()
    # Both far longer than the join() below, a hang guard.
    hang = recorder(tmp_path / "hang", 'sleep 600 & echo $! > "$here/bg.pid"; exec sleep 600\n')
    statuses: list[int] = []
    worker = threading.Thread(
        target=lambda: statuses.append(
            ipinject.set_ip_info(INFO, paths_for(sysfs, state_dir, hang), environ=env, timeout=1.0)
        )
    )
    worker.start()
    worker.join(120)
    assert not worker.is_alive(), "SET_IP_INFO waited for a hanging helper"
    assert statuses == [HvStatus.E_FAIL]
    assert "did not finish within 1 s; killed" in logs.text
    assert gone(int((hang / "bg.pid").read_text()))
    assert files(state_dir) == ["eth0.nmconnection", "ifcfg-eth0"]


def test_state_dir_unwritable(sysfs: pathlib.Path, tmp_path: pathlib.Path) -> None:
    scripts = recorder(tmp_path / "s")
    paths = paths_for(sysfs, tmp_path / "no" / "such" / "dir", scripts)
    assert ipinject.set_ip_info(INFO, paths, environ={}) == HvStatus.E_FAIL
    assert not (scripts / "argv").exists()


@pytest.mark.parametrize(
    "backend,installed",
    [
        ("netplan", "etc/netplan/90-hyperv-eth0.yaml"),
        ("nm", "etc/NetworkManager/system-connections/hyperv-eth0.nmconnection"),
        ("networkd", "etc/systemd/network/05-hyperv-eth0.network"),
        ("ifupdown", "etc/network/interfaces.d/hyperv-eth0"),
        ("ifcfg", "etc/sysconfig/network-scripts/ifcfg-eth0"),
    ],
)
def test_through_the_shipped_script(
    sysfs: pathlib.Path,
    state_dir: pathlib.Path,
    tmp_path: pathlib.Path,
    backend: str,
    installed: str,
) -> None:
    """Detection, rendering, hand-over and the shipped hv_set_ifconfig, in a scratch root.

    The tools hv_set_ifconfig runs are stubs that record their arguments.
    """
    root, stubs, calls = tmp_path / "root", tmp_path / "stubs", tmp_path / "calls"
    stubs.mkdir()
    for tool in ("netplan", "nmcli", "networkctl", "ifup", "ifdown"):
        write_script(stubs / tool, f'echo "$(basename "$0") $*" >> {str(calls)!r}\n')
    env = {
        "HV_KVP_ROOT": str(root),
        "HV_KVP_NETSTACK": backend,
        "PATH": f"{stubs}:/usr/bin:/bin",
    }
    assert ipinject.set_ip_info(INFO, paths_for(sysfs, state_dir, SCRIPTS), environ=env) == 0
    assert (root / installed).read_text() == expected(backend, "static")
    assert files(state_dir) == ["eth0.nmconnection", "ifcfg-eth0"]
    assert (
        calls.read_text()
        == {
            "netplan": "netplan apply\n",
            "nm": f"nmcli connection load {root / installed}\nnmcli -w 15 connection up id hyperv-eth0\n",
            "networkd": "networkctl reload\nnetworkctl reconfigure -- eth0\n",
            "ifupdown": "ifdown -- eth0\nifup -- eth0\n",
            "ifcfg": "ifdown eth0\nifup eth0\n",
        }[backend]
    )
