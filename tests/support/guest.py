# SPDX-License-Identifier: GPL-2.0-only
"""A guest's networking for the real hv_kvp_daemon and a real systemd-networkd (not a test module).

A network namespace with veth NICs, and a private mount namespace, held by
an anchor process, in which:

* /run is a tmpfs: networkd's state and the D-Bus socket live there, and no
  NetworkManager state of the host is seen;
* /sys is the namespace's own sysfs, read-only (networkd then does not wait
  for a udev that is not there);
* a synthetic NIC's sysfs directory is a read-only overlay adding
  device/device_id (its VMBus GUID): every other attribute, the MAC
  address included, is the kernel's;
* /usr/libexec is an overlay adding hypervkvpd/ with the helper scripts
  installed as packaging/build.py installs them (no ".sh", mode 0755);
* /etc/systemd/network is a scratch directory, /etc/resolv.conf a scratch
  file, and the other network configuration directories present on the
  host are empty tmpfs, so that the daemon finds networkd whatever the
  host runs, and nothing of the host's configuration is touched.

A D-Bus system bus and systemd-networkd run in it (networkctl reload and
reconfigure are bus calls), and the daemon under test, with its default
paths except --state-dir.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import hvdaemons.kvp
from hvsim import launch
from hvsim.chardev import ChardevKernel
from hvsim.kvp import KvpHost
from tests.reference.refdaemons import LogReader
from tests.support.kvp import PKG_ROOT, daemon_argv, daemon_env
from tests.support.netns import NetNs

SCRIPTS = Path(hvdaemons.kvp.__file__).resolve().parent / "scripts"
NETWORKD_CANDIDATES = ("/usr/lib/systemd/systemd-networkd", "/lib/systemd/systemd-networkd")
# The host's network configuration directories hidden in the guest.
HIDDEN = (
    "/etc/netplan",
    "/etc/network",
    "/etc/sysconfig/network-scripts",
    "/etc/NetworkManager/system-connections",
)

# Runs in the new mount namespace: directories and NICs come as arguments,
# never inside the script text.
SETUP = r"""
set -eu
work=$1
shift
mount -t tmpfs hvguest-run /run
mkdir -p /run/dbus /run/systemd/netif
chown systemd-network:systemd-network /run/systemd/netif
for d in /etc/netplan /etc/network /etc/sysconfig/network-scripts /etc/NetworkManager/system-connections; do
	if [ -d "$d" ]; then mount -t tmpfs hvguest-hide "$d"; fi
done
mount --bind "$work/networkd" /etc/systemd/network
resolv=$(readlink -m /etc/resolv.conf)
mkdir -p "${resolv%/*}"
[ -e "$resolv" ] || : >"$resolv"
mount --bind "$work/resolv.conf" "$resolv"
mount -t overlay hvguest-libexec -o "lowerdir=$work/libexec:/usr/libexec" /usr/libexec
while [ $# -gt 0 ]; do
	dev=$(readlink -f "/sys/class/net/$2")
	mount -t overlay hvguest-sysfs -o "lowerdir=$work/sysfs/$1:$dev" "$dev"
	shift 2
done
mount -o remount,ro /sys
echo ready
read -r _ || :
"""


def _prerequisite(path: str | None, what: str) -> str:
    if path is None or not os.access(path, os.X_OK):
        raise AssertionError(f"missing prerequisite: {what}")
    return path


@dataclass
class Nic:
    name: str
    mac: str  # lower case, as sysfs shows it
    guid: str | None = None  # a VMBus device GUID: a synthetic NIC


@dataclass
class Guest:
    work: Path
    nics: Sequence[Nic]
    # The helper scripts installed in /usr/libexec/hypervkvpd: the package's by default.
    scripts: Path = SCRIPTS
    resolv_conf: str = ""
    # .network files in /etc/systemd/network before networkd starts.
    networkd_files: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.netns = NetNs()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.anchor: subprocess.Popen[bytes] | None = None
        self.kernel: ChardevKernel | None = None
        self.daemon: subprocess.Popen[bytes] | None = None
        self.daemon_log: LogReader | None = None
        self.networkd: subprocess.Popen[bytes] | None = None

    # -- paths as the test sees them

    @property
    def networkd_dir(self) -> Path:
        """/etc/systemd/network inside."""
        return self.work / "networkd"

    @property
    def state_dir(self) -> Path:
        return self.work / "state"

    @property
    def networkd_log(self) -> Path:
        return self.work / "networkd.log"

    def inside(self, absolute: str) -> Path:
        """A path of the guest's mount namespace, seen from outside."""
        assert self.anchor is not None
        return Path(f"/proc/{self.anchor.pid}/root") / absolute.lstrip("/")

    # -- setting up

    def start(self) -> Guest:
        networkd = _prerequisite(
            next((p for p in NETWORKD_CANDIDATES if os.path.exists(p)), None), "systemd-networkd"
        )
        for tool in ("dbus-daemon", "networkctl", "busctl"):
            _prerequisite(shutil.which(tool), tool)
        self.netns.sh("echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad")
        for n, nic in enumerate(self.nics):
            self.netns.veth(nic.name, nic.mac, f"hvpeer{n}", f"02:00:00:00:0f:{n:02x}")
        self._prepare()
        argv = ["ip", "netns", "exec", self.netns.name, "sh", "-c", SETUP, "setup", str(self.work)]
        for n, nic in enumerate(self.nics):
            if nic.guid is not None:
                argv += [str(n), nic.name]
        self.anchor = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.anchor.stdout is not None
        if self.anchor.stdout.readline() != b"ready\n":
            raise AssertionError(f"guest set-up failed: exit {self.anchor.wait(30)}")
        self._start_bus()
        with open(self.networkd_log, "wb") as log:
            self.networkd = self.spawn([networkd], stderr=log)
        self._wait_for_networkd()
        return self

    def _prepare(self) -> None:
        for n, nic in enumerate(self.nics):
            if nic.guid is not None:
                device = self.work / "sysfs" / str(n) / "device"
                device.mkdir(parents=True)
                (device / "device_id").write_text(nic.guid + "\n")
        libexec = self.work / "libexec" / "hypervkvpd"
        libexec.mkdir(parents=True)
        for script in sorted(self.scripts.glob("hv_*")):
            shutil.copy2(script, libexec / script.name)
            (libexec / script.name).chmod(0o755)
        self.networkd_dir.mkdir()
        for name, text in self.networkd_files.items():
            (self.networkd_dir / name).write_text(text)
        (self.work / "resolv.conf").write_text(self.resolv_conf)
        self.state_dir.mkdir()

    def spawn(self, argv: list[str], **kw: object) -> subprocess.Popen[bytes]:
        """A process in the guest (both namespaces)."""
        assert self.anchor is not None
        kw.setdefault("stdin", subprocess.DEVNULL)
        proc: subprocess.Popen[bytes] = subprocess.Popen(  # type: ignore[call-overload]
            ["nsenter", "-t", str(self.anchor.pid), "-m", "-n", "--", *argv], **kw
        )
        self.procs.append(proc)
        return proc

    def run(self, argv: list[str]) -> str:
        assert self.anchor is not None
        return subprocess.run(
            ["nsenter", "-t", str(self.anchor.pid), "-m", "-n", "--", *argv],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout

    def _start_bus(self) -> None:
        bus = self.spawn(
            ["dbus-daemon", "--system", "--nofork", "--nopidfile", "--print-address=1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert bus.stdout is not None
        # The address is printed once the daemon listens.
        if not bus.stdout.readline():
            raise AssertionError("dbus-daemon did not start")

    def _wait_for_networkd(self, timeout: float = 60) -> None:
        # networkctl reload and reconfigure need networkd on the bus.
        ask = ["busctl", "--system", "call", "org.freedesktop.DBus", "/org/freedesktop/DBus"]
        ask += ["org.freedesktop.DBus", "NameHasOwner", "s", "org.freedesktop.network1"]
        self.wait_until("networkd on the bus", lambda: self.run(ask).strip() == "b true", timeout)

    def start_daemon(self) -> KvpHost:
        """Our hv_kvp_daemon in the guest, as installed: default paths but --state-dir."""
        self.kernel = ChardevKernel(str(self.work / "hv_kvp"), "hv_kvp", timeout=60)
        env = daemon_env()
        for name in ("HV_KVP_ROOT", "HV_KVP_NETSTACK", "HV_KVP_CONFIG"):
            env.pop(name, None)
        argv = [*daemon_argv(), "-n", "--device", self.kernel.path]
        self.daemon = self.spawn(
            [*argv, "--state-dir", str(self.state_dir)],
            cwd=str(PKG_ROOT),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.daemon_log = LogReader(self.daemon)
        assert self.kernel.wait_registered(60), "\n".join(self.daemon_log.drain(1))
        return KvpHost(self.kernel)

    # -- looking at it

    def addresses(self, nic: str) -> list[str]:
        """ADDRESS/PREFIX of every address on nic, as `ip` lists them."""
        out = self.run(["ip", "-o", "addr", "show", "dev", nic])
        return [line.split()[3] for line in out.splitlines()]

    def default_gateways(self, nic: str) -> list[str]:
        out = self.run(["ip", "-o", "route", "show", "default", "dev", nic])
        out += self.run(["ip", "-o", "-6", "route", "show", "default", "dev", nic])
        return [line.split()[2] for line in out.splitlines()]

    def wait_until(self, what: str, done: Callable[[], bool], timeout: float = 60) -> None:
        """Wait for a state change of the guest; the timeout is a hang guard."""
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"not reached: {what}; networkd said:\n{self.networkd_log.read_text()}"
                )
            time.sleep(0.05)

    def networkd_said(self, line: str) -> bool:
        return line in self.networkd_log.read_text().splitlines()

    # -- tearing down

    def close(self) -> None:
        if self.daemon is not None:
            launch.stop(self.daemon)
        for proc in reversed(self.procs):
            launch.stop(proc)
        if self.kernel is not None:
            self.kernel.close()
        if self.anchor is not None:
            assert self.anchor.stdin is not None
            self.anchor.stdin.close()
            self.anchor.wait(30)
        self.netns.delete()
