"""Mirror with the real daemon and real traffic: the LB's mirror port mir0 is a veth whose peer
is in a capture namespace, read there with an AF_PACKET socket.

- a rule mirror sends exactly rule A's packets (both directions, as received: to the VIP, and
  the backends' replies before NAT), as many as the mirror counted, none of rule B's;
- a port mirror sends every packet entering the interface (B's too);
- after a delete, nothing more is sent; a mirror survives a daemon restart."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from pyloxi.testing.lab import LbTopology, cleanup_stale
from pyloxi.testing.lab.netns import Netns
from pyloxi.testing.lab.topology import CLIENT_IP, ROUTED_VIP, backend_ip

from ..waiting import wait_until
from .conftest import DaemonHandle
from .traffic import http_answers, udp_answers

VIP_B = "20.0.0.101"
IFACES = "eth0,eth1,eth2,eth3"  # the datapath's; mir0 only sends copies

# One line per frame arriving: "src dst proto sport dport vlan" (vlan -1: untagged; not IPv4:
# "- - -ethertype 0 0 vlan").
_CAPTURE = r"""
import socket, struct, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.setsockopt(263, 8, 1)   # PACKET_AUXDATA: the VLAN tag of the frame
s.bind(("eth0", 0))
print("ready", flush=True)
while True:
    data, anc, _f, _a = s.recvmsg(65536, socket.CMSG_SPACE(32))
    vlan = -1
    for level, kind, blob in anc:
        if level == 263 and kind == 8:
            status, _l, _s, _m, _n, tci, _t = struct.unpack_from("<IIIHHHH", blob)
            if status & 0x10:
                vlan = tci & 0xfff
    if len(data) < 34 or data[12:14] != b"\x08\x00":   # not IPv4 (ARP...): still a copy
        print("- -", -int.from_bytes(data[12:14], "big"), 0, 0, vlan, flush=True)
        continue
    ihl = (data[14] & 15) * 4
    proto = data[23]
    sport = dport = 0
    if proto in (6, 17) and len(data) >= 14 + ihl + 4:
        sport, dport = struct.unpack_from("!HH", data, 14 + ihl)
    print(socket.inet_ntoa(data[26:30]), socket.inet_ntoa(data[30:34]), proto, sport, dport,
          vlan, flush=True)
"""

Frame = tuple[str, str, int, int, int, int]


class Capture:
    def __init__(self, ns: Netns) -> None:
        self.proc = ns.popen([sys.executable, "-u", "-c", _CAPTURE], stdout=-1)
        self.frames: list[Frame] = []
        self._lock = threading.Lock()
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == b"ready"
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            src, dst, proto, sport, dport, vlan = line.decode().split()
            with self._lock:
                self.frames.append((src, dst, int(proto), int(sport), int(dport), int(vlan)))

    def take(self) -> list[Frame]:
        with self._lock:
            out, self.frames = self.frames, []
        return out


@pytest.fixture(scope="module")
def topo() -> Iterator[LbTopology]:
    cleanup_stale()
    t = LbTopology(3)
    try:
        cap = t.lab.netns("cap")
        t.lab.link(t.lb, "mir0", None, cap, "eth0", None)
        for ns, dev in ((t.lb, "mir0"), (cap, "eth0")):  # no IPv6 chatter on the mirror link
            ns.sysctl(f"net.ipv6.conf.{dev}.disable_ipv6", 1)
        t.cap = cap  # type: ignore[attr-defined]
        t.start_http()
        t.start_udp()
        yield t
    finally:
        t.close()


@pytest.fixture(scope="module")
def daemon(topo: LbTopology) -> Iterator[DaemonHandle]:
    d = DaemonHandle(topo)
    d.extra_args = ["--interfaces", IFACES]
    d.start()
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="module")
def capture(topo: LbTopology) -> Capture:
    return Capture(topo.cap)  # type: ignore[attr-defined]


@pytest.fixture
def mir(lb: DaemonHandle, capture: Capture) -> Iterator[DaemonHandle]:
    for vip, name, be in ((ROUTED_VIP, "svc-a", 1), (VIP_B, "svc-b", 2)):
        eps = f"{backend_ip(be)}:1"
        lb.cli("create", "lb", vip, "--udp=5353:5353", f"--endpoints={eps}", f"--name={name}")
        lb.cli("create", "lb", vip, "--tcp=80:80", f"--endpoints={eps}", f"--name={name}")
    capture.take()
    yield lb
    for m in mirrors(lb):
        lb.cli("delete", "mirror", m, check=False)


def mirrors(d: DaemonHandle) -> dict[str, dict[str, Any]]:
    r = d.api("GET", "/config/mirror/all")
    assert r.status_code == 200, r.text
    return {e["mirrorIdent"]: e for e in r.json()["mirrAttr"]}


def counted(d: DaemonHandle, ident: str) -> int:
    return int(mirrors(d)[ident]["counter"].split(":")[0])


def of_vip(frames: list[Frame], vip: str, proto: int) -> list[Frame]:
    """A rule's packets as received: the client's to the VIP, its backend's replies (A's
    backend is be1, B's be2)."""
    port = 5353 if proto == 17 else 80
    be = backend_ip(1 if vip == ROUTED_VIP else 2)
    return [f for f in frames if f[2] == proto and (
        (f[0] == CLIENT_IP and f[1] == vip and f[4] == port) or
        (f[0] == be and f[1] == CLIENT_IP and f[3] == port))]


def settle(capture: Capture, d: DaemonHandle, ident: str, want: int,
           before: int = 0) -> list[Frame]:
    """Frames captured until at least `want` arrived, and exactly as many as the mirror
    counted beyond `before` (a clone the mirror port did not deliver would keep this waiting,
    and fail)."""
    got: list[Frame] = []

    def done() -> bool:
        got.extend(capture.take())
        return len(got) >= want and before + len(got) == counted(d, ident)

    wait_until(done, 30, what=f"{want} mirrored frames")
    return got


def test_rule_mirror_sends_exactly_the_rules_packets(mir: DaemonHandle,
                                                     capture: Capture) -> None:
    mir.cli("create", "mirror", "mirr-a", "--mirrorInfo=type:0,port:mir0",
            "--targetObject=attachement:2,mirrObjName:svc-a")
    assert udp_answers(mir.topo.client, VIP_B, 5) == ["be2"] * 5  # B: not mirrored
    assert udp_answers(mir.topo.client, ROUTED_VIP, 5) == ["be1"] * 5
    assert [b for b, _ in http_answers(mir.topo.client, ROUTED_VIP, 2)] == ["be1", "be1"]
    assert udp_answers(mir.topo.client, VIP_B, 3) == ["be2"] * 3
    frames = settle(capture, mir, "mirr-a", 10)
    udp = of_vip(frames, ROUTED_VIP, 17)
    tcp = of_vip(frames, ROUTED_VIP, 6)
    # UDP: each request and its reply (five flows, both directions), as received
    assert len([f for f in udp if f[1] == ROUTED_VIP]) == 5
    assert len([f for f in udp if f[0] == backend_ip(1)]) == 5
    # TCP: both directions of both connections (handshake, request, answer, close)
    assert {f[1] for f in tcp} == {ROUTED_VIP, CLIENT_IP} and len(tcp) >= 2 * 8
    assert sorted(frames) == sorted(udp + tcp)  # nothing else: none of B's
    assert of_vip(frames, VIP_B, 17) == []
    assert all(f[5] == -1 for f in frames)  # SPAN: untagged
    assert counted(mir, "mirr-a") == len(frames)


def test_port_mirror_sends_everything_entering_the_interface(mir: DaemonHandle,
                                                             capture: Capture) -> None:
    mir.cli("create", "mirror", "tap", "--mirrorInfo=type:1,port:mir0,vlan:42",
            "--targetObject=attachment:1,mirrObjName:eth0")
    assert udp_answers(mir.topo.client, VIP_B, 4) == ["be2"] * 4
    assert udp_answers(mir.topo.client, ROUTED_VIP, 3) == ["be1"] * 3
    frames = settle(capture, mir, "tap", 7)
    # everything the client sent in (B's too); nothing that entered from the backends
    assert len([f for f in frames if f[1] == VIP_B and f[2] == 17]) == 4
    assert len([f for f in frames if f[1] == ROUTED_VIP and f[2] == 17]) == 3
    assert not [f for f in frames if f[0] in (backend_ip(1), backend_ip(2))]
    assert {f[5] for f in frames} == {42}  # RSPAN: every copy tagged with VLAN 42


def test_after_delete_nothing_more_and_restart_keeps_mirrors(mir: DaemonHandle,
                                                             capture: Capture) -> None:
    mir.cli("create", "mirror", "mirr-a", "--mirrorInfo=type:0,port:mir0",
            "--targetObject=attachment:2,mirrObjName:svc-a")
    assert udp_answers(mir.topo.client, ROUTED_VIP, 1) == ["be1"]
    assert len(settle(capture, mir, "mirr-a", 2)) == 2
    mir.restart()
    assert list(mirrors(mir)) == ["mirr-a"]
    assert counted(mir, "mirr-a") == 2  # the counter goes on
    assert udp_answers(mir.topo.client, ROUTED_VIP, 2) == ["be1"] * 2
    assert len(of_vip(settle(capture, mir, "mirr-a", 4, before=2), ROUTED_VIP, 17)) == 4
    mir.cli("delete", "mirror", "mirr-a")
    assert udp_answers(mir.topo.client, ROUTED_VIP, 3) == ["be1"] * 3  # not mirrored
    # a marker: B mirrored now; its frames come after any of A's sent before them
    mir.cli("create", "mirror", "mirr-b", "--mirrorInfo=type:0,port:mir0",
            "--targetObject=attachment:2,mirrObjName:svc-b")
    assert udp_answers(mir.topo.client, VIP_B, 1) == ["be2"]
    frames = settle(capture, mir, "mirr-b", 2)
    assert of_vip(frames, ROUTED_VIP, 17) == []
    assert len(of_vip(frames, VIP_B, 17)) == 2


def test_refusals_change_nothing(mir: DaemonHandle) -> None:
    for body, reason in (
        ({"mirrorIdent": "x", "mirrorInfo": {"type": 2, "port": "mir0"},
          "targetObject": {"attachment": 1, "mirrObjName": "eth0"}}, "ERSPAN"),
        ({"mirrorIdent": "x", "mirrorInfo": {"type": 0, "port": "nosuch0"},
          "targetObject": {"attachment": 1, "mirrObjName": "eth0"}}, "nosuch0"),
        ({"mirrorIdent": "x", "mirrorInfo": {"type": 0, "port": "eth1"},
          "targetObject": {"attachment": 1, "mirrObjName": "mir0"}}, "does not run on"),
    ):
        r = mir.api("POST", "/config/mirror", body)
        assert r.status_code == 400 and reason in r.text, r.text
    assert mirrors(mir) == {}
