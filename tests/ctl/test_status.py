# SPDX-License-Identifier: GPL-2.0-only
"""hvctl status against recorded guests (tests/ctl/trees) that libudev reads under umockdev.

The daemon state comes from a /proc-like tree of comm files, or from a
stand-in systemctl printing what `systemctl show` prints; the devices come
only from the umockdev tree (this machine has no VMBus at all).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.support.umockdev import hvctl_in_tree, json_of

HEARTBEAT = "fd149e91-82e0-4a7d-afa6-2a4166cbd7c0"
SHUTDOWN = "b6650ff7-33bc-4840-8048-e0676786f393"
TIMESYNC = "2dd1ce17-079e-403c-b352-a1921ee207ee"
KVP = "a9a0f4e7-5a45-4d96-b827-8a841e8c03e6", "242ff919-07db-4180-9c2e-b86cb68c8c55"
VSS_INSTANCE = "2450ee40-33bf-4fbd-892e-9fb06e9214cf"
FCOPY_INSTANCE = "eb765408-105f-49b6-b4aa-c123b64d17d4"

NAMES = [
    "Heartbeat",
    "Operating system shutdown",
    "Time synchronization",
    "Data Exchange",
    "Backup (volume shadow copy)",
    "Guest services",
    "PowerShell Direct",
]


def proc_tree(root: Path, processes: dict[int, str]) -> str:
    """A /proc with a comm file per process (only what ProcessTable reads)."""
    for pid, comm in processes.items():
        (root / str(pid)).mkdir(parents=True)
        (root / str(pid) / "comm").write_text(comm + "\n")
    (root / "self").mkdir(exist_ok=True)  # non-numeric entries are ignored
    return str(root)


ALL_RUNNING = {1: "systemd", 77: "bash", 501: "hv_kvp_daemon", 502: "hv_vss_daemon", 503: "hv_fcopy_uio_da"}


def rows_of(doc: dict) -> dict[str, dict]:  # type: ignore[type-arg]
    rows = {r["key"]: r for r in doc["services"]}
    assert [r["name"] for r in doc["services"]] == NAMES
    return rows


def text_blocks(out: str) -> dict[str, list[str]]:
    """The text report's blocks by service name: [verdict, detail lines...]."""
    blocks: dict[str, list[str]] = {}
    for block in out.strip().split("\n\n"):
        lines = block.splitlines()
        for name in NAMES:
            if lines[0].startswith(name + "  "):
                blocks[name] = [lines[0][len(name) :].strip(), *(ln.strip() for ln in lines[1:])]
    assert list(blocks) == NAMES, out
    return blocks


def detail(block: list[str], label: str) -> str:
    found = [ln[len(label) :].strip() for ln in block[1:] if ln.startswith(label + " ")]
    assert len(found) == 1, (label, block)
    return found[0]


def check_kernel_rows(rows: dict, blocks: dict[str, list[str]]) -> None:  # type: ignore[type-arg]
    for key, name, instance in (
        ("heartbeat", "Heartbeat", HEARTBEAT),
        ("shutdown", "Operating system shutdown", SHUTDOWN),
        ("timesync", "Time synchronization", TIMESYNC),
    ):
        r = rows[key]
        assert (r["offered"], r["driver"], r["working"], r["instances"]) == (
            True,
            "hv_utils",
            True,
            [instance],
        ), r
        assert r["component"] == "hv_utils kernel module" and r["daemon"] is None
        assert r["impact"]
        b = blocks[name]
        assert b[0] == "working"
        assert detail(b, "component") == "hv_utils kernel module"
        assert detail(b, "offered") == f"yes (VMBus {instance})"
        assert detail(b, "driver") == "hv_utils"
        assert detail(b, "when off") == r["impact"]
        assert not any(ln.startswith("daemon") for ln in b)


def check_psdirect(rows: dict, blocks: dict[str, list[str]]) -> None:  # type: ignore[type-arg]
    r = rows["psdirect"]
    assert (r["offered"], r["working"], r["driver"], r["class_id"]) == (
        None,
        None,
        None,
        None,
    )
    assert "no Linux side" in r["note"]
    b = blocks["PowerShell Direct"]
    assert b[0] == "no Linux side"
    assert detail(b, "offered") == "-"
    assert "no Linux side" in detail(b, "note")


def check_daemon_row(
    rows: dict,  # type: ignore[type-arg]
    blocks: dict[str, list[str]],
    *,
    key: str,
    name: str,
    component: str,
    driver: str,
    node: str | None,
    instance: str,
    pid: int | None,
) -> None:
    r = rows[key]
    assert (r["offered"], r["driver"], r["node"], r["instances"], r["component"]) == (
        True,
        driver,
        node,
        [instance],
        component,
    ), r
    b = blocks[name]
    assert detail(b, "component") == component
    assert detail(b, "offered") == f"yes (VMBus {instance})"
    assert detail(b, "driver") == driver + (f", {node}" if node else "")
    assert detail(b, "when off") == r["impact"]
    if pid is None:
        assert r["working"] is False and r["daemon"]["running"] is False
        assert f"{component} is not running" in r["problems"]
        assert b[0].startswith("NOT WORKING: ") and f"{component} is not running" in b[0]
        assert detail(b, "daemon") == "not running"
    else:
        assert r["working"] is True and r["problems"] == []
        assert r["daemon"] == {
            "running": True,
            "how": "process",
            "state": f"running (pid {pid})",
            "status": "",
            "pids": [pid],
        }
        assert b[0] == "working"
        assert detail(b, "daemon") == f"running (pid {pid})"


KVP_ROW = dict(
    key="kvp",
    name="Data Exchange",
    component="hv_kvp_daemon",
    driver="hv_utils",
    node="/dev/vmbus/hv_kvp",
    instance=KVP[1],
)
VSS_ROW = dict(
    key="vss",
    name="Backup (volume shadow copy)",
    component="hv_vss_daemon",
    driver="hv_utils",
    node="/dev/vmbus/hv_vss",
    instance=VSS_INSTANCE,
)
UIO_ROW = dict(
    key="fcopy",
    name="Guest services",
    component="hv_fcopy_uio_daemon",
    driver="uio_hv_generic",
    node="/dev/uio0",
    instance=FCOPY_INSTANCE,
)


def run_both(tree: str, source: tuple[str, str], code: int) -> tuple[dict, dict[str, list[str]]]:  # type: ignore[type-arg]
    cp = hvctl_in_tree(tree, source, "status", "--json")
    assert cp.returncode == code, cp.stdout + cp.stderr
    doc = json_of(cp)
    assert doc["exit_status"] == code
    text = hvctl_in_tree(tree, source, "status")
    assert text.returncode == code, text.stdout + text.stderr
    return doc, text_blocks(text.stdout)


def test_generation_2_guest_with_every_service(tmp_path: Path) -> None:
    doc, blocks = run_both("gen2-all-services", ("proc", proc_tree(tmp_path, ALL_RUNNING)), 0)
    assert doc["hyperv_guest"] is True
    rows = rows_of(doc)
    check_kernel_rows(rows, blocks)
    check_daemon_row(rows, blocks, **KVP_ROW, pid=501)
    check_daemon_row(rows, blocks, **VSS_ROW, pid=502)
    check_daemon_row(rows, blocks, **UIO_ROW, pid=503)
    check_psdirect(rows, blocks)


def test_host_with_guest_services_off(tmp_path: Path) -> None:
    procs = {k: v for k, v in ALL_RUNNING.items() if v != "hv_fcopy_uio_da"}
    doc, blocks = run_both("no-guest-services", ("proc", proc_tree(tmp_path, procs)), 0)
    rows = rows_of(doc)
    check_kernel_rows(rows, blocks)
    check_daemon_row(rows, blocks, **KVP_ROW, pid=501)
    check_daemon_row(rows, blocks, **VSS_ROW, pid=502)
    r = rows["fcopy"]
    assert (r["offered"], r["working"], r["driver"], r["instances"]) == (False, None, None, [])
    assert "Guest Service Interface" in r["note"]
    b = blocks["Guest services"]
    assert b[0] == "not offered by the host"
    assert detail(b, "offered") == "no"
    assert "Guest Service Interface" in detail(b, "note")
    assert not any(ln.startswith(("driver", "daemon")) for ln in b)
    check_psdirect(rows, blocks)


def test_older_kernel_copies_files_through_hv_utils(tmp_path: Path) -> None:
    procs = {**ALL_RUNNING, 503: "hv_fcopy_daemon"}
    doc, blocks = run_both("old-kernel-fcopy-hv-utils", ("proc", proc_tree(tmp_path, procs)), 0)
    rows = rows_of(doc)
    check_kernel_rows(rows, blocks)
    legacy = {**UIO_ROW, "component": "hv_fcopy_daemon", "driver": "hv_utils"}
    legacy["node"] = "/dev/vmbus/hv_fcopy"
    check_daemon_row(rows, blocks, **legacy, pid=503)
    check_psdirect(rows, blocks)


def test_newer_kernel_with_the_file_copy_device_unbound(tmp_path: Path) -> None:
    doc, blocks = run_both(
        "new-kernel-fcopy-unbound", ("proc", proc_tree(tmp_path, ALL_RUNNING)), 1
    )
    rows = rows_of(doc)
    check_kernel_rows(rows, blocks)
    r = rows["fcopy"]
    assert (r["offered"], r["driver"], r["node"], r["working"]) == (True, None, None, False)
    assert r["daemon"]["running"] is True
    (problem,) = r["problems"]
    assert f"no driver is bound to VMBus device {FCOPY_INSTANCE}" in problem
    assert "uio_hv_generic" in problem and "70-hv-fcopy.rules" in problem
    b = blocks["Guest services"]
    assert b[0] == "NOT WORKING: " + problem
    assert detail(b, "driver") == "none"
    assert detail(b, "daemon") == "running (pid 503)"
    assert text_verdicts_summary(blocks) == ["Guest services"]


def text_verdicts_summary(blocks: dict[str, list[str]]) -> list[str]:
    return [n for n, b in blocks.items() if b[0].startswith("NOT WORKING")]


def test_a_daemon_that_died(tmp_path: Path) -> None:
    procs = {k: v for k, v in ALL_RUNNING.items() if v != "hv_vss_daemon"}
    doc, blocks = run_both("gen2-all-services", ("proc", proc_tree(tmp_path, procs)), 1)
    rows = rows_of(doc)
    check_kernel_rows(rows, blocks)
    check_daemon_row(rows, blocks, **KVP_ROW, pid=501)
    check_daemon_row(rows, blocks, **VSS_ROW, pid=None)
    check_daemon_row(rows, blocks, **UIO_ROW, pid=503)
    assert text_verdicts_summary(blocks) == ["Backup (volume shadow copy)"]


SHOW = """\
Id=hv-kvp-daemon.service
LoadState=loaded
ActiveState=active
SubState=running
StatusText=registered with protocol version 3.1; last request ENUMERATE pool 2 at 10:11:12
MainPID=501
NRestarts=0

Id=hv-vss-daemon.service
LoadState=loaded
ActiveState=failed
SubState=failed
StatusText=
MainPID=0
NRestarts=5

Id=hv-fcopy-daemon.service
LoadState=loaded
ActiveState=active
SubState=running
StatusText=last copy /tmp/x: copied (10 bytes) at 10:00:00
MainPID=503
NRestarts=0
"""


def test_a_daemon_that_died_under_systemd(tmp_path: Path) -> None:
    """Unit state and STATUS= lines from systemctl show (here a stand-in printing its output)."""
    args_file = tmp_path / "args"
    systemctl = tmp_path / "systemctl"
    (tmp_path / "show").write_text(SHOW)
    systemctl.write_text(f'#!/bin/sh\necho "$@" > {args_file}\ncat {tmp_path / "show"}\n')
    systemctl.chmod(systemctl.stat().st_mode | stat.S_IXUSR)
    doc, blocks = run_both("gen2-all-services", ("systemctl", str(systemctl)), 1)
    assert args_file.read_text().split() == [
        "show",
        "--no-pager",
        "-p",
        "Id,LoadState,ActiveState,SubState,StatusText,MainPID,NRestarts",
        "--",
        "hv-kvp-daemon.service",
        "hv-vss-daemon.service",
        "hv-fcopy-daemon.service",
    ]
    rows = rows_of(doc)
    kvp = rows["kvp"]
    assert kvp["working"] is True
    assert kvp["daemon"] == {
        "running": True,
        "how": "systemd",
        "state": "hv-kvp-daemon.service: active (running)",
        "status": "registered with protocol version 3.1; last request ENUMERATE pool 2 at 10:11:12",
        "pids": [501],
    }
    assert detail(blocks["Data Exchange"], "status") == kvp["daemon"]["status"]
    vss = rows["vss"]
    assert vss["working"] is False and vss["problems"] == ["hv_vss_daemon is not running"]
    assert vss["daemon"]["state"] == "hv-vss-daemon.service: failed (failed), restarted 5 times"
    b = blocks["Backup (volume shadow copy)"]
    assert detail(b, "daemon") == vss["daemon"]["state"]
    assert not any(ln.startswith("status") for ln in b)
    assert detail(blocks["Guest services"], "status") == (
        "last copy /tmp/x: copied (10 bytes) at 10:00:00"
    )


def test_not_a_hyper_v_guest(tmp_path: Path) -> None:
    source = ("proc", proc_tree(tmp_path, ALL_RUNNING))
    cp = hvctl_in_tree("not-a-guest", source, "status", "--json")
    assert cp.returncode == 2, cp.stdout + cp.stderr
    assert "not a Hyper-V guest" in cp.stderr
    doc = json_of(cp)
    assert doc["hyperv_guest"] is False and doc["exit_status"] == 2
    rows = rows_of(doc)
    for key, r in rows.items():
        assert r["working"] is None and r["instances"] == [] and r["daemon"] is None, r
        assert r["offered"] is (None if key == "psdirect" else False)
    text = hvctl_in_tree("not-a-guest", source, "status")
    assert text.returncode == 2
    blocks = text_blocks(text.stdout)
    for name, b in blocks.items():
        assert b[0] == ("no Linux side" if name == "PowerShell Direct" else "-"), b
    assert text.stdout.rstrip().endswith("Not a Hyper-V guest.")


def test_the_devices_come_from_the_recorded_tree_only() -> None:
    """pyudev under umockdev lists exactly the tree's devices, none of this machine's."""
    code = (
        "import json, pyudev\n"
        "c = pyudev.Context()\n"
        "print(json.dumps({s: sorted(d.sys_name for d in c.list_devices(subsystem=s))"
        " for s in ('vmbus', 'misc', 'uio', 'ptp', 'block')}))\n"
    )
    from tests.support.umockdev import run_in_tree

    cp = run_in_tree("gen2-all-services", "-c", code)
    assert cp.returncode == 0, cp.stderr
    seen = json_of(cp)
    assert seen["misc"] == ["vmbus/hv_kvp", "vmbus/hv_vss"]  # not this machine's loop-control etc.
    assert seen["uio"] == ["uio0"] and seen["ptp"] == ["ptp0"] and seen["block"] == []
    assert len(seen["vmbus"]) == 9
    cp = run_in_tree("not-a-guest", "-c", code)
    seen = json_of(cp)
    assert seen == {"vmbus": [], "misc": ["loop-control"], "uio": [], "ptp": [], "block": ["vda"]}
    # And outside umockdev this machine has none of them.
    assert not os.path.exists(f"/sys/bus/vmbus/devices/{FCOPY_INSTANCE}")


@pytest.mark.parametrize("args", [["status", "--bogus"], ["kvp", "list", "--pool", "9"], ["nope"]])
def test_bad_arguments_exit_2(args: list[str], tmp_path: Path) -> None:
    cp = hvctl_in_tree("not-a-guest", ("proc", str(tmp_path)), *args)
    assert cp.returncode == 2
    assert "usage: hvctl" in cp.stderr and "Traceback" not in cp.stderr
