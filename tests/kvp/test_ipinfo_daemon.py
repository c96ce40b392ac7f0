# SPDX-License-Identifier: GPL-2.0-only
"""GET_IP_INFO and SET_IP_INFO through the hv_kvp_daemon executable, end to end.

The daemon runs in a guest (tests/support/guest.py): veth NICs in a
network namespace, a synthetic NIC's VMBus GUID added to its real sysfs
directory, the helper scripts installed in /usr/libexec/hypervkvpd as the
package installs them, and a real systemd-networkd (on a private D-Bus
system bus) managing the network.  The host's requests come through the
simulated kernel.  SET_IP_INFO is followed all the way: the daemon detects
networkd, hv_set_ifconfig installs the .network file and runs networkctl,
networkd configures the NIC, and GET_IP_INFO reports what was injected.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from hvdaemons.protocol.kvp import IpValue
from hvdaemons.protocol.status import HvStatus
from hvsim.kvp import KvpHost
from hvsim.protocol.kvp import HostReply
from tests.support.guest import SCRIPTS, Guest, Nic

GUID = "{9a1f55e0-7e4b-4c52-9a8d-0123456789ab}"
RESOLV_CONF = "search example\nnameserver 192.0.2.53\nnameserver 2001:db8::53\n"

# -- GET_IP_INFO ------------------------------------------------------------------------------

ETH0_NETWORK = """\
[Match]
Name=eth0

[Network]
DHCP=ipv4
LinkLocalAddressing=no
IPv6AcceptRA=no
Address=192.0.2.10/24
Address=2001:db8::10/64
Gateway=192.0.2.1
Gateway=2001:db8::1
"""


@pytest.fixture(scope="module")
def reporting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Guest, KvpHost]]:
    """eth0 configured by networkd (DHCP on), eth1 by hand with ip(8)."""
    guest = Guest(
        tmp_path_factory.mktemp("guest"),
        [Nic("eth0", "00:15:5d:00:00:10", GUID), Nic("eth1", "00:15:5d:00:00:11")],
        resolv_conf=RESOLV_CONF,
        networkd_files={"10-eth0.network": ETH0_NETWORK},
    )
    try:
        guest.start()
        for args in (
            ["addr", "add", "198.51.100.5/25", "dev", "eth1"],
            ["-6", "addr", "add", "2001:db8:1::5/64", "dev", "eth1"],
            ["route", "add", "default", "via", "198.51.100.1", "dev", "eth1", "metric", "50"],
        ):
            guest.run(["ip", *args])
        guest.wait_until(
            "networkd configured eth0",
            lambda: (
                guest.addresses("eth0") == ["192.0.2.10/24", "2001:db8::10/64"]
                and guest.default_gateways("eth0") == ["192.0.2.1", "2001:db8::1"]
            ),
        )
        yield guest, guest.start_daemon()
    finally:
        guest.close()


def test_get_ip_info_of_a_networkd_nic(reporting: tuple[Guest, KvpHost]) -> None:
    _guest, host = reporting
    reply = host.get_ip_info("00:15:5D:00:00:10")
    assert reply.status == HvStatus.S_OK
    assert reply.ip == IpValue(
        adapter_id="00:15:5D:00:00:10",
        addr_family=3,
        # hv_get_dhcp_info asked networkd which file configures eth0: DHCP=ipv4.
        dhcp_enabled=True,
        ip_addr="192.0.2.10;2001:db8::10",
        sub_net="255.255.255.0;/64",
        gate_way="192.0.2.1;2001:db8::1;",
        # hv_get_dns_info: no NetworkManager, no resolved here: resolv.conf.
        dns_addr="192.0.2.53;2001:db8::53;",
    )


def test_get_ip_info_of_an_unmanaged_nic(reporting: tuple[Guest, KvpHost]) -> None:
    _guest, host = reporting
    for family in (0, 1, 2):  # ignored, as by the reference: both families come back
        reply = host.get_ip_info("00:15:5D:00:00:11", family)
        assert reply.status == HvStatus.S_OK
        assert reply.ip == IpValue(
            adapter_id="00:15:5D:00:00:11",
            addr_family=3,
            dhcp_enabled=False,
            ip_addr="198.51.100.5;2001:db8:1::5",
            sub_net="255.255.255.128;/64",
            gate_way="198.51.100.1;",
            dns_addr="192.0.2.53;2001:db8::53;",
        )


def test_get_ip_info_of_no_nic(reporting: tuple[Guest, KvpHost]) -> None:
    guest, host = reporting
    assert host.get_ip_info("00:15:5D:FF:FF:FF").status == HvStatus.E_FAIL
    assert guest.daemon_log is not None
    guest.daemon_log.wait_for("GET_IP_INFO: no interface has MAC address 00:15:5D:FF:FF:FF")
    # The daemon goes on serving.
    assert host.get_ip_info("00:15:5D:00:00:11").status == HvStatus.S_OK


# -- SET_IP_INFO ------------------------------------------------------------------------------

MAC = "00:15:5d:00:00:20"
STATIC = IpValue(
    GUID.upper().strip("{}"),  # the GUID matches without case or braces
    3,
    False,
    "192.0.2.20;2001:db8::20",
    "255.255.255.0;64",
    "192.0.2.1;2001:db8::1",
    "192.0.2.53;2001:db8::53",
)
IFCFG = """\
HWADDR=00:15:5D:00:00:20
DEVICE=eth0
BOOTPROTO=none
IPADDR0=192.0.2.20
IPV6ADDR=2001:0db8:0000:0000:0000:0000:0000:0020
NETMASK0=255.255.255.0
IPV6NETMASK=64
GATEWAY=192.0.2.1
IPV6_DEFAULTGW=2001:0db8:0000:0000:0000:0000:0000:0001
DNS1=192.0.2.53
DNS2=2001:0db8:0000:0000:0000:0000:0000:0053
"""
KEYFILE = """
[connection]
interface-name=eth0

[ethernet]
mac-address=00:15:5D:00:00:20

[ipv4]
address1=192.0.2.20/24
method=manual
gateway=192.0.2.1
dns=192.0.2.53;

[ipv6]
address1=2001:db8::20/64
method=manual
gateway=2001:db8::1
dns=2001:db8::53;
"""
NETWORK = """\
# Written by hv_set_ifconfig: IP configuration from the Hyper-V host.
[Match]
Name=eth0

[Network]
DHCP=no
Address=192.0.2.20/24
Address=2001:0db8:0000:0000:0000:0000:0000:0020/64
Gateway=192.0.2.1
Gateway=2001:0db8:0000:0000:0000:0000:0000:0001
DNS=192.0.2.53
DNS=2001:0db8:0000:0000:0000:0000:0000:0053
"""


def injectable(work: Path, scripts: Path = SCRIPTS) -> Guest:
    """eth0, a synthetic NIC nothing configures yet."""
    return Guest(work, [Nic("eth0", MAC, GUID)], scripts=scripts, resolv_conf=RESOLV_CONF)


@pytest.fixture
def guest(tmp_path: Path) -> Iterator[Guest]:
    g = injectable(tmp_path)
    try:
        yield g.start()
    finally:
        g.close()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_set_ip_info_configures_networkd(guest: Guest) -> None:
    host = guest.start_daemon()
    assert host.set_ip_info(STATIC).status == HvStatus.S_OK
    # The two files of the hv_set_ifconfig contract, private; the staged
    # .network file is gone once hv_set_ifconfig has installed it.
    assert sorted(p.name for p in guest.state_dir.iterdir() if not p.name.startswith(".")) == [
        "eth0.nmconnection",
        "ifcfg-eth0",
    ]
    assert (guest.state_dir / "ifcfg-eth0").read_text() == IFCFG
    assert (guest.state_dir / "eth0.nmconnection").read_text() == KEYFILE
    assert mode(guest.state_dir / "ifcfg-eth0") == mode(guest.state_dir / "eth0.nmconnection")
    assert mode(guest.state_dir / "eth0.nmconnection") == 0o600
    installed = guest.networkd_dir / "05-hyperv-eth0.network"
    assert installed.read_text() == NETWORK
    assert mode(installed) == 0o644
    # hv_set_ifconfig's networkctl reload + reconfigure reached networkd.
    guest.wait_until(
        "networkd took the new file",
        lambda: guest.networkd_said(
            "eth0: Configuring with /etc/systemd/network/05-hyperv-eth0.network."
        ),
    )
    # networkd applies it asynchronously, in one or two passes (reload,
    # then reconfigure): wait until the host sees it all.  networkd also
    # gives eth0 its EUI-64 link-local address.
    link_local = "fe80::215:5dff:fe00:20"
    static_seen = IpValue(
        MAC.upper(),
        3,
        False,
        f"192.0.2.20;2001:db8::20;{link_local}",
        "255.255.255.0;/64;/64",
        "192.0.2.1;2001:db8::1;",
        "192.0.2.53;2001:db8::53;",
    )
    reports(guest, host, static_seen)
    # A second networkd pass may flush and re-add the addresses just after the
    # host saw them: wait for the link to settle, then ask the host again.
    want = ["192.0.2.20/24", "2001:db8::20/64", f"{link_local}/64"]
    guest.wait_until(
        "eth0 settled with the injected addresses", lambda: guest.addresses("eth0") == want
    )
    reports(guest, host, static_seen)

    # Now DHCP and one static address: networkd drops the others, and
    # hv_get_dhcp_info finds DHCP=ipv4 in the file networkd uses.
    dhcp = IpValue(GUID, 1, True, "198.51.100.7", "255.255.255.0", "198.51.100.1", "")
    assert host.set_ip_info(dhcp).status == HvStatus.S_OK
    assert "DHCP=ipv4\nAddress=198.51.100.7/24\nGateway=198.51.100.1\n" in installed.read_text()
    reports(
        guest,
        host,
        IpValue(
            MAC.upper(),
            3,
            True,
            f"198.51.100.7;{link_local}",
            "255.255.255.0;/64",
            "198.51.100.1;",
            "192.0.2.53;2001:db8::53;",
        ),
    )


def reports(guest: Guest, host: KvpHost, want: IpValue) -> None:
    """Wait until GET_IP_INFO answers exactly want (the timeout is a hang guard)."""
    seen: list[HostReply] = []

    def answered() -> bool:
        seen.append(host.get_ip_info(want.adapter_id))
        return seen[-1] == HostReply(HvStatus.S_OK, ip=want)

    try:
        guest.wait_until("GET_IP_INFO reports the injected configuration", answered)
    except AssertionError as e:
        raise AssertionError(f"{e}\nlast reply: {seen[-1]}") from None


def test_set_ip_info_refusals_and_failures(guest: Guest) -> None:
    host = guest.start_daemon()
    log = guest.daemon_log
    assert log is not None
    other = IpValue("{00000000-0000-0000-0000-000000000000}", 1, True)
    assert host.set_ip_info(other).status == HvStatus.GUID_NOTFOUND
    log.wait_for("SET_IP_INFO: no interface has device GUID {00000000-0000-0000-0000-000000000000}")
    bad = IpValue(GUID, 1, False, "192.0.2.300", "255.255.255.0")
    assert host.set_ip_info(bad).status == HvStatus.INVALIDARG
    log.wait_for("SET_IP_INFO for eth0: address '192.0.2.300' is not an IPv4 or IPv6 address")
    # Nothing written, nothing installed.
    assert [p.name for p in guest.state_dir.iterdir() if not p.name.startswith(".")] == []
    assert list(guest.networkd_dir.iterdir()) == []

    # networkd gone: hv_set_ifconfig installs the file, networkctl fails.
    assert guest.networkd is not None
    guest.networkd.terminate()
    guest.networkd.wait(30)
    assert host.set_ip_info(STATIC).status == HvStatus.E_FAIL
    line = log.wait_for("Failed to execute cmd")
    assert "/usr/libexec/hypervkvpd/hv_set_ifconfig" in line
    assert "failed with exit status 1" in line and "networkctl reload failed" in line
    assert (guest.networkd_dir / "05-hyperv-eth0.network").read_text() == NETWORK
    # Still serving.
    assert host.get_ip_info(MAC).status == HvStatus.S_OK


THIRD_PARTY = """#!/bin/sh
# Records what a distribution's hv_set_ifconfig gets, then exits with the
# status in the file "rc" next to it.
here=$(dirname "$0")
log=%(log)s
{
	echo "argc=$#"
	for a in "$@"; do echo "arg=$a"; cat "$a"; done
	echo "netstack=${HV_KVP_NETSTACK-unset}"
	echo "config=${HV_KVP_CONFIG-unset}"
	cat "${HV_KVP_CONFIG:-/dev/null}"
} > "$log"
exit "$(cat %(rc)s)"
"""


def test_set_ip_info_with_a_third_party_script(tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    for name in ("hv_get_dhcp_info", "hv_get_dns_info"):
        (scripts / name).write_bytes((SCRIPTS / name).read_bytes())
    log, rc = tmp_path / "third-party.log", tmp_path / "rc"
    (scripts / "hv_set_ifconfig").write_text(
        THIRD_PARTY % {"log": repr(str(log)), "rc": repr(str(rc))}
    )
    rc.write_text("0\n")
    (tmp_path / "guest").mkdir()
    guest = injectable(tmp_path / "guest", scripts)
    try:
        guest.start()
        host = guest.start_daemon()
        assert host.set_ip_info(STATIC).status == HvStatus.S_OK
        ifcfg, keyfile = guest.state_dir / "ifcfg-eth0", guest.state_dir / "eth0.nmconnection"
        staged = guest.state_dir / "eth0.networkd"
        # The two files, as every hv_set_ifconfig since Linux 6.10 gets them;
        # the staged file and its name in the environment are there too.
        assert log.read_text() == (
            f"argc=2\narg={ifcfg}\n{IFCFG}arg={keyfile}\n{KEYFILE}"
            f"netstack=networkd\nconfig={staged}\n{NETWORK}"
        )
        assert not staged.exists()
        assert list(guest.networkd_dir.iterdir()) == []  # it installed nothing
        rc.write_text("3\n")
        assert host.set_ip_info(STATIC).status == HvStatus.E_FAIL
        assert guest.daemon_log is not None
        guest.daemon_log.wait_for("failed with exit status 3")
    finally:
        guest.close()
