# SPDX-License-Identifier: GPL-2.0-only
"""What each daemon loads into its memory: held to the modules it needs.

Every module imported stays in a daemon's resident memory for its life
(README.md, "Memory").  Each daemon's module is started here in a fresh
interpreter of the installed package, its command line parsed as at start;
the test asserts that none of the modules taken out of the daemons came
back: dataclasses (with inspect, ast and dis), typing, secrets (hashlib,
OpenSSL), shutil (bz2, lzma), argparse and gettext (the daemons parse with
getopt, hvdaemons.cli), logging (traceback, tokenize, string...:
hvdaemons.log speaks syslog instead), pyudev (with ctypes, libudev and
ctypes.util's shutil, subprocess and tempfile: the file-copy daemon reads
sysfs itself) and, where a daemon needs them only on a rare path,
subprocess and KVP's IP code.  The file-copy daemon is also started on a
made-up /sys (a private mount namespace), where it finds the device and
maps neither libudev nor ctypes for either transport.  RSS figures are
benchmarks/bench_rss.py's, not a test's.
"""

from __future__ import annotations

import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hvdaemons.protocol.kvp import KvpPool
from hvdaemons.protocol.status import HvStatus
from hvdaemons.vmbus import FCOPY_CLASS_ID, HV_UTILS_DRIVER, UIO_DRIVER
from hvsim.protocol import kvp as host_kvp
from tests.support.process import gone

# Out of every daemon: their cost is benchmarks/bench_rss.py --imports'.
NEVER = {
    "dataclasses",
    "inspect",
    "ast",
    "dis",
    "typing",
    "secrets",
    "hashlib",
    "shutil",
    "bz2",
    "lzma",
    "argparse",
    "gettext",
    "hvsim",
    "hvdaemons.ctl",
    # hvctl's: the file-copy daemon scans sysfs itself (hvdaemons.fcopy.discovery).
    "pyudev",
    "ctypes",
    # logging and what it brings: the daemons log through hvdaemons.log
    # (syslog), whose exception() imports traceback when it needs it.
    "logging",
    "traceback",
    "linecache",
    "tokenize",
    "token",
    "string",
    "textwrap",
    "weakref",
    # re is 0.2-0.4 MiB on top of a daemon: mountinfo, the VSS marker, the
    # file-copy temp names and MAC keys are parsed without it, shlex (which
    # brings it) is only for a failed helper's log line, and json is not
    # needed at all.
    "re",
    "json",
    "shlex",
}
# Per daemon, besides NEVER: what it imports only when a rare path needs it.
LATER = {
    "hvdaemons.kvp.daemon": {
        "subprocess",
        "hvdaemons.kvp.ipinfo",
        "hvdaemons.kvp.ipinject",
        "hvdaemons.kvp.helper",
        "hvdaemons.kvp.netlink",
    },
    # VSS imports everything it will ever need at start (a filesystem may be
    # frozen later), so what is absent here is what it never needs.
    "hvdaemons.vss.daemon": {"subprocess"},
    # modprobe only for a device left unbound.
    "hvdaemons.fcopy.daemon": {"subprocess"},
}

# How each daemon's main() parses its command line.
PARSER = {
    "hvdaemons.kvp.daemon": 'parse_args(["--no-daemon"])',
    "hvdaemons.vss.daemon": 'parse_args(["--no-daemon"])',
    "hvdaemons.fcopy.daemon": 'parse_args(["--no-daemon"], "hv_fcopy_daemon")',
}

# Prints what `more` prints, then the modules loaded since the interpreter started.
_CODE = """
import sys
before = set(sys.modules)
import {module} as daemon
daemon.{parser}
{more}
new = sorted(set(sys.modules) - before)
print(" ".join(new))
"""


def run_child(module: str, more: str = "") -> tuple[list[str], set[str]]:
    """Start module in a fresh interpreter, parse its command line, run more.

    Returns the lines more printed and the modules loaded.
    """
    # -I and / as the working directory: only the installed package is found.
    lines = subprocess.run(
        [sys.executable, "-I", "-c", _CODE.format(module=module, parser=PARSER[module], more=more)],
        cwd="/",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    names = set(lines[-1].split())
    assert module in names and "hvdaemons.log" in names  # the listing is real
    return lines[:-1], names


def tops(names: set[str]) -> set[str]:
    """names with every parent package: "hvdaemons.ctl.kvp" counts as "hvdaemons.ctl" too."""
    out = set()
    for name in names:
        parts = name.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return out


@pytest.mark.parametrize("module", sorted(LATER))
def test_a_started_daemon_leaves_out_what_it_does_not_need(module: str) -> None:
    _, names = run_child(module)
    assert sorted(tops(names) & (NEVER | LATER[module])) == []


def test_help_text_loads_nothing_taken_out() -> None:
    # cli.CommandLine lays out --help itself: no argparse, no terminal width (shutil).
    help_text, names = run_child("hvdaemons.kvp.daemon", "print(daemon.command_line().help())")
    assert "  --state-dir DIR " in "\n".join(help_text)
    assert sorted(tops(names) & (NEVER | LATER["hvdaemons.kvp.daemon"])) == []


def test_kvp_pool_requests_leave_the_ip_code_out(tmp_path: Path) -> None:
    requests = [
        host_kvp.encode_set_request(0, "key", "value"),
        host_kvp.encode_get_request(0, "key"),
        host_kvp.encode_enumerate_request(0, 0),
        # The auto pool's host name and OS name (not its address lists).
        host_kvp.encode_enumerate_request(KvpPool.AUTO, 0),
        host_kvp.encode_enumerate_request(KvpPool.AUTO, 5),
        host_kvp.encode_delete_request(0, "key"),
    ]
    more = f"""
from hvdaemons.kvp.daemon import KvpHandler, osinfo
from hvdaemons.kvp.paths import KvpPaths
from hvdaemons.kvp.pool import PoolSet
pools = PoolSet({str(tmp_path)!r})
pools.open()
paths = KvpPaths(state_dir={str(tmp_path)!r})
handler = KvpHandler(pools, osinfo.collect(paths), lambda: "guest", paths)
for m in {[r.hex() for r in requests]!r}:
    print(handler.handle(bytes.fromhex(m)).hex())
"""
    replies, names = run_child("hvdaemons.kvp.daemon", more)
    statuses = [host_kvp.decode_status_reply(bytes.fromhex(r)) for r in replies]
    assert statuses == [HvStatus.S_OK] * len(requests)
    assert sorted(tops(names) & (NEVER | LATER["hvdaemons.kvp.daemon"])) == []


# -- the file-copy daemon on a made-up /sys -----------------------------------------

# On a Hyper-V guest the real char device must stay out of reach: an empty /dev/vmbus.
_FAKE_SYS = """
set -e
mount -t tmpfs hvtest /sys
if [ -d /dev/vmbus ]; then mount -t tmpfs hvtest /dev/vmbus; fi
dev=/sys/bus/vmbus/devices/{guid}
mkdir -p "$dev" /sys/bus/vmbus/drivers/{driver}
echo '{{{guid}}}' > "$dev/class_id"
ln -s ../../../bus/vmbus/drivers/{driver} "$dev/driver"
exec "$@"
"""


def lines_until(proc: subprocess.Popen[str], pattern: str, timeout: float = 60) -> list[str]:
    """stderr lines of proc up to the first matching pattern (a hang guard: timeout)."""
    # A thread reads: select() on a buffered pipe misses lines already buffered.
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stderr is not None
    stderr = proc.stderr
    threading.Thread(target=lambda: [lines.put(x) for x in stderr], daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0))
        except queue.Empty:
            raise AssertionError(f"no line matching {pattern!r}; got {seen}") from None
        seen.append(line)
        if re.search(pattern, line):
            return seen


def maps_of(pid: int) -> str:
    with open(f"/proc/{pid}/maps") as f:
        return f.read()


@pytest.fixture()
def fcopy_on_fake_sys(request: pytest.FixtureRequest) -> Iterator[subprocess.Popen[str]]:
    """hv_fcopy_daemon -n in a private mount namespace whose /sys holds one file-copy device."""
    script = _FAKE_SYS.format(guid=FCOPY_CLASS_ID, driver=request.param)
    proc = subprocess.Popen(
        [
            *("unshare", "--mount", "--propagation", "private", "--"),
            *("sh", "-c", script, "sh", sys.executable, "-I", "-m", "hvdaemons.fcopy.daemon", "-n"),
        ],
        cwd="/",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    yield proc
    proc.terminate()
    assert gone(proc.pid)
    proc.wait()
    assert proc.stderr is not None
    proc.stderr.close()


def no_udev_in(pid: int) -> None:
    maps = maps_of(pid)
    assert "_cffi_backend" in maps  # the daemon's own map
    assert "libudev" not in maps and "_ctypes" not in maps


@pytest.mark.parametrize("fcopy_on_fake_sys", [HV_UTILS_DRIVER], indirect=True)
def test_fcopy_on_the_char_device_maps_no_udev(
    fcopy_on_fake_sys: subprocess.Popen[str],
) -> None:
    # hv_utils owns the device: the char device transport, without waiting for it.
    lines = lines_until(fcopy_on_fake_sys, r"HV_FCOPY: open /dev/vmbus/hv_fcopy failed")
    no_udev_in(int(re.findall(r"starting; pid is:(\d+)", "".join(lines))[0]))


@pytest.mark.parametrize("fcopy_on_fake_sys", [UIO_DRIVER], indirect=True)
def test_fcopy_for_the_uio_ring_finds_it_in_sysfs(fcopy_on_fake_sys: subprocess.Popen[str]) -> None:
    # The uio transport, on a /sys that is not sysfs (which libudev would not
    # read): the device is found, bound to uio_hv_generic, its uio node to come.
    lines = lines_until(
        fcopy_on_fake_sys, r"HV_UIO_FCOPY: waiting for uio_hv_generic to bind the file-copy device"
    )
    no_udev_in(int(re.findall(r"starting; pid is:(\d+)", "".join(lines))[0]))
