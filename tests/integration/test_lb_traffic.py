"""Real TCP/UDP/ICMP through the VIP for every NAT mode and selection algorithm."""

from __future__ import annotations

import pytest

from pyloxi.testing.lab.topology import CLIENT_IP, ONLINK_VIP, ROUTED_VIP, backend_ip

from .conftest import DaemonHandle
from .traffic import http_answers, spread, udp_answers

BACKENDS = ["be1", "be2", "be3"]


def eps(weights: tuple[int, ...] = (1, 1, 1)) -> str:
    return ",".join(f"{backend_ip(i + 1)}:{w}" for i, w in enumerate(weights))


def seen_source(mode: str, backend: str) -> str:
    i = int(backend[2:])
    return {"default": CLIENT_IP, "fullnat": ROUTED_VIP, "onearm": f"10.0.{10 + i}.1"}[mode]


@pytest.mark.parametrize("mode", ["default", "onearm", "fullnat"])
def test_rr_tcp_in_every_mode(lb: DaemonHandle, mode: str) -> None:
    lb.cli("create", "lb", ROUTED_VIP, "--tcp=80:80", f"--endpoints={eps()}", f"--mode={mode}")
    answers = http_answers(lb.topo.client, ROUTED_VIP, 30)
    assert spread([b for b, _ in answers]) == {"be1": 10, "be2": 10, "be3": 10}
    # the backend sees the address the mode promises
    for backend, source in answers:
        assert source == seen_source(mode, backend)


@pytest.mark.parametrize("mode", ["default", "onearm", "fullnat"])
def test_rr_udp_in_every_mode(lb: DaemonHandle, mode: str) -> None:
    lb.cli("create", "lb", ROUTED_VIP, "--udp=53:5353", f"--endpoints={eps()}", f"--mode={mode}")
    assert spread(udp_answers(lb.topo.client, ROUTED_VIP, 30, port=53)) == {
        "be1": 10, "be2": 10, "be3": 10}


@pytest.mark.parametrize("mode", ["default", "onearm", "fullnat"])
def test_priority_follows_weights(lb: DaemonHandle, mode: str) -> None:
    lb.cli("create", "lb", ROUTED_VIP, "--tcp=80:80", f"--endpoints={eps((50, 25, 25))}",
           "--select=priority", f"--mode={mode}")
    got = spread([b for b, _ in http_answers(lb.topo.client, ROUTED_VIP, 40)])
    assert got == {"be1": 20, "be2": 10, "be3": 10}


@pytest.mark.parametrize("mode", ["default", "onearm", "fullnat"])
def test_hash_spreads_and_sticks_per_tuple(lb: DaemonHandle, mode: str) -> None:
    lb.cli("create", "lb", ROUTED_VIP, "--tcp=80:80", f"--endpoints={eps()}", "--select=hash",
           f"--mode={mode}")
    many = spread([b for b, _ in http_answers(lb.topo.client, ROUTED_VIP, 60)])
    assert set(many) == set(BACKENDS) and min(many.values()) >= 8
    # one client port = one 5-tuple: always the same backend (sequential, port reused)
    same = {b for b, _ in http_answers(lb.topo.client, ROUTED_VIP, 5, local_port=45000)}
    assert len(same) == 1


@pytest.mark.parametrize("mode", ["default", "onearm", "fullnat"])
def test_persist_keeps_client_on_one_backend(lb: DaemonHandle, mode: str) -> None:
    lb.cli("create", "lb", ROUTED_VIP, "--tcp=80:80", f"--endpoints={eps()}",
           "--select=persist", f"--mode={mode}")
    assert len({b for b, _ in http_answers(lb.topo.client, ROUTED_VIP, 15)}) == 1


@pytest.mark.parametrize("mode", ["default", "onearm", "fullnat"])
def test_lc_spreads_evenly(lb: DaemonHandle, mode: str) -> None:
    lb.cli("create", "lb", ROUTED_VIP, "--tcp=80:80", f"--endpoints={eps()}", "--select=lc",
           f"--mode={mode}")
    got = spread([b for b, _ in http_answers(lb.topo.client, ROUTED_VIP, 30)])
    assert set(got) == set(BACKENDS) and max(got.values()) - min(got.values()) <= 1


def test_icmp_echo_balanced(lb: DaemonHandle) -> None:
    lb.cli("create", "lb", ROUTED_VIP, "--icmp", f"--endpoints={eps()}")
    out = lb.topo.client.run(["ping", "-c", "3", "-i", "0.2", "-W", "2", ROUTED_VIP], check=False)
    assert " 0% packet loss" in out.stdout
    ct = lb.cli("get", "ct", "-o", "json").stdout
    assert '"icmp"' in ct and "bidir" in ct


def test_onlink_vip_answers_arp(lb: DaemonHandle) -> None:
    """A VIP on the client's own subnet: the LB must answer ARP for it."""
    lb.cli("create", "lb", ONLINK_VIP, "--tcp=80:80", f"--endpoints={eps()}")
    answers = http_answers(lb.topo.client, ONLINK_VIP, 6)
    assert spread([b for b, _ in answers]) == {"be1": 2, "be2": 2, "be3": 2}


def test_port_range_rule(lb: DaemonHandle) -> None:
    lb.cli("create", "lb", ROUTED_VIP, "--tcp=8000-8002:80", f"--endpoints={eps()}")
    # offsets map 8000->80; nginx listens on 80 only, so use the first port of the range
    assert {b for b, _ in http_answers(lb.topo.client, ROUTED_VIP, 3, port=8000)} == set(BACKENDS)


def test_counters_and_conntrack_visible(lb: DaemonHandle) -> None:
    lb.cli("create", "lb", ROUTED_VIP, "--tcp=80:80", f"--endpoints={eps()}", "--name=web")
    http_answers(lb.topo.client, ROUTED_VIP, 9)
    rules = lb.api("GET", "/config/loadbalancer/all").json()["lbAttr"]
    (rule,) = rules
    for ep in rule["endpoints"]:
        packets, nbytes = map(int, ep["counter"].split(":"))
        assert packets >= 3 * 5 and nbytes > 0 and ep["state"] == "active"
    ct = lb.api("GET", "/config/conntrack/all").json()["ctAttr"]
    assert len(ct) == 9
    assert {c["servName"] for c in ct} == {"web"}
    assert all(c["destinationIP"] == ROUTED_VIP and c["sourceIP"] == CLIENT_IP for c in ct)
