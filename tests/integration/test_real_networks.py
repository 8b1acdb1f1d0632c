"""Real networks through the VIP: path MTU discovery across a router with a smaller MTU, ICMP
errors from endpoints, fragmented datagrams, TTL expiry (the real daemon, real namespaces)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from pyloxi.testing.lab import cleanup_stale
from pyloxi.testing.lab.routed import RoutedTopology
from pyloxi.testing.lab.topology import ROUTED_VIP, backend_ip

from .conftest import DaemonHandle

MIB = 1 << 20

_UDP_ONCE = """
import socket, sys
host, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
s.connect((host, port))
s.send(b"u" * size)
try:
    data = s.recv(65535)
    print("OK", len(data), data.split()[0].decode())
except ConnectionRefusedError:
    print("REFUSED")
except OSError as e:
    print("ERR", type(e).__name__)
"""

_TTL_PROBE = """
import sys
from scapy.all import IP, UDP, ICMP, sr1, conf
conf.verb = 0
ans = sr1(IP(dst=sys.argv[1], ttl=int(sys.argv[2])) / UDP(sport=40404, dport=53) / b"t",
          timeout=3)
if ans is None or ICMP not in ans:
    print("NONE")
else:
    print(ans[IP].src, ans[ICMP].type, ans[ICMP].code)
"""


@pytest.fixture(scope="module")
def topo() -> Iterator[RoutedTopology]:
    """Overrides conftest's lab: client - router (MTU 1400 toward the client) - LB - 3 backends."""
    cleanup_stale()
    t = RoutedTopology(3)
    try:
        t.start_http(big_mb=1)
        t.start_udp()
        yield t
    finally:
        t.close()


def eps() -> str:
    return ",".join(f"{backend_ip(i)}:1" for i in (1, 2, 3))


def download(lb: DaemonHandle, host: str) -> int:
    """Bytes of /big.bin the client got within 20 s."""
    proc = lb.topo.client.run(
        ["curl", "-s", "-o", "/dev/null", "--max-time", "20", "-w", "%{size_download}",
         f"http://{host}/big.bin"], check=False, timeout=40)
    return int(proc.stdout or 0)


def test_direct_download_across_small_mtu_completes(lb: DaemonHandle) -> None:
    """The control: straight from a backend, the kernel's own PMTU discovery works."""
    assert download(lb, backend_ip(1)) == MIB


@pytest.mark.parametrize("mode", ["default", "fullnat", "onearm"])
def test_download_through_vip_across_small_mtu(lb: DaemonHandle, mode: str) -> None:
    """The router's 'fragmentation needed' goes to the VIP; translated, it reaches the
    backend about the packet it sent, which then sends smaller segments."""
    lb.cli("create", "lb", ROUTED_VIP, "--tcp=80:80", f"--endpoints={eps()}", f"--mode={mode}")
    for _ in range(3):  # three connections, three backends (round robin)
        assert download(lb, ROUTED_VIP) == MIB


def udp_once(lb: DaemonHandle, host: str, port: int, size: int) -> str:
    out = lb.topo.client.run([sys.executable, "-c", _UDP_ONCE, host, str(port), str(size)],
                             timeout=30)
    return out.stdout.strip()


@pytest.mark.parametrize("mode", ["default", "fullnat", "onearm"])
def test_udp_to_closed_backend_port_is_refused(lb: DaemonHandle, mode: str) -> None:
    """As a direct send is: the backend's 'port unreachable', translated, fails the socket."""
    assert udp_once(lb, backend_ip(1), 5399, 10) == "REFUSED"
    lb.cli("create", "lb", ROUTED_VIP, "--udp=53:5399", f"--endpoints={eps()}", f"--mode={mode}")
    assert udp_once(lb, ROUTED_VIP, 53, 10) == "REFUSED"


@pytest.fixture
def client_route_mtu(lb: DaemonHandle) -> Iterator[None]:
    """The client sends datagrams as fragments that fit the router's 1400-byte link (its
    receive side drops longer frames, as a real interface does)."""
    client = lb.topo.client
    client.run(f"ip route add {ROUTED_VIP} via 10.0.1.1 mtu 1400")
    try:
        yield
    finally:
        client.run(f"ip route del {ROUTED_VIP}", check=False)


@pytest.mark.parametrize("mode", ["default", "fullnat", "onearm"])
def test_fragmented_udp_datagram_echoes_through_vip(lb: DaemonHandle, client_route_mtu: None,
                                                    mode: str) -> None:
    """3000 bytes each way: fragments from the client, and the backend's reply fragments
    (which the router fragments once more toward the client)."""
    lb.cli("create", "lb", ROUTED_VIP, "--udp=53:5353", f"--endpoints={eps()}", f"--mode={mode}")
    seen = set()
    for _ in range(3):
        status, size, backend = udp_once(lb, ROUTED_VIP, 53, 3000).split()
        assert status == "OK" and int(size) == len(backend) + 1 + 3000
        seen.add(backend)
    assert seen == {"be1", "be2", "be3"}


def test_ttl_expiring_at_the_lb_gets_time_exceeded_from_vip(lb: DaemonHandle) -> None:
    """TTL 2 at the client is 1 at the LB (the router took one): 'time exceeded' from the VIP,
    as a router would answer, and no flow is created."""
    lb.cli("create", "lb", ROUTED_VIP, "--udp=53:5353", f"--endpoints={eps()}")
    out = lb.topo.client.run([sys.executable, "-c", _TTL_PROBE, ROUTED_VIP, "2"], timeout=30)
    assert out.stdout.split() == [ROUTED_VIP, "11", "0"]
    ct = lb.api("GET", "/config/conntrack/all").json().get("ctAttr") or []
    assert ct == []


@pytest.fixture(params=["gso", "no-gso"])
def lb_link_small(request: pytest.FixtureRequest, lb: DaemonHandle) -> Iterator[str]:
    """The LB's own link toward the router has MTU 1400 (both ends), the router's link toward
    the client 1500: the LB is the one that must say 'fragmentation needed'. Without GSO the
    backends send plain 1500-byte frames, which the 1400-byte link would drop."""
    topo = lb.topo
    assert isinstance(topo, RoutedTopology)
    gso = "on" if request.param == "gso" else "off"
    topo.router.run("ip link set eth0 mtu 1500")
    topo.router.run("ip link set eth1 mtu 1400")
    topo.lb.run("ip link set eth0 mtu 1400")
    for be in topo.backends:
        be.run(["ethtool", "-K", "eth0", "tso", gso, "gso", gso])
    try:
        yield request.param
    finally:
        for be in topo.backends:
            be.run("ethtool -K eth0 tso on gso on", check=False)
        topo.lb.run("ip link set eth0 mtu 1500", check=False)
        topo.router.run("ip link set eth1 mtu 1500", check=False)
        topo.router.run(f"ip link set eth0 mtu {topo.client_link_mtu}", check=False)


@pytest.mark.parametrize("mode", ["default", "fullnat"])
def test_download_through_vip_when_lb_egress_is_smaller(lb: DaemonHandle, lb_link_small: str,
                                                        mode: str) -> None:
    """The cached next hop does not skip the MTU check: the backend gets 'fragmentation
    needed' about the packet it sent (pre-NAT), from the LB, and the download completes."""
    lb.cli("create", "lb", ROUTED_VIP, "--tcp=80:80", f"--endpoints={eps()}", f"--mode={mode}")
    for _ in range(3):
        assert download(lb, ROUTED_VIP) == MIB
