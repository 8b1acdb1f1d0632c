"""Datapath micro-benchmark and conntrack sweep; run as its own process (it enters a network
namespace of its own, like tests/datapath/conftest.py, so bpf_fib_lookup sees only our routes).

    python -m bench.micro --repeats 1000000 --new-flows 1000000 --ct-entries 1000000 --json OUT

Methods (see docs/benchmarks.md):
- established: BPF_PROG_TEST_RUN with `repeat` reruns the *same* skb, and the program's rewrite
  persists between repetitions, so an ordinary established packet turns into a non-VIP packet
  after the first run. The bench service therefore has its endpoint equal to its VIP:port
  (20.0.0.200:80 -> 20.0.0.200:80, routed out of dp1): the rewrite writes the same bytes back and
  every repetition is an identical conntrack hit -> rewrite -> fib lookup -> redirect. Checked:
  the last repetition still returns TC_ACT_REDIRECT and the datapath counted exactly one new flow.
- new flow: N distinct SYNs (source address x source port), each run once (repeat=1), so every run
  misses conntrack and creates a flow (2 entries). The kernel's duration for repeat=1 includes one
  timer read; the same repeat=1 loop over the empty program is reported beside it as that floor.
  Conntrack is emptied (untimed) every 100,000 flows, so the LRU never evicts.
- not for a VIP: a TCP packet to a backend address; the program passes it (TC_ACT_OK).
- floor: bench/empty.bpf.c (`return TC_ACT_OK`), same packet, same repeat count; xdp_empty:
  its XDP twin (`return XDP_PASS`).
- xdp_*: the same established packets through pyloxi_xdp (bpf/include/pyloxi/xdp.h), the flow
  made by the TC program as above. The loop's packet is addressed to the endpoint's MAC, which
  xdp_ports lists as dp0's own: XDP leaves that MAC in place (the next hop's), so every
  repetition is again "to this host". The next hop cached in the entry lives a second, and
  only TC refreshes it: one untimed TC run per XDP call keeps it fresh. xdp_pass: a packet XDP
  hands to TC (a conntrack miss), its cost added to every such packet.
- XDP loops run with pyloxi_xdp attached in native mode to a veth of the namespace that no
  packet crosses (hold_xdp_dispatcher): BPF_PROG_TEST_RUN with repeat > 1 otherwise puts the
  program into the kernel's XDP dispatcher for the call and takes it out afterwards (a text
  patch, RCU grace periods), and that slows the loops that follow (docs/benchmarks.md, "XDP
  path: new flows and whole connections"). A port in native mode runs its program through the
  dispatcher holding it, as here. `--no-hold` measures without.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import struct
import subprocess
import time

import numpy as np

from pyloxi.testing.ctfill import synthetic_flows, write_entries
from pyloxi.testing.lab.dpns import LB_MAC, datapath_netns

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OBJ = os.path.join(ROOT, "build", "lb.bpf.o")
EMPTY_SRC = os.path.join(ROOT, "bench", "empty.bpf.c")
EMPTY_OBJ = os.path.join(ROOT, "build", "bench-empty.bpf.o")

CLIENT, VIP, VIP_E, EP = "10.0.1.2", "20.0.0.100", "20.0.0.200", "10.0.11.2"
CLIENT_MAC, EP_MAC = "02:00:00:00:01:02", "02:00:00:00:11:02"
TC_ACT_OK, TC_ACT_REDIRECT = 0, 7
XDP_PASS, XDP_REDIRECT = 2, 4
# IPv6: the same shapes (identity service for the established loop, a chain of VIPs for new
# flows) and a NAT64 service (IPv6 VIP, the IPv4 endpoint EP)
CLIENT6, VIP6, VIP_E6, EP6 = "fd00:1::2", "fd00:20::100", "fd00:20::200", "fd00:11::2"
VIP64 = "fd00:20::64"


def build_empty() -> str:
    if not os.path.exists(EMPTY_OBJ) or os.path.getmtime(EMPTY_OBJ) < os.path.getmtime(EMPTY_SRC):
        os.makedirs(os.path.dirname(EMPTY_OBJ), exist_ok=True)
        subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-c", EMPTY_SRC, "-o", EMPTY_OBJ,
                        "-I", f"/usr/include/{os.uname().machine}-linux-gnu"], check=True)
    return EMPTY_OBJ


NETNS_SETUP = (
    f"ip neigh add {CLIENT} lladdr {CLIENT_MAC} dev dp0 nud permanent",
    f"ip neigh add {EP} lladdr {EP_MAC} dev dp1 nud permanent",
    f"ip route add {VIP_E}/32 via {EP} dev dp1",
    f"ip route add 20.1.0.0/16 via {EP} dev dp1",
    f"ip addr add {VIP}/32 dev lo",
    "sysctl -qw net.ipv6.conf.all.forwarding=1",
    "ip -6 addr add fd00:1::1/64 dev dp0 nodad",
    "ip -6 addr add fd00:11::1/64 dev dp1 nodad",
    f"ip -6 neigh add {CLIENT6} lladdr {CLIENT_MAC} dev dp0 nud permanent",
    f"ip -6 neigh add {EP6} lladdr {EP_MAC} dev dp1 nud permanent",
    f"ip -6 route add {VIP_E6}/128 via {EP6} dev dp1",
    f"ip -6 route add fd00:21::/64 via {EP6} dev dp1",
    "ip link add plhold0 up type veth peer name plhold1",
    "ip link set plhold1 up",
)
HOLD = True   # hold_xdp_dispatcher (--no-hold: off)


def hold_xdp_dispatcher(dp) -> None:  # type: ignore[no-untyped-def]
    """pyloxi_xdp in the kernel's XDP dispatcher for the rest of the namespace's life (see the
    module's text): attached in native mode to plhold0."""
    from pyloxi.datapath.ebpf.libbpf.xdp import xdp_attach
    if HOLD:
        xdp_attach(socket.if_nametoindex("plhold0"), dp.xdp_prog_fd, "native")


def tcp_packet(src: str, dst: str, sport: int, dport: int, flags: str, ttl: int = 64) -> bytes:
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether
    ip = IPv6(src=src, dst=dst, hlim=ttl) if ":" in dst else IP(src=src, dst=dst, ttl=ttl)
    return bytes(Ether(src=CLIENT_MAC, dst=LB_MAC) / ip /
                 TCP(sport=sport, dport=dport, flags=flags, seq=1000))


def establish(fd: int, ctx: bytes, client: str, vip: str, sport: int, vport: int, ep: str,
              eport: int) -> None:
    """Complete the handshake of a flow whose SYN was sent (seq 1000): the endpoint's SYN-ACK
    and the client's ACK of it move the flow into the established conntrack table."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether

    from pyloxi.datapath.ebpf.libbpf.testrun import prog_test_run
    ep_ip = IPv6(src=ep, dst=client, hlim=255) if ":" in ep else IP(src=ep, dst=client, ttl=255)
    cl_ip = IPv6(src=client, dst=vip, hlim=255) if ":" in vip else IP(src=client, dst=vip,
                                                                          ttl=255)
    sa = Ether(src=CLIENT_MAC, dst=LB_MAC) / ep_ip / TCP(
        sport=eport, dport=sport, flags="SA", seq=5000, ack=1001)
    ack = Ether(src=CLIENT_MAC, dst=LB_MAC) / cl_ip / TCP(
        sport=sport, dport=vport, flags="A", seq=1001, ack=5001)
    for pkt in (sa, ack):
        prog_test_run(fd, bytes(pkt), ctx=ctx, data_size_out=256)


def ctx_for(iface: str) -> bytes:
    ifindex = socket.if_nametoindex(iface)
    return struct.pack("<36xII", ifindex, ifindex).ljust(192, b"\0")


def xdp_ctx_for(iface: str, pkt: bytes) -> bytes:
    """struct xdp_md for BPF_PROG_TEST_RUN of pkt: data, data_end (the packet's length),
    data_meta, ingress_ifindex, rx_queue_index, egress_ifindex."""
    return struct.pack("<6I", 0, len(pkt), 0, socket.if_nametoindex(iface), 0, 0)


def xdp_serve(dp, iface: str, mac: str) -> None:  # type: ignore[no-untyped-def]
    """XDP serves iface, whose own MAC it takes to be `mac` (see the module's text)."""
    import ctypes

    from pyloxi.datapath.ebpf import layout as L
    raw = (ctypes.c_uint8 * 6)(*bytes.fromhex(mac.replace(":", "")))
    dp.maps["xdp_ports"].update(socket.if_nametoindex(iface).to_bytes(4, "little"),
                                bytes(L.XdpPort(mac=raw, on=1)))


def to_mac(pkt: bytes, mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", "")) + pkt[6:]


def xdp_loop_ns(dp, pkt: bytes, tc_pkt: bytes, total: int) -> tuple[float, set[int]]:  # type: ignore[no-untyped-def]
    """loop_ns for pyloxi_xdp. A call in which the cached next hop went stale (XDP passed
    the rest of its repetitions) is not counted: one untimed TC run of tc_pkt (same flow)
    refreshes it, and the call is made again."""
    from pyloxi.datapath.ebpf.libbpf.testrun import prog_test_run
    calls = max(1, total // CHAIN)
    ns, rvs, done, stale = 0, set(), 0, 0
    xctx, tctx = xdp_ctx_for("dp0", pkt), ctx_for("dp0")
    while done < calls:
        r = prog_test_run(dp.xdp_prog_fd, pkt, ctx=xctx, repeat=CHAIN, data_size_out=256)
        if r.retval == XDP_PASS and stale < calls // 10 + 10:
            stale += 1
            prog_test_run(dp.prog_fd, tc_pkt, ctx=tctx, data_size_out=256)
            continue
        ns += r.duration_ns
        rvs.add(r.retval)
        done += 1
    return ns / calls, rvs


def xdp_once_ns(dp, pkt: bytes, n: int, iface: str = "dp0") -> tuple[np.ndarray, set[int]]:  # type: ignore[no-untyped-def]
    """once_ns for pyloxi_xdp on iface, a run that found the next hop stale redone after an
    untimed TC run of the same packet (as xdp_loop_ns)."""
    from pyloxi.datapath.ebpf.libbpf.testrun import prog_test_run
    out = np.empty(n, dtype=np.float64)
    rvs, j, stale = set(), 0, 0
    xctx, tctx = xdp_ctx_for(iface, pkt), ctx_for(iface)
    while j < n:
        r = prog_test_run(dp.xdp_prog_fd, pkt, ctx=xctx, repeat=1, data_size_out=256)
        if r.retval == XDP_PASS and stale < n // 100 + 10:
            stale += 1
            prog_test_run(dp.prog_fd, pkt, ctx=tctx, data_size_out=256)
            continue
        out[j] = r.duration_ns
        rvs.add(r.retval)
        j += 1
    return out, rvs


def service(dp, svc_id: int, vip: str, ep: str, port: int, target: int,  # type: ignore[no-untyped-def]
            snat: str | None = None):
    from pyloxi.engine.program import EndpointSlot, ServiceProgram
    from pyloxi.model.lb import NatMode, Selection
    prog = ServiceProgram(
        svc_id=svc_id, name=f"b{svc_id}", vip=vip, proto=6, port_min=port, port_max=port,
        mode=NatMode.DEFAULT, sel=Selection.RR,
        endpoints=(EndpointSlot(ep, target, 1, True, snat),), slots=(0,), idle_timeout=240,
        allowed_sources=())
    dp.install_service(prog)
    return prog


def repeat_ns(fd: int, pkt: bytes, ctx: bytes, repeat: int, runs: int = 3) -> tuple[float, int]:
    """Median of `runs` kernel-timed loops of `repeat` repetitions; ns per packet, last retval."""
    from pyloxi.datapath.ebpf.libbpf.testrun import prog_test_run
    vals, rv = [], -1
    for _ in range(runs):
        out = prog_test_run(fd, pkt, ctx=ctx, repeat=repeat, data_size_out=4096)
        vals.append(out.duration_ns)
        rv = out.retval
    return float(statistics.median(vals)), rv


def once_ns(fd: int, pkts: list[bytes], ctx: bytes) -> tuple[np.ndarray, set[int]]:
    """Each packet run once (repeat=1): kernel durations and the set of return values."""
    from pyloxi.datapath.ebpf.libbpf.testrun import prog_test_run
    out = np.empty(len(pkts), dtype=np.float64)
    rvs = set()
    for j, p in enumerate(pkts):
        r = prog_test_run(fd, p, ctx=ctx, repeat=1, data_size_out=256)
        out[j] = r.duration_ns
        rvs.add(r.retval)
    return out, rvs


def syn_variants(n: int) -> list[bytes]:
    """n distinct SYNs to VIP:80: source 10.2.x.y x source port 1024..65023."""
    base = bytearray(tcp_packet(CLIENT, VIP, 1024, 80, "S"))
    out = []
    for i in range(n):
        host, port = divmod(i, 64000)
        b = bytearray(base)
        b[26:30] = socket.inet_aton(f"10.2.{host // 250}.{host % 250 + 2}")
        b[34:36] = (1024 + port).to_bytes(2, "big")
        out.append(bytes(b))
    return out


CHAIN = 254  # repetitions per call in the warm loops: a TTL of 255 lasts 254 forwards


def chain_vip(k: int) -> str:
    return f"20.1.{k // 250}.{k % 250 + 1}"


def loop_ns(fd: int, pkt: bytes, ctx: bytes, total: int) -> tuple[float, set[int], int]:
    """Kernel-timed loops of CHAIN repetitions, calls until `total` runs; ns per run."""
    from pyloxi.datapath.ebpf.libbpf.testrun import prog_test_run
    calls = max(1, total // CHAIN)
    ns, rvs = 0, set()
    for _ in range(calls):
        r = prog_test_run(fd, pkt, ctx=ctx, repeat=CHAIN, data_size_out=256)
        ns += r.duration_ns
        rvs.add(r.retval)
    return ns / calls, rvs, calls * CHAIN


def with_sport(pkt: bytes, sport: int) -> bytes:
    """A TCP frame of tcp_packet's with another source port, its checksum updated (RFC 1624)."""
    at = 14 + (20 if pkt[12:14] == b"\x08\x00" else 40)
    old = int.from_bytes(pkt[at:at + 2], "big")
    s = (~int.from_bytes(pkt[at + 16:at + 18], "big") & 0xFFFF) + (~old & 0xFFFF) + sport
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return pkt[:at] + sport.to_bytes(2, "big") + pkt[at + 2:at + 16] + \
        (~s & 0xFFFF).to_bytes(2, "big") + pkt[at + 18:]


def empty_conntrack(dp) -> None:  # type: ignore[no-untyped-def]
    for name in ("ct_map", "ct_half"):
        ct = dp.maps[name]
        while keys := [k for k, _ in ct.lookup_batch(batch=65536)]:
            ct.delete_batch(keys)


def new_flow_loop(dp, fd: int, ctx: bytes, client: str, vip0: str, calls: int,  # type: ignore[no-untyped-def]
                  mac: str = LB_MAC, ok: int = TC_ACT_REDIRECT) -> float:
    """Kernel-timed calls of CHAIN repetitions, each repetition a new flow (VIP k -> endpoint
    VIP k+1), a new client port per call; ns per call. Conntrack is emptied (untimed) every
    200 calls (50,800 flows, 101,600 half-open entries): the LRU never evicts."""
    from pyloxi.datapath.ebpf.libbpf.testrun import prog_test_run
    total = 0
    empty_conntrack(dp)
    base = to_mac(tcp_packet(client, vip0, 1024, 80, "S", ttl=255), mac)
    for c in range(calls):
        pkt = with_sport(base, 1024 + c % 64000)
        r = prog_test_run(fd, pkt, ctx=ctx, repeat=CHAIN, data_size_out=256)
        assert r.retval == ok, r.retval
        total += r.duration_ns
        if (c + 1) % 200 == 0:
            empty_conntrack(dp)
    empty_conntrack(dp)
    return total / calls


def xdp_new_flow_loop(dp, client: str, vip0: str, calls: int) -> float:  # type: ignore[no-untyped-def]
    """new_flow_loop through pyloxi_xdp: dp0 served with the next hop's MAC (as xdp_loop_ns),
    so each repetition is again a frame to this host, whose flow XDP creates and sends."""
    xdp_serve(dp, "dp0", EP_MAC)
    before = dp.datapath_stats()["xdp_new"]
    pkt = tcp_packet(client, vip0, 1024, 80, "S", ttl=255)
    ns = new_flow_loop(dp, dp.xdp_prog_fd, xdp_ctx_for("dp0", pkt), client, vip0, calls,
                       mac=EP_MAC, ok=XDP_REDIRECT)
    made = dp.datapath_stats()["xdp_new"] - before
    assert made == calls * CHAIN, f"{made} XDP new flows for {calls * CHAIN} runs"
    return ns


def bench_packets(repeats: int, new_flows: int) -> dict[str, object]:
    from pyloxi.datapath.ebpf.backend import EbpfDatapath
    from pyloxi.datapath.ebpf.libbpf.objects import BpfObject
    res: dict[str, object] = {"repeats": repeats, "new_flows": new_flows, "chain": CHAIN}
    pin = f"/sys/fs/bpf/pl{os.getpid()}-micro"
    dp = EbpfDatapath(pin, obj_path=OBJ)
    empty = BpfObject.open(build_empty())
    try:
        empty.load()
        efd = empty.program_fd("empty_tc")
        ctx0 = ctx_for("dp0")
        service(dp, 1, VIP, EP, 80, 8080)
        service(dp, 2, VIP_E, VIP_E, 80, 80)  # identity rewrite: repeatable established hit
        for k in range(CHAIN):  # chain: VIP k -> endpoint VIP k+1, every repetition a new flow
            service(dp, 10 + k, chain_vip(k), chain_vip(k + 1), 80, 80)
        n1 = min(repeats, 100_000)
        est = tcp_packet(CLIENT, VIP_E, 40000, 80, "A", ttl=255)
        other = tcp_packet(CLIENT, EP, 40001, 8080, "A")
        stat = lambda: dp.datapath_stats()["new_flow"]  # noqa: E731
        # floor: the empty program (kernel loop); cold = one run per call, minus the timer read
        res["empty_ns"], _ = repeat_ns(efd, other, ctx0, repeats)
        res["xdp_empty_ns"], _ = repeat_ns(empty.program_fd("empty_xdp"), other,
                                           xdp_ctx_for("dp0", other), repeats)
        d, _ = once_ns(efd, [other] * n1, ctx0)
        timer = max(0.0, float(d.mean()) - float(res["empty_ns"]))  # type: ignore[arg-type]
        res["timer_overhead_ns"] = timer
        # not for a VIP: untouched, so the plain kernel loop is exact
        ns, rv = repeat_ns(dp.prog_fd, other, ctx0, repeats)
        assert rv == TC_ACT_OK
        res["not_vip_ns"] = ns
        d, _ = once_ns(dp.prog_fd, [other] * n1, ctx0)
        res["not_vip_cold_ns"] = float(d.mean() - timer)
        # established: the SYN makes the flow, then the ACK in loops of CHAIN
        _, rvs = once_ns(dp.prog_fd, [tcp_packet(CLIENT, VIP_E, 40000, 80, "S", ttl=255)], ctx0)
        assert rvs == {TC_ACT_REDIRECT}, rvs
        establish(dp.prog_fd, ctx0, CLIENT, VIP_E, 40000, 80, VIP_E, 80)
        made = stat()
        ns, rvs, runs = loop_ns(dp.prog_fd, est, ctx0, repeats)
        assert rvs == {TC_ACT_REDIRECT}, f"established loops returned {rvs}"
        assert stat() == made, "established loops made flows"
        res["established_ns"], res["established_runs"] = ns, runs
        hold_xdp_dispatcher(dp)
        xdp_serve(dp, "dp0", EP_MAC)
        ns, rvs = xdp_loop_ns(dp, to_mac(est, EP_MAC), est, repeats)
        assert rvs == {XDP_REDIRECT}, f"xdp established loops returned {rvs}"
        assert stat() == made, "xdp established loops made flows"
        res["xdp_established_ns"] = ns
        # established, cold: an ordinary DNAT flow (VIP -> 10.0.11.2:8080), one run per call
        once_ns(dp.prog_fd, [tcp_packet(CLIENT, VIP, 40002, 80, "S")], ctx0)
        establish(dp.prog_fd, ctx0, CLIENT, VIP, 40002, 80, EP, 8080)
        d, rvs = once_ns(dp.prog_fd, [tcp_packet(CLIENT, VIP, 40002, 80, "A")] * n1, ctx0)
        assert rvs == {TC_ACT_REDIRECT}, rvs
        res["established_cold_ns"] = float(d.mean() - timer)
        xdp_serve(dp, "dp0", LB_MAC)
        cold = tcp_packet(CLIENT, VIP, 40002, 80, "A")
        d, rvs = xdp_once_ns(dp, cold, n1)
        assert rvs == {XDP_REDIRECT}, rvs
        res["xdp_established_cold_ns"] = float(d.mean() - timer)
        ns, rv = repeat_ns(dp.xdp_prog_fd, other, xdp_ctx_for("dp0", other),
                            repeats)
        assert rv == XDP_PASS
        res["xdp_pass_ns"] = ns
        # new flow: the chain, a new client port per call, through TC and then through XDP
        calls = max(1, new_flows // CHAIN)
        before = stat()
        res["new_flow_ns"] = new_flow_loop(dp, dp.prog_fd, ctx0, CLIENT, chain_vip(0), calls)
        made = stat() - before
        assert made == calls * CHAIN, f"{made} new flows for {calls * CHAIN} runs"
        res["new_flow_runs"] = made
        res["xdp_new_flow_ns"] = xdp_new_flow_loop(dp, CLIENT, chain_vip(0), calls)
        xdp_serve(dp, "dp0", LB_MAC)
        # new flow, cold: distinct SYNs to the DNAT service, one run per call
        d, rvs = once_ns(dp.prog_fd, syn_variants(n1), ctx0)
        assert rvs == {TC_ACT_REDIRECT}, rvs
        res["new_flow_cold_ns"] = float(d.mean() - timer)
        empty_conntrack(dp)
        # fewer calls than TC's: every XDP test run updates the kernel's XDP dispatcher
        # (two RCU grace periods, milliseconds on a busy machine)
        syns = syn_variants(min(n1, 20_000))
        d, rvs = once_ns(dp.xdp_prog_fd, syns, xdp_ctx_for("dp0", syns[0]))
        assert rvs == {XDP_REDIRECT}, rvs
        res["xdp_new_flow_cold_ns"] = float(d.mean() - timer)
    finally:
        empty.close()
        dp.destroy()
    return res


def chain_vip6(k: int) -> str:
    return f"fd00:21::{k + 1:x}"


def bench_packets6(repeats: int, new_flows: int) -> dict[str, object]:
    """The IPv6 figures beside bench_packets' IPv4 ones: established and new flow (NAT66, the
    same loops), and a NAT64 packet each way (one run per call: the rewrite changes the
    packet's family, so a kernel loop cannot repeat it)."""
    from pyloxi.datapath.ebpf.backend import EbpfDatapath
    from pyloxi.datapath.ebpf.libbpf.testrun import prog_test_run
    res: dict[str, object] = {}
    pin = f"/sys/fs/bpf/pl{os.getpid()}-micro6"
    dp = EbpfDatapath(pin, obj_path=OBJ)
    try:
        ctx0 = ctx_for("dp0")
        service(dp, 2, VIP_E6, VIP_E6, 80, 80)
        for k in range(CHAIN):
            service(dp, 10 + k, chain_vip6(k), chain_vip6(k + 1), 80, 80)
        service(dp, 3, VIP64, EP, 80, 8080, snat="10.0.11.1")
        stat = lambda: dp.datapath_stats()["new_flow"]  # noqa: E731
        once_ns(dp.prog_fd, [tcp_packet(CLIENT6, VIP_E6, 40000, 80, "S", ttl=255)], ctx0)
        establish(dp.prog_fd, ctx0, CLIENT6, VIP_E6, 40000, 80, VIP_E6, 80)
        made = stat()
        ns, rvs, runs = loop_ns(dp.prog_fd, tcp_packet(CLIENT6, VIP_E6, 40000, 80, "A", ttl=255),
                                ctx0, repeats)
        assert rvs == {TC_ACT_REDIRECT}, f"v6 established loops returned {rvs}"
        assert stat() == made, "v6 established loops made flows"
        res["established6_ns"] = ns
        hold_xdp_dispatcher(dp)
        xdp_serve(dp, "dp0", EP_MAC)
        est6 = tcp_packet(CLIENT6, VIP_E6, 40000, 80, "A", ttl=255)
        ns, rvs = xdp_loop_ns(dp, to_mac(est6, EP_MAC), est6, repeats)
        assert rvs == {XDP_REDIRECT}, f"v6 xdp established loops returned {rvs}"
        res["xdp_established6_ns"] = ns
        calls, before = max(1, new_flows // CHAIN), stat()
        res["new_flow6_ns"] = new_flow_loop(dp, dp.prog_fd, ctx0, CLIENT6, chain_vip6(0), calls)
        assert stat() - before == calls * CHAIN
        res["xdp_new_flow6_ns"] = xdp_new_flow_loop(dp, CLIENT6, chain_vip6(0), calls)
        # NAT64: one flow, its packets each way one run per call (timer read not subtracted:
        # compare with the IPv4 cold figures, which subtract it)
        n = min(repeats, 20_000)
        syn = tcp_packet(CLIENT6, VIP64, 41000, 80, "S")
        out = prog_test_run(dp.prog_fd, syn, ctx=ctx0, data_size_out=256)
        assert out.retval == TC_ACT_REDIRECT, out.retval
        from scapy.layers.inet import IP, TCP
        from scapy.layers.l2 import Ether
        nat_port = Ether(out.data)[TCP].sport

        def from_ep(flags: str) -> bytes:   # the endpoint's packets, to the LB's IPv4 source
            return bytes(Ether(src=EP_MAC, dst=LB_MAC) / IP(src=EP, dst="10.0.11.1") / TCP(
                sport=8080, dport=nat_port, flags=flags, seq=5000 + (flags == "A"), ack=1001))

        prog_test_run(dp.prog_fd, from_ep("SA"), ctx=ctx_for("dp1"), data_size_out=256)
        ack = tcp_packet(CLIENT6, VIP64, 41000, 80, "A")
        d6, rv6 = once_ns(dp.prog_fd, [ack] * n, ctx0)
        back = from_ep("A")
        d4, rv4 = once_ns(dp.prog_fd, [back] * n, ctx_for("dp1"))
        assert rv6 == rv4 == {TC_ACT_REDIRECT}, (rv6, rv4)
        res["nat64_6to4_cold_ns"], res["nat64_4to6_cold_ns"] = float(d6.mean()), float(d4.mean())
        xdp_serve(dp, "dp0", LB_MAC)
        xdp_serve(dp, "dp1", LB_MAC)
        d6, rv6 = xdp_once_ns(dp, ack, n)
        d4, rv4 = xdp_once_ns(dp, back, n, "dp1")
        assert rv6 == rv4 == {XDP_REDIRECT}, (rv6, rv4)
        res["xdp_nat64_6to4_cold_ns"] = float(d6.mean())
        res["xdp_nat64_4to6_cold_ns"] = float(d4.mean())
    finally:
        dp.destroy()
    return res


def bench_sweep(n_entries: int) -> dict[str, object]:
    """Fill ct_map with n_entries synthetic entries (n/2 established TCP flows, both halves),
    10% of the flows idle past the timeout; time one aging sweep (the daemon's code path)."""
    from pyloxi.datapath.ebpf import layout as L
    from pyloxi.datapath.ebpf.backend import EbpfDatapath
    pin = f"/sys/fs/bpf/pl{os.getpid()}-sweep"
    size = max(L.CT_ENTRIES, int(n_entries * 1.05))
    dp = EbpfDatapath(pin, obj_path=OBJ, ct_entries=size)
    res: dict[str, object] = {"ct_entries_requested": n_entries, "ct_max_entries": size}
    try:
        service(dp, 1, VIP, EP, 80, 8080)
        flows = n_entries // 2
        # A virtual clock 400 s ahead of CLOCK_MONOTONIC, used for the stamps and for the sweep:
        # a machine booted less than 400 s ago has no "400 s ago" (negative in uint64).
        now = time.monotonic_ns() + 400 * 10**9
        keys, vals = synthetic_flows(dp._dp_of[1], VIP, EP, flows, now, idle_every=10,
                                     idle_s=300)
        t0 = time.perf_counter()
        ct = dp.maps["ct_map"]
        write_entries(ct, keys, vals)
        res["fill_s"] = time.perf_counter() - t0
        from pyloxi.datapath.ebpf.conntrack import Snapshot
        res["ct_entries_present"] = len(Snapshot(ct))
        t0 = time.perf_counter()
        removed = dp.age_flows(now)
        res["sweep_s"] = time.perf_counter() - t0
        res["sweep_flows_removed"] = removed
        t0 = time.perf_counter()
        dp.age_flows(now)
        res["scan_only_s"] = time.perf_counter() - t0  # second sweep: nothing left to expire
        res["ct_entries_after"] = len(Snapshot(ct))
    finally:
        dp.destroy()
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=1_000_000)
    ap.add_argument("--new-flows", type=int, default=1_000_000)
    ap.add_argument("--ct-entries", type=int, default=1_000_000)
    ap.add_argument("--obj", default=None, help="datapath object (default build/lb.bpf.o)")
    ap.add_argument("--no-hold", action="store_true",
                    help="XDP loops without hold_xdp_dispatcher (the kernel's dispatcher update "
                         "per call)")
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    global OBJ, HOLD
    OBJ = args.obj or OBJ
    HOLD = not args.no_hold
    with datapath_netns(f"pl{os.getpid()}-micro", NETNS_SETUP):
        packets = bench_packets(args.repeats, args.new_flows)
        packets.update(bench_packets6(args.repeats, args.new_flows))
        out = {"packets": packets, "sweep": bench_sweep(args.ct_entries)}
    with open(args.json, "w") as f:
        json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
