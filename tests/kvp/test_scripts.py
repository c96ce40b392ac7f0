# SPDX-License-Identifier: GPL-2.0-only
"""The shipped KVP helper scripts (hvdaemons/kvp/scripts), run for real against
a scratch root (HV_KVP_ROOT) for each network stack.

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
from tests.support.kvp import IFCFG, KEYFILE

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


V6_5 = "2001:0db8:0000:0000:0000:0000:0000:0005"
V6_1 = "2001:0db8:0000:0000:0000:0000:0000:0001"
V6_53 = "2001:0db8:0000:0000:0000:0000:0000:0053"


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

    def inputs(self, ifcfg: str = IFCFG, keyfile: str = KEYFILE) -> tuple[str, str]:
        state = self.tmp / "state"
        state.mkdir(exist_ok=True)
        a = state / "ifcfg-a;b$c"
        b = state / "a;b$c.nmconnection"
        a.write_text(ifcfg)
        b.write_text(keyfile)
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


def test_set_netplan(sb: Sandbox) -> None:
    sb.file("etc/netplan/50-cloud-init.yaml", "network: {version: 2}\n")
    # NetworkManager running too: netplan is still the source of truth.
    sb.dir("run/NetworkManager")
    sb.answer("nmcli -t -f RUNNING general", "running\n")
    proc = sb.run("hv_set_ifconfig", *sb.inputs())
    assert proc.returncode == 0, proc.stderr
    out = sb.root / "etc/netplan/90-hyperv-a;b$c.yaml"
    assert out.read_text() == (
        "# Written by hv_set_ifconfig: IP configuration from the Hyper-V host.\n"
        "network:\n"
        "  version: 2\n"
        "  ethernets:\n"
        '    "a;b$c":\n'
        "      dhcp4: false\n"
        "      addresses:\n"
        '        - "192.0.2.10/24"\n'
        '        - "192.0.2.11/25"\n'
        f'        - "{V6_5}/64"\n'
        "      routes:\n"
        "        - to: default\n"
        '          via: "192.0.2.1"\n'
        "        - to: default\n"
        f'          via: "{V6_1}"\n'
        "      nameservers:\n"
        "        addresses:\n"
        '          - "192.0.2.53"\n'
        f'          - "{V6_53}"\n'
        '          - "198.51.100.53"\n'
    )
    assert mode(out) == 0o600
    assert sb.calls() == [["netplan", "apply"]]


def test_set_netplan_yaml_quoting_and_dhcp(sb: Sandbox) -> None:
    sb.file("etc/netplan/01.yaml")
    ifcfg = 'HWADDR=00:15:5D:AA:00:01\nDEVICE=q"b\\s\nBOOTPROTO=dhcp\n'
    proc = sb.run("hv_set_ifconfig", sb.inputs(ifcfg)[0])
    assert proc.returncode == 0, proc.stderr
    out = sb.root / 'etc/netplan/90-hyperv-q"b\\s.yaml'
    assert out.read_text().splitlines()[4:] == ['    "q\\"b\\\\s":', "      dhcp4: true"]


def test_set_networkmanager(sb: Sandbox) -> None:
    sb.dir("run/NetworkManager")
    sb.answer("nmcli -t -f RUNNING general", "running\n")
    proc = sb.run("hv_set_ifconfig", *sb.inputs())
    assert proc.returncode == 0, proc.stderr
    out = sb.root / "etc/NetworkManager/system-connections/hyperv-a;b$c.nmconnection"
    assert out.read_text() == KEYFILE.replace(
        "interface-name=a;b$c\n",
        "interface-name=a;b$c\nid=hyperv-a;b$c\ntype=ethernet\nautoconnect=true\n"
        "autoconnect-priority=100\n",
    )
    assert mode(out) == 0o600
    assert sb.calls() == [
        ["nmcli", "-t", "-f", "RUNNING", "general"],
        ["nmcli", "connection", "load", str(out)],
        ["nmcli", "-w", "15", "connection", "up", "id", "hyperv-a;b$c"],
    ]


def test_set_networkmanager_failures(sb: Sandbox) -> None:
    sb.dir("run/NetworkManager")
    sb.answer("nmcli -t -f RUNNING general", "running\n")
    ifcfg, _keyfile = sb.inputs()
    proc = sb.run("hv_set_ifconfig", ifcfg)
    assert proc.returncode == 1
    assert "NetworkManager needs the keyfile argument" in proc.stderr
    sb.answer("nmcli -w 15 connection up id hyperv-a;b$c", rc=4)
    proc = sb.run("hv_set_ifconfig", *sb.inputs())
    assert proc.returncode == 1
    assert "nmcli connection up failed" in proc.stderr
    # NetworkManager installed but not running, nothing else here.
    sb.answer("nmcli -t -f RUNNING general", "stopped\n")
    proc = sb.run("hv_set_ifconfig", *sb.inputs())
    assert proc.returncode == 1
    assert "no supported network configuration system found" in proc.stderr


def test_set_networkd(sb: Sandbox) -> None:
    sb.file("run/systemd/netif/state", "OPER_STATE=routable\n")
    proc = sb.run("hv_set_ifconfig", *sb.inputs())
    assert proc.returncode == 0, proc.stderr
    out = sb.root / "etc/systemd/network/05-hyperv-a;b$c.network"
    assert out.read_text() == (
        "# Written by hv_set_ifconfig: IP configuration from the Hyper-V host.\n"
        "[Match]\nName=a;b$c\n\n[Network]\nDHCP=no\n"
        f"Address=192.0.2.10/24\nAddress=192.0.2.11/25\nAddress={V6_5}/64\n"
        f"Gateway=192.0.2.1\nGateway=192.0.2.254\nGateway={V6_1}\n"
        f"DNS=192.0.2.53\nDNS={V6_53}\nDNS=198.51.100.53\n"
    )
    assert mode(out) == 0o644
    assert sb.calls() == [["networkctl", "reload"], ["networkctl", "reconfigure", "--", "a;b$c"]]


def test_set_ifupdown(sb: Sandbox) -> None:
    sb.file(
        "etc/network/interfaces",
        "source /etc/network/interfaces.d/*\nauto lo\niface lo inet loopback\n",
    )
    proc = sb.run("hv_set_ifconfig", *sb.inputs())
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    out = sb.root / "etc/network/interfaces.d/hyperv-a;b$c"
    assert out.read_text() == (
        "# Written by hv_set_ifconfig: IP configuration from the Hyper-V host.\n"
        "auto a;b$c\n"
        "iface a;b$c inet static\n"
        "    address 192.0.2.10/24\n"
        "    gateway 192.0.2.1\n"
        "    dns-nameservers 192.0.2.53 198.51.100.53\n"
        "iface a;b$c inet static\n"
        "    address 192.0.2.11/25\n"
        "iface a;b$c inet6 static\n"
        f"    address {V6_5}/64\n"
        f"    gateway {V6_1}\n"
        f"    dns-nameservers {V6_53}\n"
    )
    assert mode(out) == 0o644
    assert sb.calls() == [["ifdown", "--", "a;b$c"], ["ifup", "--", "a;b$c"]]


def test_set_ifupdown_preferred_when_it_names_the_interface(sb: Sandbox) -> None:
    # Debian desktop: NetworkManager runs but leaves ifupdown's interfaces alone.
    sb.file("etc/network/interfaces", "iface a;b$c inet dhcp\n")
    sb.dir("run/NetworkManager")
    sb.answer("nmcli -t -f RUNNING general", "running\n")
    ifcfg = "HWADDR=00:15:5D:AA:00:01\nDEVICE=a;b$c\nBOOTPROTO=dhcp\n"
    proc = sb.run("hv_set_ifconfig", *sb.inputs(ifcfg))
    assert proc.returncode == 0, proc.stderr
    assert "does not source interfaces.d" in proc.stderr
    assert "also configured elsewhere" in proc.stderr
    out = sb.root / "etc/network/interfaces.d/hyperv-a;b$c"
    assert out.read_text().splitlines()[1:] == ["auto a;b$c", "iface a;b$c inet dhcp"]
    assert [c[0] for c in sb.calls()] == ["ifdown", "ifup"]


def test_set_ifcfg_is_safe_to_source(sb: Sandbox) -> None:
    sb.dir("etc/sysconfig/network-scripts")
    evil = "x'$(touch pwned)`touch pwned2`;"
    ifcfg = IFCFG.replace("DEVICE=a;b$c", f"DEVICE={evil}") + "IPADDR2=1.2.3.4;touch${IFS}pwned3\n"
    proc = sb.run("hv_set_ifconfig", sb.inputs(ifcfg)[0])
    assert proc.returncode == 0, proc.stderr
    out = sb.root / f"etc/sysconfig/network-scripts/ifcfg-{evil}"
    assert out.read_text() == (
        "# Written by hv_set_ifconfig: IP configuration from the Hyper-V host.\n"
        "DEVICE='x'\\''$(touch pwned)`touch pwned2`;'\n"
        "HWADDR='00:15:5D:AA:00:01'\n"
        "TYPE=Ethernet\nONBOOT=yes\nBOOTPROTO=none\n"
        "IPADDR0=192.0.2.10\nPREFIX0=24\nIPADDR1=192.0.2.11\nPREFIX1=25\n"
        "GATEWAY=192.0.2.1\nIPV6INIT=yes\n"
        f"IPV6ADDR={V6_5}/64\nIPV6_DEFAULTGW={V6_1}\n"
        f"DNS1=192.0.2.53\nDNS2={V6_53}\nDNS3=198.51.100.53\n"
        "PEERDNS=yes\nNM_CONTROLLED=no\n"
    )
    # network-scripts source this file: doing so must run nothing.
    sourced = subprocess.run(
        ["sh", "-c", '. "$1" && printf %s "$DEVICE"', "sh", str(out)],
        cwd=sb.tmp,
        capture_output=True,
        text=True,
        check=True,
    )
    assert sourced.stdout == evil
    assert sb.calls() == [["ifdown", evil], ["ifup", evil]]
    assert not list(sb.tmp.glob("pwned*"))


def test_set_forced_stack_and_secondary_v6(sb: Sandbox) -> None:
    ifcfg = (
        "HWADDR=00:15:5D:AA:00:01\nDEVICE=eth0\nBOOTPROTO=none\n"
        "IPV6ADDR=2001:0db8:0000:0000:0000:0000:0000:0005\n"
        "IPV6ADDR_1=2001:0db8:0000:0000:0000:0000:0000:0006\n"
        "IPV6NETMASK=ffff:ffff:ffff:ff00:0000:0000:0000:0000\nIPV6NETMASK_1=/80\n"
    )
    proc = sb.run("hv_set_ifconfig", sb.inputs(ifcfg)[0], env={"HV_KVP_NETSTACK": "ifcfg"})
    assert proc.returncode == 0, proc.stderr
    text = (sb.root / "etc/sysconfig/network-scripts/ifcfg-eth0").read_text()
    assert f"IPV6ADDR={V6_5}/56\n" in text
    assert "IPV6ADDR_SECONDARIES='2001:0db8:0000:0000:0000:0000:0000:0006/80'\n" in text
    proc = sb.run("hv_set_ifconfig", sb.inputs(ifcfg)[0], env={"HV_KVP_NETSTACK": "bogus"})
    assert proc.returncode == 1 and "unknown HV_KVP_NETSTACK" in proc.stderr


def test_set_failures(sb: Sandbox) -> None:
    sb.file("etc/netplan/50.yaml")
    sb.answer("netplan apply", rc=1)
    proc = sb.run("hv_set_ifconfig", *sb.inputs())
    assert proc.returncode == 1 and "netplan apply failed" in proc.stderr
    proc = sb.run("hv_set_ifconfig")
    assert proc.returncode == 1 and "usage" in proc.stderr
    proc = sb.run("hv_set_ifconfig", str(sb.tmp / "missing"))
    assert proc.returncode == 1 and "cannot read" in proc.stderr
    proc = sb.run("hv_set_ifconfig", sb.inputs("HWADDR=00:11:22:33:44:55\nDEVICE=../x\n")[0])
    assert proc.returncode == 1 and "bad or missing DEVICE" in proc.stderr
    assert not (sb.root / "etc/x.yaml").exists()


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
