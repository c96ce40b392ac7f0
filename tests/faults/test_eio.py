# SPDX-License-Identifier: GPL-2.0-only
"""EIO under the daemons: the filesystem holding the KVP pools, or a copy's target, shuts down.

An XFS image, loop-mounted in an FsBox (hvsim/fsbox.py: a private mount
namespace holding only test images), is shut down with XFS_IOC_GOINGDOWN
mid-run, as XFS does itself on a metadata I/O error: from then on every
read, write, open and fsync on it fails with EIO, for real, in the kernel.
(No device-mapper here for a dm `error` target.)  No FIFREEZE is involved.
Ours beside Debian's reference C daemons (bookworm; trixie for KVP too).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from hvdaemons.protocol.fcopy import CREATE_PATH, DATA_FRAGMENT
from hvdaemons.protocol.status import HvStatus
from hvsim import launch
from hvsim.chardev import ChardevKernel
from hvsim.fcopy import FcopyHost
from hvsim.fsbox import FsBox, FsSpec
from hvsim.kvp import KvpHost, packaged_scripts_dir
from tests.reference import refdaemons
from tests.soak.targets import LogTail
from tests.support.vss_sandbox import sandbox

S_OK, E_FAIL = HvStatus.S_OK, HvStatus.E_FAIL
DISK = "/mnt/x"


@contextmanager
def boxed(
    service: str, kind: str
) -> Iterator[tuple[FsBox, ChardevKernel, subprocess.Popen[bytes], LogTail]]:
    """A daemon in a box whose /mnt/x is an XFS image; KVP pools on it (/var/lib/hyperv for C)."""
    with sandbox([FsSpec("x", "xfs")], sysfs=False) as box:
        assert box.run(["mkdir", f"{DISK}/state", f"{DISK}/dest"]).returncode == 0
        kernel = ChardevKernel(f"{box.sim_dir}/hv_{service}", f"hv_{service}", timeout=5.0)
        name = f"hv_{service}_daemon"
        env: dict[str, str] = {}
        if kind == "ours":
            argv = [*launch.daemon_argv(name), "-n", "--device", kernel.path]
            if service == "kvp":
                scripts = packaged_scripts_dir()
                assert scripts
                argv += ["--state-dir", f"{DISK}/state", "--scripts-dir", scripts]
        else:
            argv = [str(refdaemons.ref_daemon(kind, name)), "-n"]
            env = {
                "LD_PRELOAD": str(refdaemons.build_shim()),
                "HVSHIM_DIR": box.sim_dir,
                "HVSHIM_NO_SYSLOG": "1",
            }
            # Its pool directory is built in: bind the test disk there, in a
            # namespace of its own inside the box.  The box's root is read-only
            # and a fresh machine has no /var/lib/hyperv: the mount point is
            # made in a tmpfs over /var/lib, seen only by this daemon.
            argv = refdaemons.sandbox_argv(
                argv, tmpfs=("/var/lib",), binds={f"{DISK}/state": "/var/lib/hyperv"}
            )
        proc = box.popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        log = LogTail(proc)
        try:
            assert kernel.wait_registered(30), log.tail(20)
            yield box, kernel, proc, log
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            kernel.close()


@pytest.mark.parametrize("kind", ["ours", *refdaemons.RELEASES])
def test_kvp_pools_on_a_filesystem_that_fails_with_eio(kind: str) -> None:
    """Ours answers HV_E_FAIL to the requests on the dead pools, names the request, the pool
    and the error, and keeps serving what needs no pool file; the C daemon exits."""
    with boxed("kvp", kind) as (box, kernel, proc, log):
        host = KvpHost(kernel)
        assert log.wait_for("KVP LIC Version", 0, 10)
        assert [host.set(0, f"k{i}", f"v{i}").status for i in range(3)] == [S_OK] * 3
        box.shutdown(DISK)
        mark = log.mark()
        assert host.set(0, "k3", "v3").status == E_FAIL
        assert host.get(0, "k0").status == E_FAIL
        assert host.set(3, "p", "q").status == E_FAIL
        if kind == "ours":
            assert log.wait_for("SET: pool 0: error: 5 Input/output error", mark, 5)
            assert log.wait_for("GET: pool 0: error: 5 Input/output error", mark, 5)
            assert log.wait_for("SET: pool 3: error: 5 Input/output error", mark, 5)
            # The intrinsic items are computed, not read from a pool: still served.
            assert host.enumerate(2, 0).status == S_OK
            assert proc.poll() is None
        else:
            # The C daemon exits on the first request after the disk died; the
            # kernel answers HV_E_FAIL for it from then on.
            assert log.wait_for(
                "Failed to open file, pool: 0; error: 5 Input/output error", mark, 5
            )
            assert proc.wait(10) == 1
            assert not kernel.wait_registered(1)


@pytest.mark.parametrize("kind", ["ours", "bookworm"])
def test_a_copy_onto_a_filesystem_that_fails_with_eio(kind: str) -> None:
    """The WRITE fails for both.  Ours fails the COMPLETE too; the C daemon answers the
    COMPLETE with HV_S_OK, so the host takes a broken file for a copied one."""
    with boxed("fcopy", kind) as (box, kernel, proc, log):
        host = FcopyHost(kernel)
        data = b"e" * (3 * DATA_FRAGMENT)
        assert host.start("f.bin", f"{DISK}/dest", CREATE_PATH, len(data)) == S_OK
        assert host.write(0, data[:DATA_FRAGMENT]) == S_OK
        box.shutdown(DISK)
        mark = log.mark()
        assert host.write(DATA_FRAGMENT, data[DATA_FRAGMENT : 2 * DATA_FRAGMENT]) == E_FAIL
        complete = host.complete()
        if kind == "ours":
            assert complete == E_FAIL
            assert log.wait_for("Input/output error; discarding the partial file", mark, 5)
        else:
            assert complete == S_OK
            assert log.wait_for("pwrite failed", mark, 5)
        # The next copy, to a healthy filesystem, works.
        assert host.start("g.bin", "/run", 0, 1) == S_OK
        assert host.write(0, b"g") == S_OK and host.complete() == S_OK
        assert box.run(["cat", "/run/g.bin"]).stdout == "g"
        assert proc.poll() is None
