# SPDX-License-Identifier: GPL-2.0-only
"""The file-copy daemon's discovery on "/sys" (hvdaemons.fcopy.discovery.make_discovery)
against recorded guests (tests/ctl/trees), which umockdev puts at /sys.

The same scan is tested on plain directory trees (test_discovery.py); these
are whole guests recorded from the kernel's sysfs, links and all, read
through the path the daemon takes on a guest.
"""

from __future__ import annotations

from tests.support.umockdev import json_of, run_in_tree

# The scan lists the bus's links to the devices (as tools/hv's uio daemon
# reads /sys/bus/vmbus/devices/<instance>), not /sys/devices/.../VMBUS:00/...
FCOPY = "/sys/bus/vmbus/devices/eb765408-105f-49b6-b4aa-c123b64d17d4"

PROBE = """
import json
from hvdaemons.fcopy import daemon, discovery
from hvdaemons.service import Stopper

disc = discovery.make_discovery()
found = disc.fcopy_devices()
dev = [disc.uio_device(d) for d in found]
print(json.dumps({
    "kind": type(disc).__name__,
    "sysfs_root": disc.sysfs_root,
    "devices": found,
    "drivers": [discovery.driver_name(d) for d in found],
    "uio": [None if u is None else [u.vmbus_dir, u.name, u.node, u.map_size] for u in dev],
    "transport": daemon.choose_transport("/nonexistent/hv_fcopy", disc, Stopper()) if found else None,
}))
"""


def probe(tree: str) -> dict:  # type: ignore[type-arg]
    cp = run_in_tree(tree, "-c", PROBE)
    assert cp.returncode == 0, cp.stderr
    doc: dict = json_of(cp)  # type: ignore[type-arg]
    assert doc["kind"] == "SysfsDiscovery" and doc["sysfs_root"] == "/sys"
    return doc


def test_bound_to_uio_hv_generic() -> None:
    doc = probe("gen2-all-services")
    assert doc["devices"] == [FCOPY]
    assert doc["drivers"] == ["uio_hv_generic"]
    assert doc["uio"] == [[FCOPY, "uio0", "/dev/uio0", 0xA000]]
    assert doc["transport"] == "uio"


def test_offered_but_unbound() -> None:
    doc = probe("new-kernel-fcopy-unbound")
    assert doc["devices"] == [FCOPY]
    assert doc["drivers"] == [None]
    assert doc["uio"] == [None]
    assert doc["transport"] == "uio"  # the daemon binds it (new_id) and waits


def test_older_kernel_hv_utils_owns_it() -> None:
    doc = probe("old-kernel-fcopy-hv-utils")
    assert doc["devices"] == [FCOPY]
    assert doc["drivers"] == ["hv_utils"]
    assert doc["uio"] == [None]
    assert doc["transport"] == "legacy"  # /dev/vmbus/hv_fcopy is on its way


def test_guest_services_off_and_not_a_guest() -> None:
    for tree in ("no-guest-services", "not-a-guest"):
        doc = probe(tree)
        assert doc["devices"] == [] and doc["uio"] == [], tree
