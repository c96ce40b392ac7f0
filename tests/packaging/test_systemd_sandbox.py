# SPDX-License-Identifier: GPL-2.0-only
"""The installed daemons working end to end inside the shipped units'
sandbox, under a real systemd (a Debian root with the .deb installed, booted
with systemd-nspawn).

There is no VMBus in the container, so each unit is derived from the one the
package installed by changing only what ties it to the device: the BindsTo=/
After= device dependency is dropped and ExecStart= gains --device pointing at
the installed simulator's socket. Every [Service] sandbox line is the
shipped one, so what is tested is the shipped confinement (capabilities,
ProtectSystem, seccomp filters, address families, device policy, ...).

VSS is only started, killed and thawed here, never asked to freeze: the
container's mount table includes file systems of the host (nspawn's
/run/host binds), and a freeze must only ever reach loop-mounted test images.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import ROOT_PACKAGES, Packages, cached_root_tar, need, run

SYSTEMD_PACKAGES = (*ROOT_PACKAGES, "systemd", "systemd-sysv", "dbus")


@pytest.fixture(scope="module")
def systemd_root_tar() -> Path:
    return cached_root_tar("systemd-root", SYSTEMD_PACKAGES)


def derived_unit(shipped: str, device_dep: str, exec_start: str, after: str) -> str:
    """The shipped unit with the device dependency swapped for the simulator."""
    out = []
    for line in shipped.splitlines():
        if line.startswith("BindsTo="):
            continue
        if line.startswith("After=") and device_dep in line:
            line = line.replace(device_dep, after)
        if line.startswith("ExecStart="):
            line = "ExecStart=" + exec_start
        out.append(line)
    return "\n".join(out) + "\n"


NSPAWN = (
    "systemd-nspawn",
    "--register=no",
    "--keep-unit",
    "-b",
    "--console=pipe",
    "--quiet",
)


class Container:
    def __init__(self, root: Path, argv: list[str] | None = None) -> None:
        """Boot root; argv: a command that ends by exec'ing systemd-nspawn (NSPAWN) itself."""
        self.root = root
        need("systemd-nspawn")
        self.proc = subprocess.Popen(
            argv or [*NSPAWN, "-D", str(root), "systemd.unit=multi-user.target"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            self.pid = self._init_pid()
            self._wait_booted()
        except BaseException:
            self.stop()
            raise

    def _wait_booted(self) -> None:
        deadline = time.monotonic() + 120
        while True:
            # Until systemd has its private socket, systemctl cannot connect.
            cp = self.sh("systemctl is-system-running --wait", check=False, timeout=120)
            if cp.stdout.strip() in ("running", "degraded"):
                return
            assert time.monotonic() < deadline, cp.stdout + cp.stderr
            time.sleep(0.2)

    def _init_pid(self) -> int:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "systemd-nspawn exited"
            kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
            if kids:
                return int(kids[0])
            time.sleep(0.1)
        raise AssertionError("container did not start")

    def sh(
        self, script: str, *, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return run(
            ["nsenter", "-t", str(self.pid), "-a", "sh", "-c", script], check=check, timeout=timeout
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # nspawn: orderly container shutdown
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def container(
    systemd_root_tar: Path, packages: Packages, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Container]:
    root = tmp_path_factory.mktemp("nspawn") / "root"
    root.mkdir()
    run(["tar", "--numeric-owner", "-xf", systemd_root_tar, "-C", root])
    debs = (packages.deb, packages.sim_deb)
    for deb in debs:
        (root / "tmp" / deb.name).write_bytes(deb.read_bytes())
    run(
        ["chroot", root, "apt-get", "install", "-y", *(f"/tmp/{deb.name}" for deb in debs)],
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive"},
    )

    units = root / "etc/systemd/system"
    sysdir = root / "lib/systemd/system"
    for svc, dev_unit, daemon in (
        ("kvp", r"sys-devices-virtual-misc-vmbus\x21hv_kvp.device", "hv_kvp_daemon"),
        ("vss", r"sys-devices-virtual-misc-vmbus\x21hv_vss.device", "hv_vss_daemon"),
        ("fcopy", "sys-subsystem-vmbus-devices-hv_fcopy.device", "hv_fcopy_daemon"),
    ):
        (units / f"hvsim-{svc}.service").write_text(
            f"[Service]\nType=notify\nExecStart=/usr/bin/hvsim serve --dir /run/hvsim-{svc} --service {svc}\n"
        )
        shipped = (sysdir / f"hv-{svc}-daemon.service").read_text()
        assert dev_unit in shipped
        (units / f"hvtest-{svc}.service").write_text(
            derived_unit(
                shipped,
                dev_unit,
                f"/usr/sbin/{daemon} --no-daemon --device /run/hvsim-{svc}/hv_{svc}",
                f"hvsim-{svc}.service",
            )
        )

    c = Container(root)
    try:
        yield c
    finally:
        c.stop()


def start(container: Container, svc: str) -> None:
    # The simulator (Type=notify: ready once its device sockets exist) must be
    # serving before the daemon's Type=notify start can succeed.
    for unit in (f"hvsim-{svc}.service", f"hvtest-{svc}.service"):
        cp = container.sh(f"systemctl start {unit}", check=False)
        status = container.sh(
            f"systemctl status --no-pager {unit}; journalctl --no-pager -u {unit} | tail -20",
            check=False,
        )
        assert cp.returncode == 0, cp.stderr + status.stdout


def test_kvp_daemon_in_its_sandbox(container: Container) -> None:
    start(container, "kvp")
    c = "hvsim kvp --dir /run/hvsim-kvp"
    assert container.sh(f"{c} set --pool 0 SandboxKey sandbox-value").returncode == 0
    assert "sandbox-value" in container.sh(f"{c} get --pool 0 SandboxKey").stdout
    pool = (container.root / "var/lib/hyperv/.kvp_pool_0").read_bytes()
    assert b"SandboxKey\0" in pool
    # Intrinsic items: hostname, OS from os-release, addresses over netlink.
    intrinsic = container.sh(f"{c} enumerate --pool 2").stdout
    assert "OSName = Debian GNU/Linux" in intrinsic, intrinsic
    assert re.search(r"NetworkAddressIPv4 = \S", intrinsic), intrinsic
    # GET_IP_INFO runs the helper scripts in /usr/libexec/hypervkvpd from
    # inside the sandbox (the container shares the host's interfaces).
    nic = container.sh(
        "for i in /sys/class/net/*; do [ $(basename $i) = lo ] || { cat $i/address; break; }; done"
    ).stdout.strip()
    assert nic
    cp = container.sh(f"{c} get-ip {nic}", check=False)
    assert cp.returncode == 0 and "ip_addr:" in cp.stdout, cp.stdout + cp.stderr
    state = container.sh("systemctl show -p ActiveState -p NRestarts hvtest-kvp.service").stdout
    assert "ActiveState=active" in state and "NRestarts=0" in state, state


def test_fcopy_daemon_in_its_sandbox(container: Container) -> None:
    """Copy-VMFile targets: a 0700 home directory of another user (needs
    CAP_DAC_OVERRIDE) and the real /tmp (no PrivateTmp)."""
    start(container, "fcopy")
    payload = os.urandom(250_000)
    (container.root / "srv/payload").write_bytes(payload)
    container.sh("mkdir -p /home/alice && chown 1000:1000 /home/alice && chmod 0700 /home/alice")
    c = "hvsim fcopy --dir /run/hvsim-fcopy copy"
    cp = container.sh(f"{c} --create-path /srv/payload /home/alice/incoming/payload", check=False)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    cp = container.sh(f"{c} /srv/payload /tmp/", check=False)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert (container.root / "home/alice/incoming/payload").read_bytes() == payload
    got = container.sh("cmp /srv/payload /tmp/payload && echo same", check=False)
    assert got.stdout.strip() == "same", got.stdout + got.stderr


def test_vss_daemon_in_its_sandbox_thaws_after_kill(container: Container) -> None:
    start(container, "vss")
    # What a freeze would cover is computed inside the sandbox (host mount
    # namespace, /proc/self/mountinfo readable); nothing is frozen.
    listing = container.sh("hv_vss_daemon --list").stdout
    assert "Would freeze" in listing or "would freeze" in listing, listing
    container.sh("systemctl kill -s KILL hvtest-vss.service")
    # ExecStopPost=hv_vss_daemon --thaw runs in the same sandbox; look at its
    # result in the RestartSec= window, before the next start resets it.
    show = wait_for(
        container,
        "hvtest-vss.service",
        ("ExecStopPost", "Result", "SubState"),
        lambda s: "code=exited" in s or "code=killed" in s or "code=dumped" in s,
    )
    assert re.search(
        r"argv\[\]=/usr/sbin/hv_vss_daemon --thaw ;.*code=exited ; status=0 }", show
    ), show
    assert "Result=signal" in show, show
    # Restart=on-failure brings it back (with a fresh simulator: the simulated
    # hv_vss device does not take a second opener).
    container.sh("systemctl restart hvsim-vss.service")
    wait_for(
        container,
        "hvtest-vss.service",
        ("ActiveState", "NRestarts"),
        lambda s: "ActiveState=active" in s and "NRestarts=1" in s,
    )


def wait_for(
    container: Container, unit: str, props: tuple[str, ...], ok: object, timeout: float = 30
) -> str:
    deadline = time.monotonic() + timeout
    args = " ".join(f"-p {p}" for p in props)
    while True:
        show = container.sh(f"systemctl show {args} {unit}").stdout
        if ok(show):  # type: ignore[operator]
            return show
        assert time.monotonic() < deadline, show
        time.sleep(0.05)


# hvctl status inside the container, with the devices of a Generation 2 guest
# (the container has no VMBus) and the daemon state from the real systemd.
HVCTL_GEN2 = """\
import sys
sys.path.insert(0, "/usr/lib/hvdaemons")
from hvdaemons.ctl.devices import DeviceView, VmbusDevice
from hvdaemons.ctl.main import main
HV = "hv_utils"
view = DeviceView(
    (
        VmbusDevice("a", "a9a0f4e7-5a45-4d96-b827-8a841e8c03e6", "a", HV),
        VmbusDevice("b", "35fa2e29-ea23-4236-96ae-3a6ebacba440", "b", HV),
        VmbusDevice("c", "34d14be3-dee4-41c8-9ae7-6b174977c192", "c", HV),
    ),
    {"vmbus/hv_kvp": "/dev/vmbus/hv_kvp", "vmbus/hv_vss": "/dev/vmbus/hv_vss",
     "vmbus/hv_fcopy": "/dev/vmbus/hv_fcopy"},
)
sys.exit(main(sys.argv[1:], devices=lambda: view))
"""


def test_status_lines_hvctl_and_the_watchdog(container: Container) -> None:
    """STATUS= lines in systemctl status and hvctl status; a stuck KVP daemon is restarted."""
    start(container, "kvp")
    unit = "hvtest-kvp.service"
    show = wait_for(container, unit, ("StatusText",), lambda s: "registered with" in s)
    assert "StatusText=registered with protocol version 3.1" in show, show
    container.sh("hvsim kvp --dir /run/hvsim-kvp get --pool 1 NoSuchKey", check=False)
    show = wait_for(container, unit, ("StatusText",), lambda s: "last request" in s)
    assert re.search(r"; last request GET pool 1 at \d\d:\d\d:\d\d$", show.strip()), show
    status = container.sh(f"systemctl status --no-pager {unit}", check=False).stdout
    assert "Status: \"registered with protocol version 3.1; last request GET pool 1" in status

    # hvctl status asks systemd about hv-kvp-daemon.service & co.: here aliases
    # of the test units.
    for svc in ("kvp", "vss", "fcopy"):
        container.sh(
            f"ln -sf /etc/systemd/system/hvtest-{svc}.service "
            f"/etc/systemd/system/hv-{svc}-daemon.service"
        )
    container.sh("systemctl daemon-reload")
    (container.root / "srv/hvctl_gen2.py").write_text(HVCTL_GEN2)
    cp = container.sh("python3 -I /srv/hvctl_gen2.py status --json", check=False)
    doc = json.loads(cp.stdout)
    kvp = next(r for r in doc["services"] if r["key"] == "kvp")
    assert kvp["daemon"]["how"] == "systemd", kvp
    assert kvp["daemon"]["state"] == "hv-kvp-daemon.service: active (running)"
    assert kvp["daemon"]["status"].startswith("registered with protocol version 3.1; last request")
    assert kvp["working"] is True
    text = container.sh("python3 -I /srv/hvctl_gen2.py status", check=False).stdout
    assert "  status     registered with protocol version 3.1; last request GET pool 1" in text

    # The watchdog, 2 s instead of the shipped 60 s so the test is quick.
    drop = container.root / f"etc/systemd/system/{unit}.d"
    drop.mkdir(parents=True, exist_ok=True)
    (drop / "watchdog.conf").write_text("[Service]\nWatchdogSec=2s\n")
    container.sh(f"systemctl daemon-reload && systemctl stop {unit}")
    container.sh("systemctl restart hvsim-kvp.service")
    start(container, "kvp")
    first = wait_for(container, unit, ("WatchdogTimestampMonotonic",), lambda s: "=0" not in s)
    wait_for(container, unit, ("WatchdogTimestampMonotonic",), lambda s: s != first)
    pid = container.sh(f"systemctl show -p MainPID --value {unit}").stdout.strip()
    # Stuck for good: another program holds the pool's flock() lock, and the
    # host's next SET makes the request loop wait for it.
    container.sh("systemd-run --unit=hvtest-locker flock /var/lib/hyperv/.kvp_pool_1 sleep 600")
    try:
        container.sh("systemd-run --unit=hvtest-set hvsim kvp --dir /run/hvsim-kvp set --pool 1 K V")
        journal = ""
        deadline = time.monotonic() + 60
        while "Watchdog timeout" not in journal:
            assert time.monotonic() < deadline, journal
            time.sleep(0.2)
            journal = container.sh(f"journalctl --no-pager -u {unit}", check=False).stdout
        container.sh("systemctl restart hvsim-kvp.service")
        show = wait_for(
            container,
            unit,
            ("ActiveState", "SubState", "NRestarts", "MainPID"),
            lambda s: "NRestarts=0" not in s and "SubState=running" in s,
            timeout=60,
        )
        assert f"MainPID={pid}\n" not in show, show
    finally:
        container.sh("systemctl stop hvtest-locker.service hvtest-set.service", check=False)
        (drop / "watchdog.conf").unlink()
        container.sh("systemctl daemon-reload", check=False)
