"""QoS policers in the kernel (bpf/include/pyloxi/policer.h): token buckets drain, red packets
are dropped and counted, buckets refill over time; interface, LB-rule, endpoint and client
attachments.

Counts, not times: a burst sent with `repeat` (one syscall, microseconds) drains a bucket with
at most one clock tick of refill; a refill is checked after sleeping far longer than the bucket
takes to fill (it can never hold more than full)."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from dataclasses import replace

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from pyloxi.datapath.ebpf.backend import EbpfDatapath
from pyloxi.datapath.ebpf.libbpf.testrun import prog_test_run
from pyloxi.engine.policer import BYTES_PER_MBIT, PolicerProgram
from pyloxi.engine.program import NatMode
from pyloxi.testing.lab.dpns import LB_MAC

from .conftest import (
    CLIENT,
    CLIENT2,
    CLIENT_MAC,
    EP_MAC,
    EPS,
    OBJ,
    TC_ACT_OK,
    TC_ACT_REDIRECT,
    TC_ACT_SHOT,
    VIP,
    Harness,
    handshake,
)

FRAME = 1514  # bytes per test frame: 1500 IP bytes (what a policer counts)
IPB = FRAME - 14
RATE = 8 * BYTES_PER_MBIT  # 8 Mbit/s, loxilb's minimum: 1,000,000 bytes per second
CBS = 15_000  # 10 frames; EBS = 2 x CBS
# one clock tick of refill (coarse clock; HZ >= 100) at RATE, in frames
TICK_FRAMES = 7


def pol(pid: int = 1, *, srtcm: bool = False, port: str = "", rule: str = "",
        cbs: int = CBS, rate: int = RATE) -> PolicerProgram:
    return PolicerProgram(id=pid, srtcm=srtcm, cir=rate, pir=rate, cbs=cbs, ebs=2 * cbs,
                          port=port, rule=rule)


def pad_to(pkt: Ether, size: int) -> bytes:
    """`pkt` with a payload that makes the frame `size` bytes (the IP length covers it)."""
    return bytes(pkt / Raw(bytes(size - len(pkt))))


def udp_frame() -> bytes:
    """A UDP packet to no service: passed to the kernel unchanged (so `repeat` runs it again
    and again as it is)."""
    return pad_to(Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=CLIENT, dst="10.0.1.1") /
                  UDP(sport=5000, dport=9), FRAME)


def burst(h: Harness, data: bytes, n: int, iface: str = "dp0") -> int:
    """Run `data` n times in one syscall; the last run's verdict."""
    ifindex = socket.if_nametoindex(iface)
    ctx = struct.pack("<36xII", ifindex, ifindex).ljust(192, b"\0")
    return prog_test_run(h.dp.prog_fd, data, ctx=ctx, repeat=n, data_size_out=4096).retval


def counts(h: Harness, pid: int = 1) -> tuple[int, int]:
    okp, _okb, drp, _drb = h.dp.policer_counters()[pid]
    return okp, drp


def attach_dp0(h: Harness) -> None:
    h.dp.attached.append(socket.if_nametoindex("dp0"))  # as if `attach` had run (not needed
    # for BPF_PROG_TEST_RUN, which runs the program with the ifindex in its context)


@pytest.mark.parametrize(("srtcm", "burst_frames"), [(False, 20), (True, 30)])
def test_port_bucket_drains_drops_red_and_refills(h: Harness, srtcm: bool,
                                                  burst_frames: int) -> None:
    """trTCM passes its peak bucket (2 x CBS), srTCM both buckets (CBS + EBS = 3 x CBS)."""
    attach_dp0(h)
    h.dp.set_policer(pol(srtcm=srtcm, port="dp0"))
    data = udp_frame()
    assert burst(h, data, 200) == TC_ACT_SHOT  # the last one of the burst is red
    ok, dropped = counts(h)
    assert burst_frames <= ok <= burst_frames + TICK_FRAMES
    assert ok + dropped == 200
    assert h.dp.datapath_stats()["policer_drop"] == dropped
    assert h.dp.policer_counters()[1] == (ok, ok * IPB, dropped, dropped * IPB)
    # refill: 0.3 s earns 300,000 bytes, far more than the buckets hold
    time.sleep(0.3)
    assert burst(h, data, 200) == TC_ACT_SHOT
    ok2, dropped2 = counts(h)
    assert burst_frames <= ok2 - ok <= burst_frames + TICK_FRAMES
    assert ok2 + dropped2 == 400
    # other interfaces are not policed
    assert burst(h, data, 50, iface="dp1") == TC_ACT_OK
    assert counts(h) == (ok2, dropped2)


def test_port_policer_removed_and_replaced(h: Harness) -> None:
    attach_dp0(h)
    h.dp.set_policer(pol(port="dp0"))
    data = udp_frame()
    assert burst(h, data, 100) == TC_ACT_SHOT
    # replaced with a bigger bucket: refilled at once, the new size counts
    h.dp.set_policer(pol(port="dp0", cbs=30_000))
    before = counts(h)[0]
    burst(h, data, 200)
    assert 40 <= counts(h)[0] - before <= 40 + TICK_FRAMES
    drops = h.dp.datapath_stats()["policer_drop"]
    h.dp.remove_policer(1)
    assert burst(h, data, 100) == TC_ACT_OK  # nothing polices dp0 any more
    assert h.dp.datapath_stats()["policer_drop"] == drops


def test_port_not_attached_is_refused(h: Harness) -> None:
    with pytest.raises(ValueError, match="not one the datapath is attached to"):
        h.dp.set_policer(pol(port="dp1"))
    with pytest.raises(ValueError, match="no interface"):
        h.dp.set_policer(pol(port="nosuch0"))
    assert h.dp.policer_counters() == {}


def data_frame(sport: int, seq: int) -> bytes:
    return pad_to(Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=CLIENT, dst=VIP, ttl=64) /
                  TCP(sport=sport, dport=80, flags="A", seq=seq, ack=5001, window=65535), FRAME)


def reply_frame(to_ep: Ether) -> bytes:
    ip, tcp = to_ep[IP], to_ep[TCP]
    return pad_to(Ether(src=EP_MAC, dst=LB_MAC) / IP(src=ip.dst, dst=ip.src, ttl=64) /
                  TCP(sport=tcp.dport, dport=tcp.sport, flags="A", seq=5001, ack=1001,
                      window=65535), FRAME)


def run_each(h: Harness, frames: list[bytes], iface: str) -> list[int]:
    ifindex = socket.if_nametoindex(iface)
    ctx = struct.pack("<36xII", ifindex, ifindex).ljust(192, b"\0")
    return [prog_test_run(h.dp.prog_fd, f, ctx=ctx, data_size_out=4096).retval for f in frames]


def test_rule_policer_both_directions_other_rule_untouched(h: Harness) -> None:
    """Each packet a fresh run (a flow's packet is rewritten, so `repeat` cannot be used): the
    bucket (2 frames) drains within a burst far faster than it refills (1 frame per 1.5 ms)."""
    policed = h.service()  # named t1
    h.service(port=81)  # t2
    to_ep, _ = handshake(h, sport=41000)
    h.dp.set_policer(pol(rule=policed.name, cbs=1518))
    verdicts = run_each(h, [data_frame(41000, 1001 + i) for i in range(40)], "dp0")
    assert verdicts[:2] == [TC_ACT_REDIRECT] * 2
    assert TC_ACT_SHOT in verdicts
    # the replies of the flow share the bucket: drained, they are dropped too
    replies = run_each(h, [reply_frame(to_ep)] * 20, "dp1")
    assert TC_ACT_SHOT in replies
    ok, dropped = counts(h)
    assert ok == verdicts.count(TC_ACT_REDIRECT) + replies.count(TC_ACT_REDIRECT)
    assert dropped == verdicts.count(TC_ACT_SHOT) + replies.count(TC_ACT_SHOT)
    # the other rule's flow: never policed
    handshake(h, sport=42000, dport=81)
    other = [pad_to(Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=CLIENT, dst=VIP, ttl=64) /
                    TCP(sport=42000, dport=81, flags="A", seq=1001 + i, ack=5001), FRAME)
             for i in range(40)]
    assert run_each(h, other, "dp0") == [TC_ACT_REDIRECT] * 40
    assert counts(h) == (ok, dropped)


def test_rule_policer_follows_the_rule_name_across_delete_and_recreate(h: Harness) -> None:
    prog = h.service()
    h.dp.set_policer(pol(rule=prog.name, cbs=1518))
    h.dp.remove_service(prog)
    h.service(port=81)  # takes the first free service ids
    # a new rule with the name (another service id): policed again
    h.dp.install_service(replace(prog, svc_id=99))
    handshake(h, sport=43000)
    verdicts = run_each(h, [data_frame(43000, 1001 + i) for i in range(40)], "dp0")
    assert TC_ACT_SHOT in verdicts
    ok, dropped = counts(h)
    assert dropped == verdicts.count(TC_ACT_SHOT)
    # the policer gone: the rule's packets pass
    h.dp.remove_policer(1)
    assert run_each(h, [data_frame(43000, 5000 + i) for i in range(40)], "dp0") == \
        [TC_ACT_REDIRECT] * 40


def test_two_cpus_share_one_bucket(h: Harness) -> None:
    """Bursts from two threads pinned to different CPUs at once: together they get the bucket
    once (plus what the elapsed time refilled), not once each."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs")
    attach_dp0(h)
    # 20,000 frames in the peak bucket: both CPUs take tokens for the whole burst (a lost
    # update without the lock shows as more frames passed than the bucket held)
    h.dp.set_policer(pol(port="dp0", cbs=15_000_000))
    data = udp_frame()

    def run(cpu: int) -> None:
        os.sched_setaffinity(0, {cpu})  # this thread only
        burst(h, data, 15_000)

    threads = [threading.Thread(target=run, args=(c,)) for c in cpus[:2]]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    ok, dropped = counts(h)
    assert ok + dropped == 30_000
    refill = int(elapsed * RATE / IPB) + TICK_FRAMES
    assert 20_000 <= ok <= 20_000 + refill, (ok, refill)


def test_a_new_daemon_starts_without_the_old_ones_policers(h: Harness) -> None:
    """The maps are pinned: a datapath opened again (a restarted daemon) must not keep
    policing for policers nobody installs again (the saved ones come back from policy.json)."""
    attach_dp0(h)
    prog = h.service()
    h.dp.set_policer(pol(port="dp0"))
    h.dp.set_policer(pol(2, rule=prog.name, cbs=1518))
    data = udp_frame()
    assert burst(h, data, 100) == TC_ACT_SHOT
    again = EbpfDatapath(h.dp.pin_dir, obj_path=OBJ)
    try:
        h2 = Harness(again)
        assert burst(h2, data, 100) == TC_ACT_OK  # the interface policer is gone
        again.install_service(prog)  # the rule, installed again: no policer named it
        handshake(h2, sport=44000)
        assert run_each(h2, [data_frame(44000, 1001 + i) for i in range(40)], "dp0") == \
            [TC_ACT_REDIRECT] * 40
    finally:
        again.close()


def tcp_frame(sport: int, seq: int, *, src: str = CLIENT, dport: int = 80) -> bytes:
    return pad_to(Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=src, dst=VIP, ttl=64) /
                  TCP(sport=sport, dport=dport, flags="A", seq=seq, ack=5001,
                      window=65535), FRAME)


def test_endpoint_policer_polices_only_that_endpoints_flows(h: Harness) -> None:
    """Attachment 3 (pyloxi extension): the flows of one endpoint, both directions, whatever
    rule sent them there, on one bucket; the service's other endpoints are untouched."""
    h.service(eps=EPS)  # rr over three endpoints
    to_ep = {}
    for sport in (45000, 45001, 45002):
        sent, _ = handshake(h, sport=sport)
        to_ep[sport] = sent
    assert {p[IP].dst for p in to_ep.values()} == set(EPS)
    policed = next(s for s, p in to_ep.items() if p[IP].dst == EPS[0])
    h.dp.set_policer(replace(pol(cbs=1518), ep_ip=EPS[0], ep_port=8080))
    verdicts = run_each(h, [tcp_frame(policed, 1001 + i) for i in range(40)], "dp0")
    assert verdicts[:2] == [TC_ACT_REDIRECT] * 2
    assert TC_ACT_SHOT in verdicts
    replies = run_each(h, [reply_frame(to_ep[policed])] * 20, "dp1")
    assert TC_ACT_SHOT in replies
    ok, dropped = counts(h)
    assert ok == verdicts.count(TC_ACT_REDIRECT) + replies.count(TC_ACT_REDIRECT)
    assert dropped == verdicts.count(TC_ACT_SHOT) + replies.count(TC_ACT_SHOT)
    for sport in to_ep:
        if sport != policed:  # the other endpoints' flows: never policed
            assert run_each(h, [tcp_frame(sport, 1001 + i) for i in range(40)], "dp0") == \
                [TC_ACT_REDIRECT] * 40
    assert counts(h) == (ok, dropped)
    # another rule created later with the endpoint: its flows share the endpoint's bucket
    h.service(port=81, eps=[EPS[0]])
    handshake(h, sport=45100, dport=81)
    other = run_each(h, [tcp_frame(45100, 1001 + i, dport=81) for i in range(40)], "dp0")
    assert TC_ACT_SHOT in other
    assert counts(h)[1] > dropped
    # another port of the address is another endpoint: not policed
    h.service(port=82, eps=[EPS[0]], target=9090)
    handshake(h, sport=45200, dport=82)
    assert run_each(h, [tcp_frame(45200, 1001 + i, dport=82) for i in range(40)], "dp0") == \
        [TC_ACT_REDIRECT] * 40
    # the policer gone: the endpoint's flows pass
    h.dp.remove_policer(1)
    assert run_each(h, [tcp_frame(policed, 5000 + i) for i in range(40)], "dp0") == \
        [TC_ACT_REDIRECT] * 40


def test_endpoint_policer_of_any_port(h: Harness) -> None:
    h.service(eps=[EPS[0]], target=9090)
    h.dp.set_policer(replace(pol(cbs=1518), ep_ip=EPS[0]))  # "IP": any port
    handshake(h, sport=45300)
    assert TC_ACT_SHOT in run_each(h, [tcp_frame(45300, 1001 + i) for i in range(40)], "dp0")


@pytest.mark.parametrize("mode", [NatMode.DEFAULT, NatMode.FULLNAT])
def test_client_policer_polices_only_that_clients_flows(h: Harness, mode: NatMode) -> None:
    """Attachment 4 (pyloxi extension): one client's flows, both directions (its replies are
    recognised whatever address they come back to: fullnat's go to the VIP)."""
    h.service(mode=mode)
    to_ep, _ = handshake(h, sport=46000)
    handshake(h, src=CLIENT2, sport=46001)
    h.dp.set_policer(replace(pol(cbs=1518), client=CLIENT))
    verdicts = run_each(h, [tcp_frame(46000, 1001 + i) for i in range(40)], "dp0")
    assert verdicts[:2] == [TC_ACT_REDIRECT] * 2
    assert TC_ACT_SHOT in verdicts
    replies = run_each(h, [reply_frame(to_ep)] * 20, "dp1")
    assert TC_ACT_SHOT in replies
    ok, dropped = counts(h)
    assert dropped == verdicts.count(TC_ACT_SHOT) + replies.count(TC_ACT_SHOT)
    # the other client: never policed
    assert run_each(h, [tcp_frame(46001, 1001 + i, src=CLIENT2) for i in range(40)],
                    "dp0") == [TC_ACT_REDIRECT] * 40
    assert counts(h) == (ok, dropped)
    # moved to the other client: the first one passes again
    h.dp.set_policer(replace(pol(cbs=1518), client=CLIENT2))
    assert run_each(h, [tcp_frame(46000, 5000 + i) for i in range(40)], "dp0") == \
        [TC_ACT_REDIRECT] * 40
    assert TC_ACT_SHOT in run_each(h, [tcp_frame(46001, 5000 + i, src=CLIENT2)
                                       for i in range(40)], "dp0")


def test_rule_and_client_policers_both_apply(h: Harness) -> None:
    """A packet meets every policer that covers it: each takes its tokens, red in any drops."""
    prog = h.service()
    handshake(h, sport=47000)
    h.dp.set_policer(pol(1, rule=prog.name, cbs=1518))
    h.dp.set_policer(replace(pol(2, cbs=150_000), client=CLIENT))  # never red here
    verdicts = run_each(h, [tcp_frame(47000, 1001 + i) for i in range(40)], "dp0")
    assert TC_ACT_SHOT in verdicts
    passed = verdicts.count(TC_ACT_REDIRECT)
    assert counts(h, 1) == (passed, verdicts.count(TC_ACT_SHOT))
    assert counts(h, 2) == (40, 0)  # the client's bucket saw every packet


def test_a_new_daemon_starts_without_the_old_endpoint_and_client_policers(h: Harness) -> None:
    prog = h.service()
    h.dp.set_policer(replace(pol(cbs=1518), ep_ip=EPS[0]))
    h.dp.set_policer(replace(pol(2, cbs=1518), client=CLIENT))
    assert len(list(h.dp.maps["pol_ep"].keys())) == 1
    assert len(list(h.dp.maps["pol_client"].keys())) == 1
    again = EbpfDatapath(h.dp.pin_dir, obj_path=OBJ)
    try:
        h2 = Harness(again)
        assert list(again.maps["pol_ep"].keys()) == []
        assert list(again.maps["pol_client"].keys()) == []
        again.install_service(prog)  # nothing targets its endpoint any more
        handshake(h2, sport=48000)
        assert run_each(h2, [tcp_frame(48000, 1001 + i) for i in range(40)], "dp0") == \
            [TC_ACT_REDIRECT] * 40
    finally:
        again.close()
