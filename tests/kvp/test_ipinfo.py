# SPDX-License-Identifier: GPL-2.0-only
"""hvdaemons.kvp.ipinfo: GET_IP_INFO against real veth interfaces in a network
namespace, and the auto-pool address lists against glibc's getifaddrs().

The hv_get_* helpers are small test scripts standing in for the
distribution's scripts; the shipped scripts are exercised once here, in
detail in test_scripts.py, and through the daemon in test_ipinfo_daemon.py.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from hvdaemons.kvp import ipinfo
from hvdaemons.protocol.status import HvStatus
from tests.support.netns import NetNs
from tests.support.process import gone, write_script

HV_S_OK = HvStatus.S_OK
HV_E_FAIL = HvStatus.E_FAIL

SCRIPTS = pathlib.Path(ipinfo.__file__).resolve().parent / "scripts"

MAC_A = "00:15:5d:aa:00:01"  # "a;b$c"
MAC_ETH1 = "00:15:5d:aa:00:02"
MAC_ETH10 = "00:15:5d:aa:00:03"
MAC_VF = "00:15:5d:aa:00:04"  # vf0 (no address) and vf1syn
MAC_PAIR = "00:15:5d:aa:00:05"  # nic_a (address) and nic_b (none)
MAC_BARE = "00:15:5d:aa:00:06"  # bare1 and bare2, neither with an address


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
import json
from hvdaemons.kvp import ipinfo
from hvdaemons.kvp.paths import KvpPaths
args = json.loads(ARGS)
status, info = ipinfo.get_ip_info(
    args["mac"], args["family"], KvpPaths(scripts_dir=args["scripts"]), timeout=args["timeout"]
)
fields = {name: getattr(info, name) for name in info.__slots__} if info else None
print(json.dumps([status, fields]))
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
    # The DNS helper leaves a background child holding its stdout open.  Both
    # would run far longer than get()'s hang guard (120 s): that it returns
    # at all shows they were cut short.
    write_script(
        hanging / "hv_get_dns_info",
        'echo 192.0.2.98; sleep 600 & echo $! > "$(dirname "$0")/bg.pid"; wait\n',
    )
    write_script(hanging / "hv_get_dhcp_info", "echo Enabled; exec sleep 600\n")
    status, info = get(net, MAC_A, hanging, timeout=1.0)
    assert status == HV_S_OK and info is not None
    assert info["ip_addr"] == expect
    # Output of a helper killed for running too long is not trusted.
    assert info["dns_addr"] == ""
    assert info["dhcp_enabled"] is False
    # The background child was killed with its process group.
    assert gone(int((hanging / "bg.pid").read_text()))


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
