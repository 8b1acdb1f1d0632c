"""SCTP associations through the compiled program (bpf/include/pyloxi/sctp.h): conntrack states
from the first chunk of each packet, half-open until the association is up, ABORT and
SHUTDOWN-COMPLETE closing the flow, per-state aging; multihoming: the endpoint's INIT-ACK
addresses rewritten to the VIPs (CRC32c kept right), a secondary path reaching the same
endpoint by the association's tag."""

from __future__ import annotations

import dataclasses
import time

import pytest
from scapy.layers.inet import IP
from scapy.layers.l2 import Ether
from scapy.layers.sctp import (
    SCTP,
    SCTPChunkAbort,
    SCTPChunkCookieAck,
    SCTPChunkCookieEcho,
    SCTPChunkData,
    SCTPChunkHeartbeatAck,
    SCTPChunkHeartbeatReq,
    SCTPChunkInit,
    SCTPChunkInitAck,
    SCTPChunkParamHeartbeatInfo,
    SCTPChunkParamIPv4Addr,
    SCTPChunkParamStateCookie,
    SCTPChunkShutdown,
    SCTPChunkShutdownAck,
    SCTPChunkShutdownComplete,
)
from scapy.packet import Packet

from pyloxi.datapath.ebpf import layout as L
from pyloxi.engine.program import ServiceProgram
from pyloxi.model.lb import NatMode

from .conftest import (
    CLIENT,
    CLIENT2,
    CLIENT_MAC,
    EP_MAC,
    EPS,
    LB_MAC,
    TC_ACT_REDIRECT,
    TC_ACT_SHOT,
    VIP,
    Harness,
)
from .test_sctp import crc_ok

PROTO_SCTP = 132
PORT = 38412
CPORT = 40000
VIP2, VIP3 = "20.0.0.101", "20.0.0.102"
CTAG, ETAG = 0x11112222, 0x33334444  # client's and endpoint's initiate tags
SEC = 1_000_000_000


def service(h: Harness, *, eps: list[str] | None = None, secondary: tuple[str, ...] = (),
            mode: NatMode = NatMode.DEFAULT) -> ServiceProgram:
    prog = h.service(proto=PROTO_SCTP, port=PORT, target=PORT, eps=eps, mode=mode)
    if secondary:
        prog = dataclasses.replace(prog, secondary_vips=secondary)
        h.dp.install_service(prog)
    return prog


def from_client(chunk: Packet, tag: int = ETAG, src: str = CLIENT, dst: str = VIP) -> Ether:
    return Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=src, dst=dst, ttl=64) / SCTP(
        sport=CPORT, dport=PORT, tag=tag) / chunk


def from_ep(to_ep: Ether, chunk: Packet, tag: int = CTAG) -> Ether:
    """The endpoint's packet back on the path `to_ep` (a packet the LB sent it) came by."""
    ip, sh = to_ep[IP], to_ep[SCTP]
    return Ether(src=EP_MAC, dst=LB_MAC) / IP(src=ip.dst, dst=ip.src, ttl=64) / SCTP(
        sport=sh.dport, dport=sh.sport, tag=tag) / chunk


def init() -> Ether:
    return from_client(SCTPChunkInit(init_tag=CTAG, a_rwnd=65535, n_out_streams=2,
                                     n_in_streams=2, init_tsn=1), tag=0)


def init_ack(to_ep: Ether, addrs: tuple[str, ...] = ()) -> Ether:
    params = [SCTPChunkParamStateCookie(cookie=b"c" * 37)]  # padded: the walk must skip it
    params += [SCTPChunkParamIPv4Addr(addr=a) for a in addrs]
    return from_ep(to_ep, SCTPChunkInitAck(init_tag=ETAG, a_rwnd=65535, n_out_streams=2,
                                           n_in_streams=2, init_tsn=7, params=params))


def send(h: Harness, pkt: Ether) -> Ether:
    assert crc_ok(pkt)
    out = h.run(pkt)
    assert out.retval == TC_ACT_REDIRECT, out.retval
    assert crc_ok(out.pkt), "CRC32c not valid after the rewrite"
    return out.pkt


def handshake(h: Harness, addrs: tuple[str, ...] = ()) -> tuple[Ether, Ether]:
    """INIT, INIT-ACK, COOKIE-ECHO, COOKIE-ACK on the primary path. Returns the INIT as the
    endpoint got it and the INIT-ACK as the client got it."""
    to_ep = send(h, init())
    ack = send(h, init_ack(to_ep, addrs))
    send(h, from_client(SCTPChunkCookieEcho(cookie=b"c" * 37)))
    send(h, from_ep(to_ep, SCTPChunkCookieAck()))
    return to_ep, ack


def state(h: Harness) -> list[str]:
    return sorted(f.state for f in h.dp.flows())


def tables(h: Harness) -> tuple[int, int]:
    """(entries in ct_map, entries in ct_half)"""
    return sum(1 for _ in h.dp.maps["ct_map"]), sum(1 for _ in h.dp.maps["ct_half"])


def test_handshake_states_and_promotion(h: Harness) -> None:
    service(h)
    to_ep = send(h, init())
    assert state(h) == ["init"] and tables(h) == (0, 2)
    send(h, init_ack(to_ep))
    # a reply alone does not establish an SCTP flow (INIT floods stay in the LRU table)
    assert state(h) == ["init-ack"] and tables(h) == (0, 2)
    send(h, from_client(SCTPChunkCookieEcho(cookie=b"c" * 37)))
    assert state(h) == ["cookie-echo"] and tables(h) == (0, 2)
    send(h, from_ep(to_ep, SCTPChunkCookieAck()))
    assert state(h) == ["est"] and tables(h) == (2, 0)
    send(h, from_client(SCTPChunkData(tsn=1, data=b"x" * 100)))
    assert state(h) == ["est"]
    send(h, from_client(SCTPChunkShutdown()))
    assert state(h) == ["shut"]
    send(h, from_ep(to_ep, SCTPChunkShutdownAck()))
    assert state(h) == ["shut-ack"]
    send(h, from_client(SCTPChunkShutdownComplete()))
    assert state(h) == ["shut-complete"]


def test_data_both_ways_establishes_without_handshake(h: Harness) -> None:
    """A flow whose handshake the LB did not see (conntrack lost) is up once both sides send
    DATA/SACK/HEARTBEAT chunks."""
    service(h)
    to_ep = send(h, from_client(SCTPChunkData(tsn=1, data=b"x" * 10)))
    assert tables(h) == (0, 2)
    send(h, from_ep(to_ep, SCTPChunkData(tsn=7, data=b"y" * 10)))
    assert state(h) == ["est"] and tables(h) == (2, 0)


def test_init_after_shutdown_complete_is_a_new_association(h: Harness) -> None:
    service(h, eps=EPS[:2])
    first, _ = handshake(h)
    send(h, from_client(SCTPChunkShutdown()))
    send(h, from_ep(first, SCTPChunkShutdownAck()))
    send(h, from_client(SCTPChunkShutdownComplete()))
    reuse = h.dp.datapath_stats()["syn_reuse"]
    again = send(h, init())  # same client address and port
    assert h.dp.datapath_stats()["syn_reuse"] == reuse + 1
    assert again[IP].dst != first[IP].dst  # round robin: a new pick, not the closed flow
    assert state(h) == ["init"]


def test_init_within_a_live_association_keeps_its_endpoint(h: Harness) -> None:
    """An INIT on a live association's tuple is the client restarting: same endpoint."""
    service(h, eps=EPS[:2])
    first, _ = handshake(h)
    again = send(h, init())
    assert again[IP].dst == first[IP].dst
    assert h.dp.datapath_stats()["syn_reuse"] == 0


def test_abort_closes_and_ages_in_10s(h: Harness) -> None:
    service(h)
    to_ep, _ = handshake(h)
    now = time.monotonic_ns()
    # established: the rule's idle timeout (240 s)
    assert h.dp.age_flows(now + 30 * SEC) == 0 and state(h) == ["est"]
    send(h, from_ep(to_ep, SCTPChunkAbort(), tag=CTAG))
    assert state(h) == ["abort"]
    assert h.dp.age_flows(now + 5 * SEC) == 0
    assert h.dp.age_flows(time.monotonic_ns() + 11 * SEC) == 1
    assert tables(h) == (0, 0)
    # the tuple is free: a new INIT opens a new flow
    send(h, init())
    assert state(h) == ["init"]


def test_unanswered_init_ages_in_10s(h: Harness) -> None:
    service(h)
    send(h, init())
    now = time.monotonic_ns()
    assert h.dp.age_flows(now + 5 * SEC) == 0
    assert h.dp.age_flows(now + 11 * SEC) == 1


# --- multihoming ---


def addr_params(pkt: Ether) -> list[str]:
    return [p.addr for p in pkt[SCTPChunkInitAck].params if isinstance(p, SCTPChunkParamIPv4Addr)]


@pytest.mark.parametrize("ep_addrs, expect", [
    ((EPS[0], "10.0.12.2"), [VIP, VIP2]),
    (("10.0.12.2",), [VIP]),
    ((EPS[0], "10.0.12.2", "10.0.12.3", "10.0.12.4"), [VIP, VIP2, VIP3, VIP]),
])
def test_init_ack_addresses_become_the_vips(h: Harness, ep_addrs: tuple[str, ...],
                                            expect: list[str]) -> None:
    service(h, secondary=(VIP2, VIP3))
    to_ep = send(h, init())
    back = send(h, init_ack(to_ep, ep_addrs))  # send() checks the CRC32c
    assert back[IP].src == VIP and addr_params(back) == expect
    cookie = back[SCTPChunkInitAck].params[0]
    assert isinstance(cookie, SCTPChunkParamStateCookie) and cookie.cookie == b"c" * 37


def test_init_ack_addresses_without_secondary_ips(h: Harness) -> None:
    """A multihomed endpoint behind a plain SCTP rule: its addresses never reach the client."""
    service(h)
    to_ep = send(h, init())
    assert addr_params(send(h, init_ack(to_ep, ("10.0.12.2", "10.0.12.3")))) == [VIP, VIP]


def test_heartbeat_on_secondary_path_reaches_the_same_endpoint(h: Harness) -> None:
    service(h, eps=EPS[:3], secondary=(VIP2,))
    first, _ = handshake(h, (EPS[0], "10.0.12.2"))
    hb = SCTPChunkHeartbeatReq(params=[SCTPChunkParamHeartbeatInfo(data=b"h" * 12)])
    # round robin would pick the next endpoint; the association's tag picks its own
    for _ in range(3):
        to_ep = send(h, from_client(hb, src=CLIENT2, dst=VIP2))
        assert (to_ep[IP].src, to_ep[IP].dst) == (CLIENT2, first[IP].dst)
        assert (to_ep[SCTP].sport, to_ep[SCTP].dport, to_ep[SCTP].tag) == (CPORT, PORT, ETAG)
    back = send(h, from_ep(to_ep, SCTPChunkHeartbeatAck(
        params=[SCTPChunkParamHeartbeatInfo(data=b"h" * 12)])))
    assert (back[IP].src, back[IP].dst) == (VIP2, CLIENT2)
    # the secondary path is a flow of its own, established by the HEARTBEAT exchange
    flows = sorted((f.dst, f.ep_ip, f.state) for f in h.dp.flows())
    assert flows == [(VIP, first[IP].dst, "est"), (VIP2, first[IP].dst, "est")]
    # DATA keeps flowing on the secondary path after the primary flow is gone
    for f in h.dp.flows():
        if f.dst == VIP:
            h.dp.reset_endpoint_flows(f.ep_ip, f.ep_port)
    out = send(h, from_client(SCTPChunkData(tsn=2, data=b"z" * 500), src=CLIENT2, dst=VIP2))
    assert out[IP].dst == first[IP].dst


def test_unknown_tag_on_secondary_vip_is_balanced(h: Harness) -> None:
    """The secondary VIP is the same service: packets of no known association are balanced."""
    service(h, eps=EPS[:3], secondary=(VIP2,))
    handshake(h)
    dsts = {send(h, from_client(SCTPChunkData(tsn=1, data=b"q"), tag=0x5555 + i,
                                src=CLIENT2, dst=VIP2))[IP].dst
            for i in range(3)}
    # each packet has a new tag but the same tuple: one flow, one pick
    assert len(dsts) == 1


def test_secondary_vip_keys_follow_the_service(h: Harness) -> None:
    prog = service(h, secondary=(VIP2, VIP3))
    assert sum(1 for _ in h.dp.maps["svc_map"]) == 3
    assert sum(1 for _ in h.dp.maps["mh_map"]) == 1
    handshake(h)
    assert sum(1 for _ in h.dp.maps["assoc_map"]) == 1
    assert sum(1 for _ in h.dp.maps["rassoc_map"]) == 1
    h.dp.remove_service(prog)
    assert sum(1 for _ in h.dp.maps["svc_map"]) == 0
    assert sum(1 for _ in h.dp.maps["mh_map"]) == 0
    assert sum(1 for _ in h.dp.maps["assoc_map"]) == 0
    assert sum(1 for _ in h.dp.maps["rassoc_map"]) == 0
    assert h.run(from_client(SCTPChunkData(tsn=1, data=b"q"), dst=VIP2)).retval != \
        TC_ACT_REDIRECT


def test_secondary_vip_from_the_same_client_address_joins_the_flow(h: Harness) -> None:
    """The client reaches the secondary VIP from its primary address (usrsctp sends everything
    from one address): the endpoint-side tuple is the flow's own, so the path joins that flow,
    and the endpoint's answers go back from the VIP the client last sent to."""
    prog = service(h, eps=EPS[:3], secondary=(VIP2,))
    first, _ = handshake(h)

    def active() -> list[int]:  # least-connection counts: one association, however many paths
        return [e.active_flows for e in h.dp.service_counters(prog).endpoints]

    def opened_closed() -> tuple[int, int]:  # conn_map, unclamped
        dp = h.dp._dp_of[prog.svc_id]
        cs = [L.EpConn.from_buffer_copy(h.dp.maps["conn_map"].lookup(
            h.dp.endpoint_gid(dp, i).to_bytes(4, "little")) or bytes(16)) for i in range(3)]
        return sum(c.opened for c in cs), sum(c.closed for c in cs)

    assert sum(active()) == 1
    hb = SCTPChunkHeartbeatReq(params=[SCTPChunkParamHeartbeatInfo(data=b"h" * 12)])
    to_ep = send(h, from_client(hb, dst=VIP2))
    assert (to_ep[IP].src, to_ep[IP].dst) == (CLIENT, first[IP].dst)
    assert tables(h) == (3, 0)  # one more original entry, the reply entry shared
    assert send(h, from_ep(to_ep, SCTPChunkHeartbeatAck()))[IP].src == VIP2
    send(h, from_client(SCTPChunkData(tsn=2, data=b"a"), dst=VIP))
    assert send(h, from_ep(to_ep, SCTPChunkData(tsn=8, data=b"b")))[IP].src == VIP
    send(h, from_client(SCTPChunkData(tsn=3, data=b"c"), dst=VIP2))
    assert send(h, from_ep(to_ep, SCTPChunkData(tsn=9, data=b"d")))[IP].src == VIP2
    assert sorted((f.dst, f.ep_ip, f.state) for f in h.dp.flows()) == [
        (VIP, first[IP].dst, "est"), (VIP2, first[IP].dst, "est")]
    # both paths age with the association
    assert h.dp.age_flows(time.monotonic_ns() + 30 * SEC) == 0
    assert sum(active()) == 1
    assert h.dp.age_flows(time.monotonic_ns() + 241 * SEC) == 2
    assert tables(h) == (0, 0)
    assert active() == [0, 0, 0] and opened_closed() == (1, 1)


def test_fullnat_secondary_path_keeps_the_nat_port(h: Harness) -> None:
    """fullnat: the endpoint must see the association's NAT source port on every path; it sees
    one path (the LB's), and its answers follow the client's latest path."""
    service(h, eps=EPS[:3], secondary=(VIP2,), mode=NatMode.FULLNAT)
    to_ep = send(h, init())
    send(h, init_ack(to_ep))
    send(h, from_client(SCTPChunkCookieEcho(cookie=b"c" * 37)))
    send(h, from_ep(to_ep, SCTPChunkCookieAck()))
    hb = SCTPChunkHeartbeatReq(params=[SCTPChunkParamHeartbeatInfo(data=b"h" * 12)])
    path2 = send(h, from_client(hb, src=CLIENT2, dst=VIP2))
    assert (path2[IP].src, path2[IP].dst, path2[SCTP].sport) == (
        to_ep[IP].src, to_ep[IP].dst, to_ep[SCTP].sport)
    back = send(h, from_ep(path2, SCTPChunkHeartbeatAck()))
    assert (back[IP].src, back[IP].dst, back[SCTP].dport) == (VIP2, CLIENT2, CPORT)
    send(h, from_client(SCTPChunkData(tsn=2, data=b"a")))  # the primary path again
    back = send(h, from_ep(path2, SCTPChunkData(tsn=8, data=b"b")))
    assert (back[IP].src, back[IP].dst) == (VIP, CLIENT)


@pytest.mark.parametrize("mode, src", [(NatMode.FULLNAT, VIP), (NatMode.DEFAULT, CLIENT)])
def test_init_client_addresses_under_fullnat_become_the_lb(h: Harness, mode: NatMode,
                                                          src: str) -> None:
    """fullnat: the endpoint must not learn the client's addresses (it would send to them
    directly); default mode passes them through (its replies come back through the LB)."""
    service(h, mode=mode)
    sent = from_client(SCTPChunkInit(init_tag=CTAG, a_rwnd=65535, n_out_streams=2,
                                     n_in_streams=2, init_tsn=1,
                                     params=[SCTPChunkParamIPv4Addr(addr=CLIENT),
                                             SCTPChunkParamIPv4Addr(addr=CLIENT2)]), tag=0)
    for _ in range(2):  # the INIT and its retransmission (an existing half-open flow)
        out = send(h, sent)
        assert out[IP].src == src
        assert [p.addr for p in out[SCTPChunkInit].params] == (
            [VIP, VIP] if mode == NatMode.FULLNAT else [CLIENT, CLIENT2])


def test_restart_keeps_and_prune_removes_the_secondary_vips(h: Harness) -> None:
    """A restarted daemon (a new backend on the same pins) adopts the service with its
    secondary keys and the association's flows; a service nobody re-installs is removed with
    its secondary keys and mh_map entry."""
    from pyloxi.datapath.ebpf.backend import EbpfDatapath

    from .conftest import OBJ

    prog = service(h, eps=EPS[:3], secondary=(VIP2, VIP3))
    gone = dataclasses.replace(h.service(proto=PROTO_SCTP, port=PORT + 1, target=PORT),
                               secondary_vips=(VIP3,))
    h.dp.install_service(gone)
    first, _ = handshake(h)
    old = h.dp
    old.close()
    h.dp = EbpfDatapath(old.pin_dir, obj_path=OBJ)
    try:
        h.dp.install_service(prog)
        assert h.dp.prune_orphans() == 1
        assert sum(1 for _ in h.dp.maps["svc_map"]) == 3
        assert sum(1 for _ in h.dp.maps["mh_map"]) == 1
        hb = SCTPChunkHeartbeatReq(params=[SCTPChunkParamHeartbeatInfo(data=b"h" * 12)])
        assert send(h, from_client(hb, src=CLIENT2, dst=VIP3))[IP].dst == first[IP].dst
    finally:
        h.dp.close()  # the fixture unpins everything


def test_endpoint_heartbeat_to_an_unused_client_address_opens_the_path(h: Harness) -> None:
    """Default mode: the endpoint heartbeats every address of the client's INIT, before the
    client used that path; the LB opens the path from the endpoint's side (the association's
    service, endpoint and VIP), instead of dropping it as the reply of a lost flow."""
    service(h, eps=EPS[:3], secondary=(VIP2,))
    to_ep = send(h, from_client(SCTPChunkInit(
        init_tag=CTAG, a_rwnd=65535, n_out_streams=2, n_in_streams=2, init_tsn=1,
        params=[SCTPChunkParamIPv4Addr(addr=CLIENT), SCTPChunkParamIPv4Addr(addr=CLIENT2)]),
        tag=0))
    send(h, init_ack(to_ep))
    send(h, from_client(SCTPChunkCookieEcho(cookie=b"c" * 37)))
    send(h, from_ep(to_ep, SCTPChunkCookieAck()))
    hb = SCTPChunkHeartbeatReq(params=[SCTPChunkParamHeartbeatInfo(data=b"h" * 12)])
    path2 = Ether(src=EP_MAC, dst=LB_MAC) / IP(src=to_ep[IP].dst, dst=CLIENT2, ttl=64) / SCTP(
        sport=PORT, dport=CPORT, tag=CTAG) / hb
    # a packet of no known association from the endpoint: still the reply of a lost flow
    stray = path2.copy()
    stray[SCTP].tag = 0x7777
    del stray[SCTP].chksum
    assert h.run(Ether(bytes(stray))).retval == TC_ACT_SHOT
    out = send(h, path2)
    assert (out[IP].src, out[IP].dst, out[SCTP].sport, out[SCTP].dport) == (
        VIP, CLIENT2, PORT, CPORT)
    back = send(h, from_client(SCTPChunkHeartbeatAck(), src=CLIENT2))
    assert (back[IP].src, back[IP].dst) == (CLIENT2, to_ep[IP].dst)
    assert sorted((f.src, f.ep_ip, f.state) for f in h.dp.flows()) == [
        (CLIENT, to_ep[IP].dst, "est"), (CLIENT2, to_ep[IP].dst, "est")]


def test_endpoint_packet_to_a_client_address_under_fullnat_is_dropped(h: Harness) -> None:
    """fullnat: the endpoint never learnt the client's addresses; a packet to one is not ours."""
    service(h, mode=NatMode.FULLNAT)
    to_ep, _ = handshake(h)
    path2 = Ether(src=EP_MAC, dst=LB_MAC) / IP(src=to_ep[IP].dst, dst=CLIENT2, ttl=64) / SCTP(
        sport=PORT, dport=CPORT, tag=CTAG) / SCTPChunkHeartbeatReq()
    assert h.run(path2).retval == TC_ACT_SHOT
