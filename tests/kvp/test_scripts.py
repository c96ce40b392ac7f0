# SPDX-License-Identifier: GPL-2.0-only
"""The shipped KVP helper scripts (hvdaemons/kvp/scripts), run for real against
a scratch root (HV_KVP_ROOT) for each network stack.  hv_set_ifconfig gets
what the daemon hands it (tests/kvp/renderers/expected/).

nmcli, networkctl, netplan, resolvectl, ifup and ifdown are external programs
the scripts drive; stubs placed first on PATH stand in for them, record their
argv and answer from a table.  The real /etc is never touched.
"""

from __future__ import annotations

import json
import pathlib
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

import hvdaemons.kvp
from tests.kvp.renderers.cases import CASES, expected

SCRIPTS = pathlib.Path(hvdaemons.kvp.__file__).resolve().parent / "scripts"

STUB = f"""#!{sys.executable}
import json, os, sys
argv = [os.path.basename(sys.argv[0])] + sys.argv[1:]
with open(os.environ["STUB_LOG"], "a") as f:
    f.write(json.dumps(argv) + "\\n")
with open(os.environ["STUB_RESPONSES"]) as f:
    table = json.load(f)
answer = table.get(" ".join(argv)) or table.get(argv[0] + " *") or {{}}
sys.stdout.write(answer.get("out", ""))
sys.exit(answer.get("rc", 0))
"""

STUB_NAMES = ("nmcli", "networkctl", "netplan", "resolvectl", "ifup", "ifdown")


@dataclass
class Sandbox:
    tmp: pathlib.Path
    root: pathlib.Path
    stubs: pathlib.Path
    responses: dict[str, dict[str, object]] = field(default_factory=dict)

    @property
    def log(self) -> pathlib.Path:
        return self.tmp / "calls.jsonl"

    def file(self, rel: str, text: str = "") -> pathlib.Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def dir(self, rel: str) -> pathlib.Path:
        path = self.root / rel
        path.mkdir(parents=True, exist_ok=True)
        return path

    def answer(self, command: str, out: str = "", rc: int = 0) -> None:
        self.responses[command] = {"out": out, "rc": rc}

    def run(
        self, script: str, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        (self.tmp / "responses.json").write_text(json.dumps(self.responses))
        full_env = {
            "PATH": f"{self.stubs}:/usr/sbin:/usr/bin:/sbin:/bin",
            "HV_KVP_ROOT": str(self.root),
            "STUB_LOG": str(self.log),
            "STUB_RESPONSES": str(self.tmp / "responses.json"),
            "LC_ALL": "C",
        }
        full_env.update(env or {})
        return subprocess.run(
            [str(SCRIPTS / script), *args],
            env=full_env,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=self.tmp,
        )

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def inputs(self, ifcfg: str) -> tuple[str, str]:
        """The two files the daemon hands hv_set_ifconfig (the keyfile is not read)."""
        state = self.tmp / "state"
        state.mkdir(exist_ok=True)
        a = state / "ifcfg-IF"
        b = state / "IF.nmconnection"
        a.write_text(ifcfg)
        b.write_text("")
        return str(a), str(b)


@pytest.fixture
def sb(tmp_path: pathlib.Path) -> Iterator[Sandbox]:
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    for name in STUB_NAMES:
        (stubs / name).write_text(STUB)
        (stubs / name).chmod(0o755)
    root = tmp_path / "root"
    root.mkdir()
    yield Sandbox(tmp_path, root, stubs)


def mode(path: pathlib.Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_scripts_are_executable_posix_sh() -> None:
    for name in ("hv_get_dhcp_info", "hv_get_dns_info", "hv_set_ifconfig"):
        path = SCRIPTS / name
        assert mode(path) & 0o111 == 0o111
        text = path.read_text()
        assert text.startswith("#!/bin/sh\n")
        assert "\nset -u\n" in text
        # dash is a strict POSIX shell: -n parses without running.
        subprocess.run(["dash", "-n", str(path)], check=True)


# ------------------------------------------------------------ hv_set_ifconfig

# Where each backend's file goes, its mode, and what applies it.
INSTALL = {
    "netplan": ("etc/netplan/90-hyperv-{}.yaml", 0o600),
    "nm": ("etc/NetworkManager/system-connections/hyperv-{}.nmconnection", 0o600),
    "networkd": ("etc/systemd/network/05-hyperv-{}.network", 0o644),
    "ifupdown": ("etc/network/interfaces.d/hyperv-{}", 0o644),
    "ifcfg": ("etc/sysconfig/network-scripts/ifcfg-{}", 0o644),
}


def applied(backend: str, dev: str, dest: pathlib.Path) -> list[list[str]]:
    return {
        "netplan": [["netplan", "apply"]],
        "nm": [
            ["nmcli", "connection", "load", str(dest)],
            ["nmcli", "-w", "15", "connection", "up", "id", f"hyperv-{dev}"],
        ],
        "networkd": [["networkctl", "reload"], ["networkctl", "reconfigure", "--", dev]],
        "ifupdown": [["ifdown", "--", dev], ["ifup", "--", dev]],
        "ifcfg": [["ifdown", dev], ["ifup", dev]],
    }[backend]


def set_ifconfig(
    sb: Sandbox, backend: str, case: str = "static", *, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """hv_set_ifconfig as the daemon runs it: the two files, the staged one named in the environment."""
    staged = sb.tmp / "state" / f"staged.{backend}"
    ifcfg, keyfile = sb.inputs(expected("handoff", case, ".ifcfg"))
    staged.write_text(expected(backend, case))
    full_env = {"HV_KVP_NETSTACK": backend, "HV_KVP_CONFIG": str(staged), **(env or {})}
    return sb.run("hv_set_ifconfig", ifcfg, keyfile, env=full_env)


@pytest.mark.parametrize("backend", INSTALL)
def test_set_installs_and_applies(sb: Sandbox, backend: str) -> None:
    proc = set_ifconfig(sb, backend)
    assert (proc.returncode, proc.stderr) == (0, "")
    dest = sb.root / INSTALL[backend][0].format("eth0")
    assert dest.read_text() == expected(backend, "static")
    assert mode(dest) == INSTALL[backend][1]
    assert sb.calls() == applied(backend, "eth0", dest)
    # Atomically: nothing left beside it.
    assert sorted(p.name for p in dest.parent.iterdir()) == [dest.name]


@pytest.mark.parametrize("backend", INSTALL)
def test_set_odd_interface_name(sb: Sandbox, backend: str) -> None:
    # The name reaches paths and tools as one argument, never as shell text.
    proc = set_ifconfig(sb, backend, "odd-name")
    assert proc.returncode == 0, proc.stderr
    dev = CASES["odd-name"].ifname
    dest = sb.root / INSTALL[backend][0].format(dev)
    assert dest.read_text() == expected(backend, "odd-name")
    assert sb.calls() == applied(backend, dev, dest)


@pytest.mark.parametrize(
    "backend,tool,message",
    [
        ("netplan", "netplan apply", "netplan apply failed"),
        ("nm", "nmcli -w 15 connection up id hyperv-eth0", "nmcli connection up failed"),
        ("networkd", "networkctl reload", "networkctl reload failed"),
        ("ifupdown", "ifup -- eth0", "ifup eth0 failed"),
        ("ifcfg", "ifup eth0", "ifup eth0 failed"),
    ],
)
def test_set_apply_fails(sb: Sandbox, backend: str, tool: str, message: str) -> None:
    sb.answer(tool, rc=1)
    # ifdown failing (the interface was down) does not matter.
    sb.answer("ifdown *", rc=1)
    proc = set_ifconfig(sb, backend)
    assert (proc.returncode, proc.stderr) == (1, f"hv_set_ifconfig: {message}\n")


def test_set_refusals(sb: Sandbox) -> None:
    def refused(proc: subprocess.CompletedProcess[str], message: str) -> None:
        assert (proc.returncode, proc.stderr) == (1, f"hv_set_ifconfig: {message}\n")
        assert sb.calls() == []
        assert not any(p.is_file() for p in sb.root.rglob("*"))

    refused(sb.run("hv_set_ifconfig"), "usage: hv_set_ifconfig IFCFG_FILE [NMCONNECTION_FILE]")
    missing = str(sb.tmp / "missing")
    refused(sb.run("hv_set_ifconfig", missing), f"cannot read {missing}")
    ifcfg, keyfile = sb.inputs("HWADDR=00:11:22:33:44:55\nDEVICE=../x\n")
    refused(sb.run("hv_set_ifconfig", ifcfg, keyfile), f"bad or missing DEVICE in {ifcfg}")
    ifcfg, keyfile = sb.inputs(expected("handoff", "static", ".ifcfg"))
    # Run by hand, or by a daemon that found nothing: no backend, no file.
    refused(
        sb.run("hv_set_ifconfig", ifcfg, keyfile),
        "no supported network configuration system found",
    )
    refused(
        sb.run("hv_set_ifconfig", ifcfg, keyfile, env={"HV_KVP_NETSTACK": "wicked"}),
        "unknown HV_KVP_NETSTACK 'wicked'",
    )
    refused(
        sb.run("hv_set_ifconfig", ifcfg, keyfile, env={"HV_KVP_NETSTACK": "networkd"}),
        "no networkd configuration to install (HV_KVP_CONFIG): hv_kvp_daemon renders it",
    )


def test_set_cannot_install(sb: Sandbox) -> None:
    (sb.root / "etc").write_text("not a directory")
    proc = set_ifconfig(sb, "networkd")
    dest = sb.root / INSTALL["networkd"][0].format("eth0")
    assert proc.returncode == 1 and f"hv_set_ifconfig: cannot write {dest}" in proc.stderr
    assert sb.calls() == []


# ------------------------------------------------------------ hv_get_dhcp_info


def dhcp(sb: Sandbox, *args: str) -> str:
    proc = sb.run("hv_get_dhcp_info", *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_dhcp_networkmanager(sb: Sandbox) -> None:
    sb.dir("run/NetworkManager")
    sb.answer("nmcli -t -f RUNNING general", "running\n")
    path = "/org/freedesktop/NetworkManager/ActiveConnection/3"
    sb.answer("nmcli -g GENERAL.CON-PATH device show a;b$c", path + "\n")
    sb.answer(f"nmcli -g ipv4.method connection show apath {path}", "auto\n")
    assert dhcp(sb, "a;b$c") == "Enabled\n"
    sb.answer(f"nmcli -g ipv4.method connection show apath {path}", "manual\n")
    assert dhcp(sb, "a;b$c") == "Disabled\n"
    # Not activated by NetworkManager: nothing else manages it here.
    assert dhcp(sb, "eth7") == "Disabled\n"
    assert ["nmcli", "-g", "GENERAL.CON-PATH", "device", "show", "eth7"] in sb.calls()


def test_dhcp_networkd(sb: Sandbox) -> None:
    sb.file("run/systemd/netif/state", "OPER_STATE=routable\n")
    sb.file("sys/class/net/a;b$c/ifindex", "5\n")
    sb.file(
        "run/systemd/netif/links/5",
        "ADMIN_STATE=configured\nNETWORK_FILE=/etc/systemd/network/10-x.network\n",
    )
    net = sb.file(
        "etc/systemd/network/10-x.network", "[Match]\nName=a;b$c\n\n[Network]\nDHCP = Yes\n"
    )
    assert dhcp(sb, "a;b$c") == "Enabled\n"
    net.write_text("[Match]\nName=x\n[Network]\nDHCP=ipv6\n[DHCPv4]\nDHCP=yes\n")
    assert dhcp(sb, "a;b$c") == "Disabled\n"
    assert dhcp(sb, "unknown0") == "Disabled\n"


def test_dhcp_ifupdown_exact_names(sb: Sandbox) -> None:
    sb.file("etc/network/interfaces", "auto eth1\niface eth1 inet dhcp\n")
    sb.file("etc/network/interfaces.d/extra", "iface a;b$c inet static\n  address 192.0.2.1/24\n")
    assert dhcp(sb, "eth1") == "Enabled\n"
    assert dhcp(sb, "eth10") == "Disabled\n"
    assert dhcp(sb, "eth.") == "Disabled\n"  # a regex would match eth1
    assert dhcp(sb, "a;b$c") == "Disabled\n"
    sb.file("etc/network/interfaces.d/more", "iface a;b$c inet dhcp\n")
    assert dhcp(sb, "a;b$c") == "Enabled\n"


def test_dhcp_ifcfg_and_defaults(sb: Sandbox) -> None:
    sb.file("etc/sysconfig/network-scripts/ifcfg-a;b$c", 'DEVICE=x\nBOOTPROTO="dhcp"\n')
    sb.file("etc/sysconfig/network-scripts/ifcfg-eth0", "BOOTPROTO=none\n")
    assert dhcp(sb, "a;b$c") == "Enabled\n"
    assert dhcp(sb, "eth0") == "Disabled\n"
    assert dhcp(sb, "eth1") == "Disabled\n"
    assert dhcp(sb) == "Disabled\n"
    assert dhcp(sb, "../../etc") == "Disabled\n"
    assert sb.calls() == []


# ------------------------------------------------------------ hv_get_dns_info


def dns(sb: Sandbox, *args: str) -> str:
    proc = sb.run("hv_get_dns_info", *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_dns_networkmanager(sb: Sandbox) -> None:
    sb.dir("run/NetworkManager")
    sb.answer("nmcli -t -f RUNNING general", "running\n")
    sb.answer("nmcli -e no -g IP4.DNS device show a;b$c", "192.0.2.53 | 192.0.2.54\n")
    sb.answer("nmcli -e no -g IP6.DNS device show a;b$c", "2001:db8::53 | 192.0.2.53\n")
    sb.file("etc/resolv.conf", "nameserver 127.0.0.53\n")
    assert dns(sb, "a;b$c") == "192.0.2.53\n192.0.2.54\n2001:db8::53\n"
    # No servers from NetworkManager for this device: resolv.conf.
    assert dns(sb, "eth9") == "127.0.0.53\n"
    # Old daemons pass no interface: resolv.conf only.
    assert dns(sb) == "127.0.0.53\n"


def test_dns_resolved(sb: Sandbox) -> None:
    sb.dir("run/systemd/resolve")
    sb.answer(
        "resolvectl dns -- a;b$c",
        "Link 5 (a;b$c): 192.0.2.53 2001:db8::53%5 1.1.1.1#one.one.one.one [2001:db8::54]:853 "
        "192.0.2.55:53\n",
    )
    sb.answer("resolvectl dns -- eth9", "Link 9 (eth9):\n")
    sb.file("run/systemd/resolve/resolv.conf", "nameserver 198.51.100.1\n")
    sb.file("etc/resolv.conf", "nameserver 127.0.0.53\n")
    assert dns(sb, "a;b$c") == "192.0.2.53\n2001:db8::53\n1.1.1.1\n2001:db8::54\n192.0.2.55\n"
    # No per-link servers: the upstream servers resolved uses.
    assert dns(sb, "eth9") == "198.51.100.1\n"


def test_dns_resolv_conf(sb: Sandbox) -> None:
    sb.file(
        "etc/resolv.conf",
        "# comment\nsearch example.com\nnameserver 192.0.2.53\nnameserver  fe80::1%eth0\n"
        "nameserver 192.0.2.53\nnameserver bogus\noptions rotate\n",
    )
    assert dns(sb, "eth0") == "192.0.2.53\nfe80::1\n"
    assert dns(sb) == "192.0.2.53\nfe80::1\n"
    (sb.root / "etc/resolv.conf").unlink()
    assert dns(sb, "eth0") == ""
