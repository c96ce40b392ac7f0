# SPDX-License-Identifier: GPL-2.0-only
"""hvdaemons.kvp.ipinfo: GET_IP_INFO against real veth interfaces in a network
namespace, the auto-pool address lists against glibc's getifaddrs(), and
SET_IP_INFO through a fake /sys/class/net tree (veths have no VMBus device).

The hv_get_* helpers used for GET are small test scripts standing in for the
distribution's scripts; the shipped scripts are exercised end to end once
here and in detail in test_scripts.py.
"""

from __future__ import annotations

import json
import os
import pathlib
import stat
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from hvdaemons import _ffi
from hvdaemons.kvp import ipinfo
from hvdaemons.kvp.ipinfo import IpInfo
from hvdaemons.kvp.paths import KvpPaths
from tests.kvp.test_netlink import NetNs
from tests.support.kvp import IFCFG, KEYFILE

HV_S_OK = _ffi.const("HV_S_OK")
HV_E_FAIL = _ffi.const("HV_E_FAIL")
HV_INVALIDARG = _ffi.const("HV_INVALIDARG")
HV_GUID_NOTFOUND = _ffi.const("HV_GUID_NOTFOUND")

SCRIPTS = pathlib.Path(ipinfo.__file__).resolve().parent / "scripts"

MAC_A = "00:15:5d:aa:00:01"  # "a;b$c"
MAC_ETH1 = "00:15:5d:aa:00:02"
MAC_ETH10 = "00:15:5d:aa:00:03"
MAC_VF = "00:15:5d:aa:00:04"  # vf0 (no address) and vf1syn
MAC_PAIR = "00:15:5d:aa:00:05"  # nic_a (address) and nic_b (none)
MAC_BARE = "00:15:5d:aa:00:06"  # bare1 and bare2, neither with an address


def write_script(path: pathlib.Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


@pytest.fixture(scope="module")
def net() -> Iterator[NetNs]:
    ns = NetNs()
    try:
        ns.ip("link", "set", "lo", "up")
        n = 0

        def veth(name: str, mac: str) -> None:
            nonlocal n
            n += 1
            ns.veth(name, mac, f"peer{n}", f"02:00:00:00:01:{n:02x}")

        veth("a;b$c", MAC_A)
        veth("eth1", MAC_ETH1)
        veth("eth10", MAC_ETH10)
        veth("vf0", MAC_VF)
        veth("vf1syn", MAC_VF)
        veth("nic_a", MAC_PAIR)
        veth("nic_b", MAC_PAIR)
        veth("bare1", MAC_BARE)
        veth("bare2", MAC_BARE)
        ns.ip("addr", "add", "192.0.2.10/24", "dev", "a;b$c")
        ns.ip("addr", "add", "192.0.2.11/24", "dev", "a;b$c")
        ns.ip("addr", "add", "10.20.0.1/16", "dev", "a;b$c")
        ns.ip("-6", "addr", "add", "fe80::10/64", "dev", "a;b$c", "nodad")
        ns.ip("-6", "addr", "add", "2001:db8::10/64", "dev", "a;b$c", "nodad")
        ns.ip("-6", "addr", "add", "2001:db8:2::10/48", "dev", "a;b$c", "nodad")
        ns.ip("addr", "add", "198.51.100.5/25", "dev", "eth1")
        ns.ip("-6", "addr", "add", "2001:db8:1::5/64", "dev", "eth1", "nodad")
        ns.ip("addr", "add", "203.0.113.9/24", "dev", "eth10")
        ns.ip("addr", "add", "192.0.2.77/24", "dev", "vf1syn")
        ns.ip("addr", "add", "172.16.0.1/12", "dev", "nic_a")
        ns.ip("route", "add", "default", "via", "192.0.2.1", "dev", "a;b$c")
        ns.ip("route", "add", "default", "via", "198.51.100.1", "dev", "eth1", "metric", "50")
        ns.ip("route", "add", "default", "via", "203.0.113.1", "dev", "eth10", "table", "7")
        ns.ip(
            "-6",
            "route",
            "add",
            "default",
            "nexthop",
            "via",
            "2001:db8::1",
            "dev",
            "a;b$c",
            "nexthop",
            "via",
            "2001:db8::2",
            "dev",
            "a;b$c",
            "nexthop",
            "via",
            "2001:db8:1::1",
            "dev",
            "eth1",
        )
        yield ns
    finally:
        ns.delete()


@pytest.fixture
def helpers(tmp_path: pathlib.Path) -> pathlib.Path:
    """Stand-in distribution helpers that record their argv."""
    d = tmp_path / "scripts"
    d.mkdir()
    write_script(
        d / "hv_get_dns_info",
        'printf "%s\\n" "$@" > "$(dirname "$0")/dns.argv"\n'
        'printf "192.0.2.53\\n 2001:db8::53 \\n\\n"\n',
    )
    write_script(
        d / "hv_get_dhcp_info",
        'printf "%s\\n" "$@" > "$(dirname "$0")/dhcp.argv"\n'
        'if [ "$1" = "a;b\\$c" ]; then echo "Enabled: by DHCP"; else echo Disabled; fi\n',
    )
    return d


GET_CODE = """
import dataclasses, json
from hvdaemons.kvp import ipinfo
from hvdaemons.kvp.paths import KvpPaths
args = json.loads(ARGS)
status, info = ipinfo.get_ip_info(
    args["mac"], args["family"], KvpPaths(scripts_dir=args["scripts"]), timeout=args["timeout"]
)
print(json.dumps([status, dataclasses.asdict(info) if info else None]))
"""


def get(
    net: NetNs,
    mac: str,
    scripts: pathlib.Path,
    *,
    family: int = 0,
    timeout: float = 5.0,
    env: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any] | None]:
    """get_ip_info() run inside the namespace: (status, IpInfo as a dict)."""
    args = json.dumps({"mac": mac, "scripts": str(scripts), "family": family, "timeout": timeout})
    status, info = net.python(GET_CODE.replace("ARGS", repr(args)), env=env)
    return status, info


def test_get_ip_info_exact_strings(net: NetNs, helpers: pathlib.Path) -> None:
    status, info = get(net, MAC_A.upper(), helpers)
    assert status == HV_S_OK
    assert info == {
        "adapter_id": MAC_A.upper(),
        "addr_family": 3,
        "dhcp_enabled": True,
        # Kernel (= getifaddrs) order: IPv4 primaries, then secondaries
        # (192.0.2.11 is in 192.0.2.10's subnet); IPv6 by scope, newest first.
        "ip_addr": "192.0.2.10;10.20.0.1;192.0.2.11;2001:db8:2::10;2001:db8::10;fe80::10",
        "sub_net": "255.255.255.0;255.255.0.0;255.255.255.0;/48;/64;/64",
        # Only this adapter's default gateways, each with ';', including
        # both of its multipath next hops but not eth1's.
        "gate_way": "192.0.2.1;2001:db8::1;2001:db8::2;",
        # Helper lines stripped, blank lines skipped, each followed by ';'.
        "dns_addr": "192.0.2.53;2001:db8::53;",
    }
    # The interface name reaches the helpers as one argv element, unharmed.
    assert (helpers / "dns.argv").read_text() == "a;b$c\n"
    assert (helpers / "dhcp.argv").read_text() == "a;b$c\n"


def test_get_ip_info_mac_forms_and_family_ignored(net: NetNs, helpers: pathlib.Path) -> None:
    _, reference = get(net, MAC_ETH1.upper(), helpers)
    assert reference is not None
    for form, family in (
        (MAC_ETH1, 1),
        (MAC_ETH1.upper().replace(":", "-"), 2),
        (" " + MAC_ETH1.replace(":", "") + "\n", 0),
    ):
        status, info = get(net, form, helpers, family=family)
        assert status == HV_S_OK
        assert info is not None
        assert dict(info, adapter_id=None) == dict(reference, adapter_id=None)
        assert info["adapter_id"] == form


def test_get_ip_info_no_name_prefix_match(net: NetNs, helpers: pathlib.Path) -> None:
    # The reference matches getifaddrs entries by name prefix, so eth1 would
    # also report eth10's 203.0.113.9.
    status, info = get(net, MAC_ETH1, helpers)
    assert status == HV_S_OK and info is not None
    assert info["ip_addr"] == "198.51.100.5;2001:db8:1::5"
    assert info["sub_net"] == "255.255.255.128;/64"
    assert info["gate_way"] == "198.51.100.1;2001:db8:1::1;"
    assert info["dhcp_enabled"] is False
    assert info["addr_family"] == 3
    status, info = get(net, MAC_ETH10, helpers)
    # eth10's default route lives in table 7, which `ip route show` would not list.
    assert info is not None and info["ip_addr"] == "203.0.113.9" and info["gate_way"] == ""
    assert info["addr_family"] == 1


def test_get_ip_info_skips_vf_without_address(net: NetNs, helpers: pathlib.Path) -> None:
    status, info = get(net, MAC_VF, helpers)
    assert status == HV_S_OK and info is not None
    assert info["ip_addr"] == "192.0.2.77"
    assert (helpers / "dns.argv").read_text() == "vf1syn\n"
    # The first match with an address wins even if a later one has none.
    status, info = get(net, MAC_PAIR, helpers)
    assert info is not None and info["ip_addr"] == "172.16.0.1" and info["sub_net"] == "255.240.0.0"
    assert (helpers / "dhcp.argv").read_text() == "nic_a\n"


def test_get_ip_info_no_address_anywhere(net: NetNs, helpers: pathlib.Path) -> None:
    # Like the reference: the last match's (empty) answer, with HV_S_OK.
    status, info = get(net, MAC_BARE, helpers)
    assert status == HV_S_OK and info is not None
    assert info["ip_addr"] == info["sub_net"] == info["gate_way"] == ""
    assert info["addr_family"] == 0
    assert (helpers / "dns.argv").read_text() == "bare2\n"


def test_get_ip_info_unknown_or_loopback(net: NetNs, helpers: pathlib.Path) -> None:
    assert get(net, "00:15:5D:FF:FF:FF", helpers) == (HV_E_FAIL, None)
    assert get(net, "", helpers) == (HV_E_FAIL, None)
    # lo's all-zero MAC matches, but loopback addresses are never reported.
    status, info = get(net, "00:00:00:00:00:00", helpers)
    assert status == HV_S_OK and info is not None and info["ip_addr"] == ""


def test_get_ip_info_failing_missing_hanging_helpers(net: NetNs, tmp_path: pathlib.Path) -> None:
    expect = "192.0.2.10;10.20.0.1;192.0.2.11;2001:db8:2::10;2001:db8::10;fe80::10"
    failing = tmp_path / "failing"
    failing.mkdir()
    write_script(failing / "hv_get_dns_info", "echo 192.0.2.99; echo oops >&2; exit 3\n")
    write_script(failing / "hv_get_dhcp_info", "exit 1\n")
    status, info = get(net, MAC_A, failing)
    assert status == HV_S_OK and info is not None
    assert info["ip_addr"] == expect
    assert info["dns_addr"] == "192.0.2.99;"  # what it printed before failing
    assert info["dhcp_enabled"] is False

    missing = tmp_path / "missing"
    missing.mkdir()
    status, info = get(net, MAC_A, missing)
    assert status == HV_S_OK and info is not None
    assert info["ip_addr"] == expect and info["dns_addr"] == "" and info["dhcp_enabled"] is False

    hanging = tmp_path / "hanging"
    hanging.mkdir()
    # The DNS helper leaves a background child holding its stdout open.
    write_script(
        hanging / "hv_get_dns_info",
        'echo 192.0.2.98; sleep 60 & echo $! > "$(dirname "$0")/bg.pid"; wait\n',
    )
    write_script(hanging / "hv_get_dhcp_info", "echo Enabled; exec sleep 60\n")
    start = time.monotonic()
    status, info = get(net, MAC_A, hanging, timeout=1.0)
    elapsed = time.monotonic() - start
    assert status == HV_S_OK and info is not None
    assert info["ip_addr"] == expect
    # Output of a helper killed for running too long is not trusted.
    assert info["dns_addr"] == ""
    assert info["dhcp_enabled"] is False
    assert elapsed < 20
    # The background child was killed with its process group.
    bg = int((hanging / "bg.pid").read_text())
    assert not pathlib.Path(f"/proc/{bg}").exists() or _is_zombie(bg)


def _is_zombie(pid: int) -> bool:
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except OSError:
        return True


def test_get_ip_info_with_shipped_scripts(net: NetNs, tmp_path: pathlib.Path) -> None:
    root = tmp_path / "root"
    (root / "etc/sysconfig/network-scripts").mkdir(parents=True)
    (root / "etc/resolv.conf").write_text(
        "search example\nnameserver 192.0.2.53\nnameserver fd00::53\n"
    )
    (root / "etc/sysconfig/network-scripts/ifcfg-a;b$c").write_text('BOOTPROTO="dhcp"\n')
    status, info = get(net, MAC_A, SCRIPTS, env={"HV_KVP_ROOT": str(root)})
    assert status == HV_S_OK and info is not None
    assert info["dhcp_enabled"] is True
    assert info["dns_addr"] == "192.0.2.53;fd00::53;"
    status, info = get(net, MAC_ETH1, SCRIPTS, env={"HV_KVP_ROOT": str(root)})
    assert info is not None and info["dhcp_enabled"] is False


# ----------------------------------------------------------- address lists

GETIFADDRS_C = r"""
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
/* The auto pool's NetworkAddressIPv4/IPv6 as kvp_get_ip_info() builds them. */
static void list(int family)
{
    struct ifaddrs *ifap, *p;
    char buf[64];
    int first = 1;
    if (getifaddrs(&ifap))
        return;
    for (p = ifap; p; p = p->ifa_next) {
        const void *a;
        if (!p->ifa_addr || p->ifa_addr->sa_family != family || (p->ifa_flags & IFF_LOOPBACK))
            continue;
        a = family == AF_INET ? (const void *)&((struct sockaddr_in *)p->ifa_addr)->sin_addr
                              : (const void *)&((struct sockaddr_in6 *)p->ifa_addr)->sin6_addr;
        inet_ntop(family, a, buf, sizeof(buf));
        printf("%s%s", first ? "" : ";", buf);
        first = 0;
    }
    printf("\n");
    freeifaddrs(ifap);
}
int main(void) { list(AF_INET); list(AF_INET6); return 0; }
"""


@pytest.fixture(scope="module")
def getifaddrs_bin(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    d = tmp_path_factory.mktemp("gia")
    (d / "gia.c").write_text(GETIFADDRS_C)
    subprocess.run(["gcc", "-O1", "-o", str(d / "gia"), str(d / "gia.c")], check=True)
    return d / "gia"


LISTS_CODE = """
import json
from hvdaemons.kvp import ipinfo
print(json.dumps(ipinfo.address_lists()))
"""


def test_address_lists_match_getifaddrs(net: NetNs, getifaddrs_bin: pathlib.Path) -> None:
    v4, v6 = net.python(LISTS_CODE)
    ref4, ref6 = net.run([str(getifaddrs_bin)]).split("\n")[:2]
    assert (v4, v6) == (ref4, ref6)
    assert v4 == ("192.0.2.10;10.20.0.1;192.0.2.11;198.51.100.5;203.0.113.9;192.0.2.77;172.16.0.1")
    assert v6 == "2001:db8:2::10;2001:db8::10;fe80::10;2001:db8:1::5"
    assert "127.0.0.1" not in v4 and "::1" not in v6.split(";")


def test_address_lists_capped_at_whole_addresses(getifaddrs_bin: pathlib.Path) -> None:
    ns = NetNs()
    try:
        ns.veth("big", "00:15:5d:bb:00:01", "bigp", "02:00:00:00:02:01")
        # 100 IPv6 addresses of 38 characters: far beyond the 1022 units the
        # kernel hands to the host for an ENUMERATE value.
        ns.sh(
            "i=0; while [ $i -lt 100 ]; do "
            "ip -6 addr add 2001:db8:1234:5678:9abc:def0:1234:$(printf %04x $((i + 4096)))/64 "
            "dev big nodad; i=$((i + 1)); done"
        )
        _v4, v6 = ns.python(LISTS_CODE)
        _ref4, ref6 = ns.run([str(getifaddrs_bin)]).split("\n")[:2]
        assert len(v6) <= 1022
        assert ref6.startswith(v6 + ";")  # a prefix of whole addresses
        assert {len(a) for a in v6.split(";")} == {38}
        assert len(v6.split(";")) == 26  # 26 * 39 - 1 = 1013; one more would exceed
    finally:
        ns.delete()


# ----------------------------------------------------------- SET_IP_INFO

GUID = "{4d2e5f3a-1b2c-4d5e-8f90-a1b2c3d4e5f6}"


@pytest.fixture
def sysfs(tmp_path: pathlib.Path) -> pathlib.Path:
    """A fake /sys/class/net: synthetic NIC "a;b$c" with a device GUID, a VF
    sharing its MAC (PCI, no device_id) and an unrelated interface."""
    root = tmp_path / "sys_class_net"
    for name, mac, guid in (
        ("a;b$c", MAC_A, GUID),
        ("enP1s1", MAC_A, None),
        ("eth9", MAC_ETH1, "{00000000-0000-0000-0000-000000000009}"),
    ):
        (root / name / "device").mkdir(parents=True)
        (root / name / "address").write_text(mac + "\n")
        if guid:
            (root / name / "device" / "device_id").write_text(guid + "\n")
    return root


@pytest.fixture
def state_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    d = tmp_path / "state"
    d.mkdir()
    return d


def recording_set_helper(d: pathlib.Path, body: str = "exit 0\n") -> pathlib.Path:
    d.mkdir(exist_ok=True)
    write_script(
        d / "hv_set_ifconfig",
        'printf "%s\\n" "$@" > "$(dirname "$0")/set.argv"\n' + body,
    )
    return d


INFO = IpInfo(
    adapter_id="4D2E5F3A-1B2C-4D5E-8F90-A1B2C3D4E5F6",
    addr_family=3,
    dhcp_enabled=False,
    ip_addr="192.0.2.10; 2001:db8::5;192.0.2.11",
    sub_net="255.255.255.0;64;255.255.255.128",
    gate_way="192.0.2.1;2001:db8::1;192.0.2.254",
    dns_addr="192.0.2.53;2001:db8::53;198.51.100.53",
)


def paths_for(sysfs: pathlib.Path, state_dir: pathlib.Path, scripts: pathlib.Path) -> KvpPaths:
    return KvpPaths(state_dir=str(state_dir), scripts_dir=str(scripts), sys_class_net=str(sysfs))


def test_set_ip_info_writes_files_and_runs_helper(
    sysfs: pathlib.Path, state_dir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    scripts = recording_set_helper(tmp_path / "s")
    old = os.umask(0o022)
    try:
        status = ipinfo.set_ip_info(INFO, paths_for(sysfs, state_dir, scripts))
    finally:
        os.umask(old)
    assert status == HV_S_OK
    ifcfg = state_dir / "ifcfg-a;b$c"
    keyfile = state_dir / "a;b$c.nmconnection"
    assert ifcfg.read_text() == IFCFG
    assert keyfile.read_text() == KEYFILE
    for f in (ifcfg, keyfile):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert (scripts / "set.argv").read_text() == f"{ifcfg}\n{keyfile}\n"
    assert sorted(p.name for p in state_dir.iterdir()) == ["a;b$c.nmconnection", "ifcfg-a;b$c"]


def test_set_ip_info_dhcp_and_methods(
    sysfs: pathlib.Path, state_dir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    scripts = recording_set_helper(tmp_path / "s")
    info = IpInfo(GUID, 1, True, "", "", "", "")
    assert ipinfo.set_ip_info(info, paths_for(sysfs, state_dir, scripts)) == HV_S_OK
    assert (state_dir / "ifcfg-a;b$c").read_text() == (
        "HWADDR=00:15:5D:AA:00:01\nDEVICE=a;b$c\nBOOTPROTO=dhcp\n"
    )
    assert (state_dir / "a;b$c.nmconnection").read_text() == (
        "\n[connection]\ninterface-name=a;b$c\n\n[ethernet]\nmac-address=00:15:5D:AA:00:01\n"
        "\n[ipv4]\nmethod=auto\n\n[ipv6]\nmethod=auto\n"
    )
    info = IpInfo(GUID.upper(), 2, False, "2001:db8::7", "/64", "", "")
    assert ipinfo.set_ip_info(info, paths_for(sysfs, state_dir, scripts)) == HV_S_OK
    text = (state_dir / "a;b$c.nmconnection").read_text()
    assert "\n[ipv4]\nmethod=disabled\n" in text
    assert "\n[ipv6]\naddress1=2001:db8::7/64\nmethod=manual\n" in text
    assert "IPV6NETMASK=/64\n" in (state_dir / "ifcfg-a;b$c").read_text()


def test_set_ip_info_guid_not_found(
    sysfs: pathlib.Path, state_dir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    scripts = recording_set_helper(tmp_path / "s")
    info = IpInfo("{11111111-2222-3333-4444-555555555555}", 1, True, "", "", "", "")
    assert ipinfo.set_ip_info(info, paths_for(sysfs, state_dir, scripts)) == HV_GUID_NOTFOUND
    assert list(state_dir.iterdir()) == []
    assert not (scripts / "set.argv").exists()


@pytest.mark.parametrize(
    "field,value",
    [
        ("ip_addr", "192.0.2.300"),
        ("ip_addr", "10.0.0.1\nDEVICE=evil"),
        ("gate_way", "gateway.example"),
        ("dns_addr", "192.0.2.53;not-an-address"),
        ("sub_net", "255.255.255.0\nX=1"),
        ("sub_net", "garbage"),
        ("sub_net", "64;255.255.255.0"),  # IPv4 address paired with a prefix length
        ("sub_net", "255.255.255.0;129"),  # IPv6 prefix out of range
    ],
)
def test_set_ip_info_invalid_argument(
    sysfs: pathlib.Path, state_dir: pathlib.Path, tmp_path: pathlib.Path, field: str, value: str
) -> None:
    scripts = recording_set_helper(tmp_path / "s")
    base = dict(
        adapter_id=GUID,
        addr_family=3,
        dhcp_enabled=False,
        ip_addr="192.0.2.10;2001:db8::5",
        sub_net="255.255.255.0;64",
        gate_way="",
        dns_addr="",
    )
    base[field] = value
    info = IpInfo(**base)  # type: ignore[arg-type]
    assert ipinfo.set_ip_info(info, paths_for(sysfs, state_dir, scripts)) == HV_INVALIDARG
    assert list(state_dir.iterdir()) == []  # nothing half-written
    assert not (scripts / "set.argv").exists()


def test_set_ip_info_failing_missing_hanging_helper(
    sysfs: pathlib.Path,
    state_dir: pathlib.Path,
    tmp_path: pathlib.Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    paths = paths_for(
        sysfs, state_dir, recording_set_helper(tmp_path / "fail", "echo 'nmcli: no' >&2; exit 4\n")
    )
    with caplog.at_level("ERROR"):
        assert ipinfo.set_ip_info(INFO, paths) == HV_E_FAIL
    assert "Failed to execute cmd" in caplog.text
    assert "failed with exit status 4: nmcli: no" in caplog.text

    caplog.clear()
    paths = paths_for(sysfs, state_dir, tmp_path / "nothing-here")
    with caplog.at_level("ERROR"):
        assert ipinfo.set_ip_info(INFO, paths) == HV_E_FAIL
    assert "hv_set_ifconfig" in caplog.text
    assert "cannot run it: No such file or directory" in caplog.text

    caplog.clear()
    hang = recording_set_helper(
        tmp_path / "hang", 'sleep 60 & echo $! > "$(dirname "$0")/bg.pid"; exec sleep 60\n'
    )
    start = time.monotonic()
    with caplog.at_level("ERROR"):
        assert ipinfo.set_ip_info(INFO, paths_for(sysfs, state_dir, hang), timeout=1.0) == HV_E_FAIL
    assert time.monotonic() - start < 10
    assert "did not finish within 1 s; killed" in caplog.text
    bg = int((hang / "bg.pid").read_text())
    deadline = time.monotonic() + 5
    while (
        pathlib.Path(f"/proc/{bg}").exists() and not _is_zombie(bg) and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    assert not pathlib.Path(f"/proc/{bg}").exists() or _is_zombie(bg)


def test_set_ip_info_state_dir_unwritable(sysfs: pathlib.Path, tmp_path: pathlib.Path) -> None:
    scripts = recording_set_helper(tmp_path / "s")
    paths = paths_for(sysfs, tmp_path / "no" / "such" / "dir", scripts)
    assert ipinfo.set_ip_info(INFO, paths) == HV_E_FAIL
    assert not (scripts / "set.argv").exists()


def test_set_ip_info_through_shipped_script(
    sysfs: pathlib.Path,
    state_dir: pathlib.Path,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Daemon side + shipped hv_set_ifconfig, for systemd-networkd in a scratch root."""
    root = tmp_path / "root"
    (root / "run/systemd/netif").mkdir(parents=True)
    (root / "run/systemd/netif/state").write_text("OPER_STATE=routable\n")
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    write_script(
        stubs / "networkctl",
        f'printf "%s|" "$@" >> {str(tmp_path / "calls")!r}; echo >> {str(tmp_path / "calls")!r}\n',
    )
    # The helper inherits the daemon's environment.
    monkeypatch.setenv("HV_KVP_ROOT", str(root))
    monkeypatch.setenv("PATH", f"{stubs}:{os.environ['PATH']}")
    monkeypatch.delenv("HV_KVP_NETSTACK", raising=False)
    assert ipinfo.set_ip_info(INFO, paths_for(sysfs, state_dir, SCRIPTS)) == HV_S_OK
    network = root / "etc/systemd/network/05-hyperv-a;b$c.network"
    assert network.read_text() == (
        "# Written by hv_set_ifconfig: IP configuration from the Hyper-V host.\n"
        "[Match]\nName=a;b$c\n\n[Network]\nDHCP=no\n"
        "Address=192.0.2.10/24\nAddress=192.0.2.11/25\n"
        "Address=2001:0db8:0000:0000:0000:0000:0000:0005/64\n"
        "Gateway=192.0.2.1\nGateway=192.0.2.254\n"
        "Gateway=2001:0db8:0000:0000:0000:0000:0000:0001\n"
        "DNS=192.0.2.53\nDNS=2001:0db8:0000:0000:0000:0000:0000:0053\nDNS=198.51.100.53\n"
    )
    assert (tmp_path / "calls").read_text() == "reload|\nreconfigure|--|a;b$c|\n"


# ----------------------------------------------------------- pure renderers


def test_ifcfg_counters_and_expansion() -> None:
    info = IpInfo(
        GUID,
        3,
        True,
        "::ffff:192.0.2.1;10.0.0.1;fe80::1;10.0.0.2;2001:db8::;10.0.0.3",
        "ffff:ffff:ffff:ffff::;/64;255.0.0.0",
        "10.0.0.254;fe80::fe;10.0.0.253;fe80::fd;10.0.0.252",
        "fe80::53;10.0.0.53",
    )
    assert ipinfo.ifcfg_text("eth0", "00:15:5D:00:00:01", info) == (
        "HWADDR=00:15:5D:00:00:01\nDEVICE=eth0\nBOOTPROTO=dhcp\n"
        "IPV6ADDR=0000:0000:0000:0000:0000:ffff:c000:0201\n"
        "IPADDR0=10.0.0.1\nIPV6ADDR_1=fe80:0000:0000:0000:0000:0000:0000:0001\n"
        "IPADDR1=10.0.0.2\nIPV6ADDR_2=2001:0db8:0000:0000:0000:0000:0000:0000\nIPADDR2=10.0.0.3\n"
        "IPV6NETMASK=ffff:ffff:ffff:ffff:0000:0000:0000:0000\nIPV6NETMASK_1=/64\nNETMASK0=255.0.0.0\n"
        "GATEWAY=10.0.0.254\nIPV6_DEFAULTGW=fe80:0000:0000:0000:0000:0000:0000:00fe\n"
        "GATEWAY1=10.0.0.253\nIPV6_DEFAULTGW_1=fe80:0000:0000:0000:0000:0000:0000:00fd\n"
        "GATEWAY2=10.0.0.252\n"
        "DNS1=fe80:0000:0000:0000:0000:0000:0000:0053\nDNS2=10.0.0.53\n"
    )


def test_keyfile_pairs_by_position_and_escapes_name() -> None:
    info = IpInfo(
        GUID,
        3,
        True,
        "2001:db8::5;10.0.0.1;10.0.0.2;2001:db8::6",
        "ffff:ffff:ffff:ff00::;255.255.240.0;255.255.255.255",  # 4th address has no subnet
        "",
        "",
    )
    assert ipinfo.keyfile_text("we\\ird", "AA:BB:CC:DD:EE:FF", info) == (
        "\n[connection]\ninterface-name=we\\\\ird\n\n[ethernet]\nmac-address=AA:BB:CC:DD:EE:FF\n"
        "\n[ipv4]\naddress1=10.0.0.1/20\naddress2=10.0.0.2/32\nmethod=auto\n"
        "\n[ipv6]\naddress1=2001:db8::5/56\nmethod=manual\n"
    )


def test_run_helper_bounds_output(tmp_path: pathlib.Path) -> None:
    script = tmp_path / "noisy"
    write_script(script, "head -c 1000000 /dev/zero | tr '\\0' x; echo done >&2\n")
    result = ipinfo.run_helper([str(script)], 10.0)
    assert result.returncode == 0
    assert len(result.stdout) == 64 * 1024 and set(result.stdout) == {ord("x")}
    assert result.stderr == b"done\n"
