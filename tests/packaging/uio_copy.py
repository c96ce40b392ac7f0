# SPDX-License-Identifier: GPL-2.0-only
"""uio_copy.py VARIANT SOURCE DEST_DIR -- run inside a root with hvdaemons and
hvdaemons-sim installed (test_arm64.py copies it there).

The installed hv_fcopy_uio_daemon (its /usr/sbin launcher) serves the installed
simulator's uio_hv_generic device, as the kernel VARIANT (hvsim.uio.VARIANTS)
offers it, and the simulated host copies SOURCE into DEST_DIR twice: as
host.bin through the strict Python host (it only reads a response after the
guest's signal), as fast.bin streamed by the C host with spinning.  Prints one
JSON object with what the host saw; the test asserts on it and on the files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

# The packages' private directory, as their launchers put it first.
sys.path.insert(0, "/usr/lib/hvdaemons")

from hvsim import launch, uio

DAEMON = "/usr/sbin/hv_fcopy_uio_daemon"
TIMEOUT = 120.0  # a hang guard: qemu-user runs the daemon and the host


def copy_report(result: uio.CopyResult) -> dict[str, object]:
    return {
        "start": result.start,
        "writes": len(result.writes),
        "write_failures": result.write_failures,
        "finish": result.finish,
        "ok": result.ok,
    }


def main(argv: list[str]) -> int:
    variant, source, dest = argv[1:4]
    report: dict[str, object] = {"variant": variant}
    with tempfile.TemporaryDirectory(prefix="uio-copy-") as tmp:
        root = os.path.join(tmp, "sim")
        log_path = os.path.join(tmp, "daemon.log")
        sim = uio.UioSim(root, variant)
        try:
            sim.offer()
            with open(log_path, "ab") as log:
                proc = launch.popen(
                    [
                        DAEMON,
                        "-n",
                        "--sysfs-root",
                        os.path.join(root, "sys"),
                        "--dev-root",
                        os.path.join(root, "dev"),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            try:
                uio._wait_bound(sim, TIMEOUT, proc)
                host = uio.UioHost(sim, timeout=TIMEOUT)
                host.connect(TIMEOUT)
                status, _ = host.negotiate()
                report["negotiate"] = status
                report["versions"] = host.negotiated
                report["host"] = copy_report(host.copy_file(source, dest, "host.bin"))
                fast = uio.UioHost(sim, timeout=TIMEOUT, spin_ns=100_000)
                fast._trans_id = host._trans_id + 1_000_000  # a fresh range of ids
                report["fast"] = copy_report(fast.copy_file(source, dest, "fast.bin", fast=True))
            finally:
                proc.terminate()
                report["exit"] = proc.wait(TIMEOUT)
            report["new_id_writes"] = sim.new_id_writes
        finally:
            sim.close()
            with open(log_path, encoding="utf-8", errors="replace") as f:
                report["log"] = f.read().splitlines()
            print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
