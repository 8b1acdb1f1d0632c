"""The XDP fast path with the real daemon: `--datapath xdp` attaches it (generic mode on the
lab's veths) beside TC, real TCP traffic between the namespaces gets correct answers, a
transfer started under TC alone goes on across the switch, and XDP is seen forwarding it."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyloxi.datapath.ebpf.counters import datapath_stats
from pyloxi.datapath.ebpf.libbpf.maps import Map
from pyloxi.testing.lab import LbTopology
from pyloxi.testing.lab.netns import Netns
from pyloxi.testing.lab.topology import ROUTED_VIP, backend_ip

from ..waiting import wait_until
from .conftest import DaemonHandle
from .test_restart import BIG, wait_flow, wait_persisted
from .traffic import http_answers, paced_download, udp_answers

ALL = ",".join(f"{backend_ip(i)}:80" for i in (1, 2, 3))


def _lb_ifaces(topo: LbTopology) -> list[str]:
    return ["eth0", *(f"eth{i}" for i in range(1, len(topo.backends) + 1))]


def _senders(topo: LbTopology) -> list[tuple[Netns, str]]:
    return [(topo.client, "eth0"), *((be, "eth0") for be in topo.backends)]


@pytest.fixture
def fresh(topo: LbTopology) -> Iterator[LbTopology]:
    """No TC or XDP program in the LB namespace, senders' checksum offload on and GRO off (the
    veth default), before and after the test."""
    def reset() -> None:
        for ifname in _lb_ifaces(topo):
            topo.lb.run(["tc", "qdisc", "del", "dev", ifname, "clsact"], check=False)
            topo.lb.run(["ip", "link", "set", "dev", ifname, "xdpgeneric", "off"], check=False)
            topo.lb.run(["ip", "link", "set", "dev", ifname, "xdpdrv", "off"], check=False)
        for ns, ifname in _senders(topo):
            ns.run(["ethtool", "-K", ifname, "tx", "on", "gro", "off"], check=False)

    reset()
    yield topo
    reset()


def xdp_mode(topo: LbTopology, ifname: str) -> str | None:
    out = topo.lb.run(["ip", "-d", "link", "show", "dev", ifname]).stdout
    for mode in ("xdpgeneric", "xdpdrv", "xdp"):
        if f" {mode} " in out or f" {mode}/" in out:
            return mode
    return None


def stats(d: DaemonHandle) -> dict[str, int]:
    m = Map.from_pin(os.path.join(d.pin, "stats_map"))
    try:
        return datapath_stats(m)
    finally:
        m.close()


def download_whole(topo: LbTopology) -> None:
    """/big.bin through the VIP: every byte, answer 200."""
    proc = topo.client.popen(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{size_download} %{http_code}",
         "--max-time", "60", f"http://{ROUTED_VIP}/big.bin"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err.decode()
    assert out.decode().split() == [str(BIG), "200"]


def test_switch_to_xdp_keeps_flows_and_xdp_forwards(fresh: LbTopology, tmp_path: Path) -> None:
    topo = fresh
    fast = str(tmp_path / "fast")  # created once XDP is seen forwarding: the rest at full speed
    d = DaemonHandle(topo, "xdp")
    d.start()   # --datapath tc, the default
    try:
        d.cli("create", "lb", ROUTED_VIP, "--tcp=80:80", f"--endpoints={ALL}", "--name=web")
        assert all(xdp_mode(topo, i) is None for i in _lb_ifaces(topo))
        assert len(http_answers(topo.client, ROUTED_VIP, 3)) == 3
        dl = paced_download(topo.client, ROUTED_VIP, "/big.bin", fast)  # runs across the switch
        before = wait_flow(d, set())
        wait_persisted(d, ROUTED_VIP)
        d.stop()
        d.extra_args = ["--datapath", "xdp", "--cleanup-on-exit"]
        d.start()
        assert [xdp_mode(topo, i) for i in _lb_ifaces(topo)] == ["xdpgeneric"] * 4
        # Senders in the namespaces leave TCP checksums to the (veth) device: such packets
        # are TC's (xdp.h). With offload off they carry full checksums, and XDP forwards.
        for ns, ifname in _senders(topo):
            ns.run(["ethtool", "-K", ifname, "tx", "off"])
        answers = http_answers(topo.client, ROUTED_VIP, 12)
        assert len(answers) == 12
        assert {be for be, _ in answers} == {"be1", "be2", "be3"}
        # each of them a connection XDP opened (SYN), established (the client's ACK) and
        # forwarded: the handshake, the request and the answer never needed TC
        assert stats(d)["xdp_new"] >= 12
        assert dl.poll() is None, "the transfer ended before the switch: read it slower"
        wait_until(lambda: stats(d)["xdp_fwd"] > 100, 30, what="XDP forwarding the transfer")
        open(fast, "w").close()
        out, err = dl.communicate(timeout=120)
        assert dl.returncode == 0, err.decode()
        assert out.decode().split() == [str(BIG), "200"]   # every byte, checksums right
        after = [c for c in d.api("GET", "/config/conntrack/all").json()["ctAttr"]
                 if c["sourcePort"] == before["sourcePort"]]
        assert after and after[0]["conntrackAct"] == before["conntrackAct"]
        # back to TC alone in the same run: the XDP program comes off, traffic goes on
        d.stop()
        d.extra_args = ["--cleanup-on-exit"]
        d.start()
        assert all(xdp_mode(topo, i) is None for i in _lb_ifaces(topo))
        fwd = stats(d)["xdp_fwd"]
        assert len(http_answers(topo.client, ROUTED_VIP, 3)) == 3
        assert stats(d)["xdp_fwd"] == fwd
    finally:
        d.stop()


def test_partial_checksums_go_to_tc_and_stay_right(fresh: LbTopology) -> None:
    """Offload on (the senders' default on veth): XDP hands those packets to TC, counted, and
    the answers are right."""
    topo = fresh
    d = DaemonHandle(topo, "xdp-partial")
    d.extra_args = ["--datapath", "xdp", "--cleanup-on-exit"]
    d.start()
    try:
        d.cli("create", "lb", ROUTED_VIP, "--tcp=80:80", f"--endpoints={ALL}", "--name=web")
        download_whole(topo)
        assert stats(d)["xdp_partial"] > 0
    finally:
        d.stop()


def test_native_xdp_on_veth_forwards_with_napi_peers(fresh: LbTopology) -> None:
    """`--datapath xdp-native`: native XDP on the LB's veths. Its redirects go into the other
    veths' peers, which need NAPI: GRO on at the senders' ends. Every byte of a transfer
    arrives (the checksums XDP wrote are right: the receiver checks them, offload off at the
    senders), every backend answers, and XDP counts the packets it forwarded."""
    topo = fresh
    for ns, ifname in _senders(topo):
        ns.run(["ethtool", "-K", ifname, "tx", "off", "gro", "on"])
    d = DaemonHandle(topo, "xdp-native")
    d.extra_args = ["--datapath", "xdp-native", "--cleanup-on-exit"]
    d.start()
    try:
        assert [xdp_mode(topo, i) for i in _lb_ifaces(topo)] == ["xdp"] * 4
        d.cli("create", "lb", ROUTED_VIP, "--tcp=80:80", f"--endpoints={ALL}", "--name=web")
        answers = http_answers(topo.client, ROUTED_VIP, 12)
        assert {be for be, _ in answers} == {"be1", "be2", "be3"} and len(answers) == 12
        assert stats(d)["xdp_new"] >= 12   # connections opened in XDP
        # UDP: each datagram a new flow XDP creates, the backend's answer establishing it
        topo.start_udp()
        d.cli("create", "lb", ROUTED_VIP, "--udp=5353:5353", f"--endpoints={ALL}",
              "--name=dns")
        before = stats(d)["xdp_new"]
        assert set(udp_answers(topo.client, ROUTED_VIP, 6)) == {"be1", "be2", "be3"}
        assert stats(d)["xdp_new"] - before >= 6
        download_whole(topo)
        assert stats(d)["xdp_fwd"] > 100
    finally:
        d.stop()
    assert all(xdp_mode(topo, i) is None for i in _lb_ifaces(topo))
