"""IPv6 and NAT64 with real traffic: a dual-stack lab (client / LB / 3 backends), the daemon in the
LB namespace, rules made with the CLI as a user would. For each mode the test checks which
backends answered and which source address they saw; UDP, ICMPv6 echo and SCTP associations go
through the same VIPs; a 2 MB download over NAT64 arrives byte-identical."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest

from pyloxi.datapath.ebpf.counters import datapath_stats
from pyloxi.datapath.ebpf.libbpf.maps import Map
from pyloxi.testing.lab import LbTopology, cleanup_stale
from pyloxi.testing.lab.topology import (
    CLIENT_IP6,
    ROUTED_VIP6,
    backend_ip6,
    lb_ip_toward,
    wait_listening,
)

from ..waiting import wait_until
from .conftest import DaemonHandle
from .traffic import http_answers, spread, udp_answers

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)"),
]

NAT64_VIP = "fd00:20::164"
ALL = {"be1", "be2", "be3"}


@pytest.fixture(scope="module")
def topo6() -> Iterator[LbTopology]:
    cleanup_stale()
    t = LbTopology(3, v6=True)
    try:
        t.start_http(big_mb=2)
        t.start_udp()
        yield t
    finally:
        t.close()


@pytest.fixture(scope="module")
def daemon6(topo6: LbTopology) -> Iterator[DaemonHandle]:
    d = DaemonHandle(topo6, "dp6")
    d.start()
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture
def lb6(daemon6: DaemonHandle) -> Iterator[DaemonHandle]:
    daemon6.cli("delete", "lb", "--all", check=False)
    yield daemon6
    daemon6.cli("delete", "lb", "--all", check=False)


def endpoints(topo: LbTopology, nat64: bool) -> str:
    ips = topo.backend_ips if nat64 else topo.backend_ips6
    return ",".join(f"{ip}:1" for ip in ips)


def expected_source(mode: str, nat64: bool, be: int) -> str:
    """The address backend `be` sees a client's flow come from."""
    if nat64:   # an IPv4 backend sees the LB's IPv4 address toward it, in every mode
        return lb_ip_toward(be)
    return {"default": CLIENT_IP6, "onearm": lb_ip_toward(be, v6=True),
            "fullnat": ROUTED_VIP6}[mode]


@pytest.mark.parametrize("nat64", [False, True], ids=["nat66", "nat64"])
@pytest.mark.parametrize("mode", ["default", "onearm", "fullnat"])
def test_tcp_and_udp(lb6: DaemonHandle, mode: str, nat64: bool) -> None:
    vip = NAT64_VIP if nat64 else ROUTED_VIP6
    topo = lb6.topo
    eps = f"--endpoints={endpoints(topo, nat64)}"
    lb6.cli("create", "lb", vip, "--tcp=80:80", eps, f"--mode={mode}")
    lb6.cli("create", "lb", vip, "--udp=53:5353", eps, f"--mode={mode}")
    answers = http_answers(topo.client, vip, 6)
    assert all(a[0] in ALL for a in answers), answers
    assert set(spread([a[0] for a in answers])) == ALL   # round robin reached every backend
    for name, seen in answers:
        assert seen == expected_source(mode, nat64, int(name[2:])), (mode, name, seen)
    udp = udp_answers(topo.client, vip, 6, port=53)
    assert set(udp) == ALL, udp
    flows = lb6.api("GET", "/config/conntrack/all").json()["ctAttr"]
    assert any(f["destinationIP"] == vip and f["protocol"] == "tcp" for f in flows), flows


@pytest.mark.parametrize("nat64", [False, True], ids=["nat66", "nat64"])
@pytest.mark.parametrize("mode", ["default", "onearm", "fullnat"])
def test_ping6_through_the_vip(lb6: DaemonHandle, mode: str, nat64: bool) -> None:
    vip = NAT64_VIP if nat64 else ROUTED_VIP6
    topo = lb6.topo
    lb6.cli("create", "lb", vip, "--icmp", f"--endpoints={endpoints(topo, nat64)}",
            f"--mode={mode}")
    out = topo.client.run(["ping", "-6", "-c", "3", "-i", "0.2", "-W", "3", vip], check=False)
    assert out.returncode == 0 and " 0% packet loss" in out.stdout, out.stdout
    flows = lb6.api("GET", "/config/conntrack/all").json()["ctAttr"]
    echo = [f for f in flows if f["protocol"] == "icmp6" and f["destinationIP"] == vip]
    assert echo, flows
    # the flow went to an endpoint, not to the LB's own stack
    assert any(ip in echo[0]["conntrackAct"] for ip in
               (topo.backend_ips if nat64 else topo.backend_ips6)), echo


def test_nat64_download_arrives_identical(lb6: DaemonHandle) -> None:
    lb6.cli("create", "lb", NAT64_VIP, "--tcp=80:80", f"--endpoints={lb6.topo.backend_ips[0]}:1")
    download_identical(lb6.topo)


def download_identical(topo: LbTopology) -> None:
    """The 2 MB file through NAT64_VIP, byte for byte."""
    with tempfile.TemporaryDirectory(prefix="pl-nat64-") as tmp:
        path = os.path.join(tmp, "big.bin")
        proc = topo.client.run(["curl", "-sS", "--max-time", "60", "-o", path,
                                f"http://[{NAT64_VIP}]/big.bin"], check=False, timeout=90)
        assert proc.returncode == 0, proc.stderr
        with open(path, "rb") as f:
            got = hashlib.sha256(f.read()).hexdigest()
    assert got == hashlib.sha256(bytes(2 << 20)).hexdigest()


def test_nat64_through_xdp(topo6: LbTopology, daemon6: DaemonHandle) -> None:
    """`--datapath xdp`: XDP opens the NAT64 connection and translates its packets both ways
    (the senders' checksum offload off: partial checksums are TC's); the download arrives
    identical."""
    senders = [topo6.client, *topo6.backends]
    lb_ifaces = [f"eth{i}" for i in range(len(topo6.backends) + 1)]
    daemon6.stop()
    daemon6.extra_args = ["--datapath", "xdp"]
    try:
        for ns in senders:
            ns.run(["ethtool", "-K", "eth0", "tx", "off"])
        daemon6.start()
        daemon6.cli("delete", "lb", "--all", check=False)
        daemon6.cli("create", "lb", NAT64_VIP, "--tcp=80:80",
                    f"--endpoints={topo6.backend_ips[0]}:1")
        download_identical(topo6)
        m = Map.from_pin(os.path.join(daemon6.pin, "stats_map"))
        try:
            stats = datapath_stats(m)
        finally:
            m.close()
        assert stats["xdp_new"] >= 1 and stats["xdp_fwd"] > 1000, stats
    finally:
        daemon6.stop()
        daemon6.extra_args = []
        for ifname in lb_ifaces:
            topo6.lb.run(["ip", "link", "set", "dev", ifname, "xdpgeneric", "off"], check=False)
        for ns in senders:
            ns.run(["ethtool", "-K", "eth0", "tx", "on"], check=False)
        daemon6.start()


# A UDP server that sends its answers with a zero checksum (SO_NO_CHECK, allowed over IPv4):
# NAT64 must give them a full one, or the IPv6 client's kernel drops them.
_UDP_NO_CHECK = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 11, 1)   # SO_NO_CHECK
s.bind(("0.0.0.0", int(sys.argv[1])))
while True:
    data, peer = s.recvfrom(65535)
    s.sendto(b"nocheck " + data, peer)
"""


def test_nat64_udp_with_zero_ipv4_checksum(lb6: DaemonHandle) -> None:
    topo = lb6.topo
    be = topo.backends[0]
    be.popen([sys.executable, "-c", _UDP_NO_CHECK, "7777"])
    wait_listening(be, 7777, "udp")
    lb6.cli("create", "lb", NAT64_VIP, "--udp=7777:7777", f"--endpoints={topo.backend_ips[0]}:1")
    capture = be.popen(["timeout", "10", "tcpdump", "-c", "1", "-nn", "-vv", "-i", "eth0",
                        "udp and src port 7777"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    # capturing once it says so (a running process may not have opened its capture yet);
    # on a failure it says why and exits: the line, or EOF, comes either way
    assert capture.stderr is not None
    started = capture.stderr.readline().decode()
    assert "listening on" in started, started
    answers = udp_answers(topo.client, NAT64_VIP, 4, port=7777)
    assert answers == ["nocheck"] * 4, answers
    out = capture.communicate(timeout=15)[0].decode()
    assert "no cksum" in out, out   # the answer really left the backend without one


@pytest.mark.parametrize("sel", ["hash", "persist"])
def test_v6_sticky_selections_keep_a_client_on_one_backend(lb6: DaemonHandle, sel: str) -> None:
    topo = lb6.topo
    lb6.cli("create", "lb", ROUTED_VIP6, "--tcp=80:80", f"--endpoints={endpoints(topo, False)}",
            f"--select={sel}")
    if sel == "hash":   # one source port: the 5-tuple is the same each time
        answers = http_answers(topo.client, ROUTED_VIP6, 4, local_port=45678)
    else:               # any source port: the client address alone decides
        answers = http_answers(topo.client, ROUTED_VIP6, 6)
    assert len({a[0] for a in answers}) == 1 and answers[0][0] in ALL, answers


def test_v6_probe_pulls_a_dead_endpoint_and_brings_it_back(lb6: DaemonHandle) -> None:
    topo = lb6.topo
    lb6.cli("create", "lb", ROUTED_VIP6, "--tcp=80:80", f"--endpoints={endpoints(topo, False)}",
            "--monitor", "--probetype=tcp", "--probeport=80", "--probetimeout=1",
            "--proberetries=1")
    be3 = topo.backends[2]
    be3.run("ip -6 addr del fd00:13::2/64 dev eth0")
    try:
        wait_until(lambda: {a[0] for a in http_answers(topo.client, ROUTED_VIP6, 6)} ==
                   {"be1", "be2"}, 30, what="be3 pulled from the IPv6 VIP")
    finally:
        be3.run("ip -6 addr add fd00:13::2/64 dev eth0 nodad")
        be3.run("ip -6 route replace default via fd00:13::1")
    wait_until(lambda: "be3" in {a[0] for a in http_answers(topo.client, ROUTED_VIP6, 6)}, 30,
               what="be3 back on the IPv6 VIP")


ECHO = re.compile(r"echo seq=(\d+) sid=(\d+) ppid=(\d+)")


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


@pytest.mark.skipif(
    subprocess.run(["sh", "-c", "ldconfig -p | grep -q libusrsctp.so.2"]).returncode != 0,
    reason="libusrsctp2 is not installed (scripts/install-deps)")
@pytest.mark.parametrize("mode", ["default", "onearm", "fullnat"])
def test_sctp_association_over_v6(lb6: DaemonHandle, mode: str) -> None:
    topo = lb6.topo
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    lb6.cli("create", "lb", ROUTED_VIP6, "--sctp=36412:38412", f"--endpoints={backend_ip6(1)}:1",
            f"--mode={mode}")
    with tempfile.TemporaryDirectory(prefix="pl-sctp6-") as tmp:
        slog, clog = os.path.join(tmp, "server.log"), os.path.join(tmp, "client.log")
        with open(slog, "wb") as out:
            server = topo.backends[0].popen(
                [sys.executable, "-m", "pyloxi.testing.usrsctp", "--fast", "server", "--bind",
                 backend_ip6(1), "--port", "38412"], stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            wait_until(lambda: "listening" in read(slog), 10, what="usrsctp server")
            with open(clog, "wb") as out:
                client = topo.client.popen(
                    [sys.executable, "-m", "pyloxi.testing.usrsctp", "--fast", "client",
                     "--connect", ROUTED_VIP6, "--port", "36412", "--count", "3", "--data",
                     "y" * 500, "--timeout", "15"], stdout=out, stderr=subprocess.STDOUT, env=env)
            rc = client.wait(25)
            text = read(clog)
        finally:
            server.terminate()
            server.wait(10)
    assert rc == 0, text
    assert [int(m[0]) for m in ECHO.findall(text)] == [0, 1, 2], text


def test_refused_combinations_change_nothing(lb6: DaemonHandle) -> None:
    topo = lb6.topo
    before = lb6.api("GET", "/config/loadbalancer/all").json()
    for args in (
        ["20.0.0.50", "--tcp=80:80", f"--endpoints={backend_ip6(1)}:1"],          # NAT46
        [ROUTED_VIP6, "--tcp=80:80", f"--endpoints={backend_ip6(1)}:1,{topo.backend_ips[1]}:1"],
        [NAT64_VIP, "--tcp=80:80", f"--endpoints={topo.backend_ips[0]}:1", "--mode=dsr",
         "--select=hash"],
        [NAT64_VIP, "--sctp=36412:38412", f"--endpoints={topo.backend_ips[0]}:1"],
    ):
        proc = lb6.cli("create", "lb", *args, check=False)
        assert proc.returncode != 0, args
    assert lb6.api("GET", "/config/loadbalancer/all").json() == before
