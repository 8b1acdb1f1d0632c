"""cluster.peers: the control channel's registry (fake clock) and its frames on the sync stream
between nodes over loopback, beside flow batches."""

from __future__ import annotations

import socket
import struct
from typing import Any

from tests.unit.test_ctsync_wire import Fake, _peers
from tests.waiting import wait_until

from pyloxi.cluster.ctsync import CtSync
from pyloxi.cluster.peers import ClusterPeers


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_frames_carry_sections_and_silence_means_gone() -> None:
    clock = Clock()
    a, b = ClusterPeers(0, clock=clock), ClusterPeers(1, clock=clock)
    got: list[tuple[int, dict[str, Any]]] = []
    a.register("instance", lambda: {"llb-inst0": "10.9.0.1"}, lambda n, p: None)
    b.register("instance", lambda: {}, lambda n, p: got.append((n, p)))
    b.register("other", lambda: {"x": 1}, lambda n, p: got.append((n, {"other": p})))
    assert a.due()
    b.on_frame(a.frame())
    assert not a.due()  # sent: the next one in a period, or on change
    a.changed()
    assert a.due()
    # every section's receiver hears each frame; a section the peer does not send is {}
    assert got == [(0, {"llb-inst0": "10.9.0.1"}), (0, {"other": {}})]
    assert list(b.peers()) == [0] and b.peers()[0].sections["instance"] == {"llb-inst0": "10.9.0.1"}
    clock.t += 2.9
    assert b.expire() == [] and round(b.peers()[0].age(clock.t), 3) == 2.9
    clock.t += 0.2
    assert b.peers() == {}
    got.clear()
    assert b.expire() == [0]
    assert got == [(0, {}), (0, {"other": {}})]
    assert b.expire() == []  # told once


def test_bad_frames_are_refused_and_a_bad_section_does_not_silence_the_others() -> None:
    a = ClusterPeers(0)
    got: list[int] = []
    a.register("ok", lambda: {"v": 1}, lambda n, p: got.append(n))

    def broken() -> dict[str, Any]:
        raise RuntimeError("boom")

    a.register("bad", broken, lambda n, p: 1 / 0)  # type: ignore[func-returns-value]
    assert b'"ok":{"v":1}' in a.frame() and b'"bad"' not in a.frame()
    for junk in (b"{", b'{"node": "x", "sections": {}}', b'{"node": 0, "sections": {}}',
                 b'{"sections": {}}', b"[]"):
        a.on_frame(junk)
    assert a.frames_bad == 5 and got == []
    a.on_frame(b'{"node": 2, "sections": {"ok": {}}}')
    assert got == [2]
    try:
        a.register("ok", lambda: {}, lambda n, p: None)
    except ValueError:
        pass
    else:
        raise AssertionError("registered twice")


def test_every_role_exchanges_control_frames_beside_flows() -> None:
    """Two nodes, both BACKUP (no flows sent): each hears the other's sections; a MASTER's
    flows still arrive on the same stream; a node that stops counts as gone after 3 s."""
    fa, fb = Fake(flows=3), Fake()
    pa, pb = ClusterPeers(0), ClusterPeers(1)
    heard: dict[str, list[tuple[int, dict[str, Any]]]] = {"a": [], "b": []}
    pa.register("instance", lambda: {"llb-inst0": "10.9.0.1"},
                lambda n, p: heard["a"].append((n, p)))
    pb.register("instance", lambda: {"llb-inst0": "10.9.0.2"},
                lambda n, p: heard["b"].append((n, p)))
    nodes = _peers()
    sa, sb = CtSync(fa, peers=pa), CtSync(fb, peers=pb)
    try:
        sb.start(nodes, 1, "BACKUP")
        sa.start(nodes, 0, "BACKUP")
        wait_until(lambda: (0, {"llb-inst0": "10.9.0.1"}) in heard["b"], 30)
        wait_until(lambda: (1, {"llb-inst0": "10.9.0.2"}) in heard["a"], 30)
        assert fb.got == [] and sa.sent == 0
        sa.set_role("MASTER")
        wait_until(lambda: len(fb.got) == 3, 30)
        assert fb.got == fa.table and pb.frames_bad == 0
        sa.stop()
        wait_until(lambda: heard["b"][-1] == (0, {}), 30)
        assert pb.peers() == {}
    finally:
        sa.stop()
        sb.stop()


def test_an_old_receiver_keeps_taking_flow_frames() -> None:
    """Flow frames are unchanged on the wire: record size first, never 0."""
    fa = Fake(flows=1)
    nodes = _peers()
    host, port = nodes[1].split(":")
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((host, int(port)))
    ls.listen(1)
    ls.settimeout(30)
    sa = CtSync(fa)
    try:
        sa.start(nodes, 0, "MASTER")
        conn, _ = ls.accept()
        conn.settimeout(30)
        head = b""
        while len(head) < 14:
            head += conn.recv(14 - len(head))
        length, _, size = struct.unpack(">IQH", head)
        assert size == 344 and length == 10 + 344
        conn.close()
    finally:
        sa.stop()
        ls.close()


def test_instance_ips_own_peers_and_bgp_paths() -> None:
    """This node's instance IPs go to the peers; theirs come back as BACKUP paths and stay
    announced when the peer goes silent (that is when the router needs them)."""
    from pyloxi.cluster import ClusterState
    from pyloxi.cluster.instances import InstanceIPs

    cluster = ClusterState()
    told: list[int] = []
    ips = InstanceIPs(cluster, on_peers_changed=lambda: told.append(1))
    assert ips.own() == {} and ips.ip("llb-inst0", 4) is None and ips.paths() == {}
    cluster.set_state("llb-inst0", "MASTER", "10.90.0.1")
    cluster.set_state("inst6", "BACKUP", "fd00:90::1")
    assert ips.own() == {"llb-inst0": "10.90.0.1", "inst6": "fd00:90::1"}
    assert ips.ip("llb-inst0", 4) == "10.90.0.1" and ips.ip("llb-inst0", 6) is None
    assert ips.ip("inst6", 6) == "fd00:90::1" and ips.ip("nope", 4) is None
    ips.receive(2, {"llb-inst0": "10.90.0.2", "junk": "x", "nil": "0.0.0.0"})
    ips.receive(2, {"llb-inst0": "10.90.0.2"})  # the same again: nobody woken
    assert told == [1]
    assert ips.paths() == {"10.90.0.1": (5000, 10), "fd00:90::1": (100, 20),
                           "10.90.0.2": (100, 20)}
    ips.receive(2, {})  # gone: still announced as BACKUP
    assert ips.paths()["10.90.0.2"] == (100, 20) and told == [1]


def test_a_stuck_peer_delays_nobody_else() -> None:
    """A peer that accepted the connection but reads nothing (hung, or its link died with
    the connection up): the send to it blocks until its 5 s timeout. The other peers keep
    getting flows and control frames meanwhile, so none of them takes this node for gone."""
    fa, fb = Fake(flows=20000), Fake()  # a 7 MB resync: more than the stuck socket takes
    pa, pb = ClusterPeers(0), ClusterPeers(1)
    gone: list[int] = []
    pa.register("x", lambda: {"v": 1}, lambda n, p: None)
    pb.register("x", lambda: {}, lambda n, p: None if p else gone.append(n))
    nodes = _peers() + _peers()[:1]
    host, port = nodes[2].split(":")
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.bind((host, int(port)))
    stuck.listen(1)  # completes the handshake, never accepts, never reads
    sa, sb = CtSync(fa, peers=pa), CtSync(fb, peers=pb)
    try:
        sb.start(nodes, 1, "BACKUP")
        sa.start(nodes, 0, "MASTER")
        wait_until(lambda: len(fb.got) == 20000, 30)
        wait_until(lambda: sa._peers[1].connected, 30)
        # the stuck peer's send times out (5 s) and its connection is dropped
        wait_until(lambda: not sa._peers[1].connected, 30)
        fa.pending = [b"\xee" * 344]
        wait_until(lambda: len(fb.got) == 20001, 30)
        assert gone == [] and 0 in pb.peers()
    finally:
        sa.stop()
        sb.stop()
        stuck.close()
