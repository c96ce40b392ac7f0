# SPDX-License-Identifier: GPL-2.0-only
"""The shipped udev rules, run by the real udev rule engine (udevadm test)
on simulated devices.

systemd 252 has no `udevadm verify`, and this machine has no VMBus. So each
case builds the device's sysfs directory (uevent, attributes, subsystem link)
on a tmpfs over a corner of /sys, inside a private mount namespace that also
has private /run, /dev and /sys/bus, and lets `udevadm test` apply the
package's rules (from /run/udev/rules.d; the system's rule directories are
hidden so they cannot mask ours). SYSTEMD_DEVICE_VERIFY_SYSFS=0
lets sd-device accept a syspath that is not on sysfs. What udev writes
(device symlinks, sysfs attributes) lands in those private mounts, where the
script reads it back.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .conftest import run

FCOPY_CLASS = "34d14be3-dee4-41c8-9ae7-6b174977c192"
FCOPY_INSTANCE = "eb765408-105f-49b6-b4aa-c123b64d17d4"
KVP_CLASS = "a9a0f4e7-5a45-4d96-b827-8a841e8c03e6"
BASE = "/sys/devices/virtual/misc"
VMBUS = f"{BASE}/VMBUS:00"


@dataclass
class Dev:
    """A simulated device: syspath, subsystem, uevent lines, attribute files."""

    syspath: str
    subsystem: str
    uevent: dict[str, str]
    attrs: dict[str, str] = field(default_factory=dict)
    dev: str | None = None


def setup_script(devices: list[Dev], rules_dir: Path) -> str:
    q = shlex.quote
    lines = [
        "set -e",
        "mount -t tmpfs tmpfs /run",
        "mkdir -p /run/udev/rules.d",
        f"cp {q(str(rules_dir))}/*.rules /run/udev/rules.d/",
        # only the package's rules: the system's (e.g. systemd's own ptp_hyperv
        # rule) must not mask what ours do
        "mount -t tmpfs tmpfs /usr/lib/udev/rules.d",
        "if [ -d /etc/udev/rules.d ]; then mount -t tmpfs tmpfs /etc/udev/rules.d; fi",
        # a private /dev that still has the basic nodes
        "mkdir -p /run/olddev && mount --rbind /dev /run/olddev && mount -t tmpfs tmpfs /dev",
        "for n in null zero random urandom; do touch /dev/$n; mount --bind /run/olddev/$n /dev/$n; done",
        f"mount -t tmpfs tmpfs {BASE}",
        "mount -t tmpfs tmpfs /sys/bus",
        "mkdir -p /sys/bus/vmbus/drivers/uio_hv_generic",
        ": > /sys/bus/vmbus/drivers/uio_hv_generic/new_id",
    ]
    for d in devices:
        lines.append(f"mkdir -p {q(d.syspath)}")
        uevent = "".join(f"{k}={v}\n" for k, v in d.uevent.items())
        lines.append(f"printf %s {q(uevent)} > {q(d.syspath + '/uevent')}")
        for name, value in d.attrs.items():
            lines.append(f"printf '%s\\n' {q(value)} > {q(d.syspath + '/' + name)}")
        if d.dev:
            lines.append(f"printf '%s\\n' {q(d.dev)} > {q(d.syspath + '/dev')}")
        target = (
            f"/sys/bus/{d.subsystem}" if d.subsystem == "vmbus" else f"/sys/class/{d.subsystem}"
        )
        lines.append(f"ln -s {q(target)} {q(d.syspath + '/subsystem')}")
    return "\n".join(lines) + "\n"


def udev_test(
    rules_dir: Path, devices: list[Dev], *, action: str = "add"
) -> tuple[dict[str, dict[str, str]], str]:
    """Run udevadm test on each device; returns its properties and a listing
    of what udev left in /dev and in uio_hv_generic's new_id."""
    script = setup_script(devices, rules_dir)
    for d in devices:
        script += f"echo '@@@ {d.syspath}'\nudevadm test --action={action} {shlex.quote(d.syspath)} 2>/dev/null\n"
    script += (
        "echo '@@@ state'\n"
        "find /dev -type l -printf 'link %P -> %l\\n'\n"
        "printf 'new_id=%s\\n' \"$(cat /sys/bus/vmbus/drivers/uio_hv_generic/new_id)\"\n"
    )
    env = dict(os.environ, SYSTEMD_DEVICE_VERIFY_SYSFS="0", SYSTEMD_LOG_LEVEL="info")
    cp = run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], env=env)
    props: dict[str, dict[str, str]] = {}
    state = ""
    for chunk in cp.stdout.split("@@@ ")[1:]:
        head, _, body = chunk.partition("\n")
        if head == "state":
            state = body
            continue
        # properties: the KEY=VALUE lines after udevadm's closing banner
        kv = {}
        for line in body.splitlines():
            key, sep, value = line.partition("=")
            if sep and key.isupper():
                kv[key] = value
        props[head] = kv
    return props, state


@pytest.fixture(scope="module")
def rules(deb_tree: Path) -> Path:
    return deb_tree / "lib/udev/rules.d"


def misc(name: str, minor: int) -> Dev:
    return Dev(
        f"{BASE}/vmbus!{name}",
        "misc",
        {"MAJOR": "10", "MINOR": str(minor), "DEVNAME": f"vmbus/{name}"},
        dev=f"10:{minor}",
    )


@pytest.mark.parametrize("action", ["add", "change"])
def test_misc_devices_start_their_daemons(rules: Path, action: str) -> None:
    """KVP, VSS and legacy fcopy: systemd tag and SYSTEMD_WANTS, also on
    "change" (a device losing the tag counts as unplugged for BindsTo=)."""
    devs = [misc("hv_kvp", 123), misc("hv_vss", 124), misc("hv_fcopy", 125)]
    props, _ = udev_test(rules, devs, action=action)
    for d, unit in zip(
        devs, ("hv-kvp-daemon.service", "hv-vss-daemon.service", "hv-fcopy-daemon.service")
    ):
        p = props[d.syspath]
        assert ":systemd:" in p.get("CURRENT_TAGS", ""), p
        assert p.get("SYSTEMD_WANTS") == unit, p
    assert props[devs[2].syspath]["SYSTEMD_ALIAS"] == "/sys/subsystem/vmbus/devices/hv_fcopy"
    assert "SYSTEMD_ALIAS" not in props[devs[0].syspath]


def fcopy_channel(class_id: str = FCOPY_CLASS, instance: str = FCOPY_INSTANCE) -> Dev:
    # What vmbus_drv.c exposes: MODALIAS from the class GUID, class_id in braces.
    return Dev(
        f"{VMBUS}/{instance}",
        "vmbus",
        {"MODALIAS": "vmbus:" + "e34bd134e4dec8419ae76b174977c192"},
        attrs={"class_id": "{" + class_id + "}", "device_id": "{" + instance + "}"},
    )


def test_fcopy_channel_is_bound_to_uio_hv_generic(rules: Path) -> None:
    """Kernels >= 6.10 without the ID-table change: the rule loads the driver
    (kmod builtin) and writes the class to its new_id, no RUN+=."""
    props, state = udev_test(rules, [fcopy_channel()])
    assert f"new_id={FCOPY_CLASS}" in state
    assert "SYSTEMD_WANTS" not in props[f"{VMBUS}/{FCOPY_INSTANCE}"]


def test_other_vmbus_channels_are_left_alone(rules: Path) -> None:
    other = fcopy_channel(KVP_CLASS, "242ff919-07db-4180-9c2e-b86cb68c8c55")
    _, state = udev_test(rules, [other])
    assert "new_id=\n" in state


def uio(parent: str, n: int = 3) -> Dev:
    return Dev(
        f"{parent}/uio/uio{n}",
        "uio",
        {"MAJOR": "240", "MINOR": str(n), "DEVNAME": f"uio{n}"},
        attrs={"name": "uio_hv_generic", "version": "0.02.1"},
        dev=f"240:{n}",
    )


@pytest.mark.parametrize("action", ["add", "change"])
def test_fcopy_uio_device_starts_the_daemon(rules: Path, action: str) -> None:
    chan = fcopy_channel()
    dev = uio(chan.syspath)
    props, state = udev_test(rules, [chan, dev], action=action)
    p = props[dev.syspath]
    assert ":systemd:" in p.get("CURRENT_TAGS", "")
    assert p.get("SYSTEMD_WANTS") == "hv-fcopy-daemon.service"
    assert p.get("SYSTEMD_ALIAS") == "/sys/subsystem/vmbus/devices/hv_fcopy"
    assert "link vmbus/hv_fcopy_uio -> ../uio3" in state


def test_uio_device_of_another_channel_is_not_ours(rules: Path) -> None:
    """uio_hv_generic also drives e.g. DPDK network channels."""
    chan = fcopy_channel(
        "f8615163-df3e-46c5-913f-f2d2f965ed0e", "00000000-1111-2222-3333-444444444444"
    )
    dev = uio(chan.syspath, 0)
    props, state = udev_test(rules, [chan, dev])
    assert "SYSTEMD_WANTS" not in props[dev.syspath]
    assert "hv_fcopy_uio" not in state


def ptp(clock_name: str, n: int) -> Dev:
    return Dev(
        f"{BASE}/ptpdev{n}/ptp/ptp{n}",
        "ptp",
        {"MAJOR": "248", "MINOR": str(n), "DEVNAME": f"ptp{n}"},
        attrs={"clock_name": clock_name},
        dev=f"248:{n}",
    )


def test_hyperv_ptp_clock_gets_its_name(rules: Path) -> None:
    props, state = udev_test(rules, [ptp("hyperv", 0), ptp("KVM virtual PTP", 1)])
    assert "link ptp_hyperv -> ptp0" in state
    assert "/dev/ptp_hyperv" in props[f"{BASE}/ptpdev0/ptp/ptp0"].get("DEVLINKS", "")
    assert "/dev/ptp_hyperv" not in props[f"{BASE}/ptpdev1/ptp/ptp1"].get("DEVLINKS", "")
