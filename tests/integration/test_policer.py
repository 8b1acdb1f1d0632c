"""QoS policers with the real daemon and real traffic (iperf3, TCP, 5 s): a 100 Mbit/s policer
on an LB rule holds the rule's flow near 100 Mbit/s while an unpoliced VIP in the same run goes
well above it; the policer follows the rule's name across a delete and re-create; it survives
a daemon restart; an interface pyloxi is not attached to is refused."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from pyloxi.testing.lab.topology import ROUTED_VIP, backend_ip, wait_listening

from .conftest import DaemonHandle

FREE_VIP = "20.0.0.101"
POLICED_PORT, FREE_PORT = 5201, 5202
SECONDS = 5
RATE = 100  # Mbit/s
# The policer counts IP bytes of both directions (data and the ACKs coming back); iperf3
# reports TCP payload: about 4% under the policed rate when the policer holds it exactly.
LOW, HIGH = RATE * 0.9, RATE * 1.1


@pytest.fixture
def pol(lb: DaemonHandle) -> Iterator[DaemonHandle]:
    be = lb.topo.backends[0]
    servers = [be.popen(["iperf3", "-s", "-p", str(p)]) for p in (POLICED_PORT, FREE_PORT)]
    for p in (POLICED_PORT, FREE_PORT):
        wait_listening(be, p)
    yield lb
    lb.cli("delete", "policy", "pol-web", check=False)
    for s in servers:
        s.terminate()
        s.wait(10)


def iperf_mbps(d: DaemonHandle, vip: str, port: int) -> float:
    out = d.topo.client.run(["iperf3", "-c", vip, "-p", str(port), "-t", str(SECONDS), "-J"],
                            timeout=SECONDS + 60).stdout
    return float(json.loads(out)["end"]["sum_received"]["bits_per_second"]) / 1e6


def iperf_both(d: DaemonHandle) -> tuple[float, float]:
    """(policed, unpoliced) Mbit/s, both transfers at the same time."""
    free = d.topo.client.popen(["iperf3", "-c", FREE_VIP, "-p", str(FREE_PORT), "-t",
                                str(SECONDS), "-J"], stdout=subprocess.PIPE)
    try:
        policed = iperf_mbps(d, ROUTED_VIP, POLICED_PORT)
        out, _ = free.communicate(timeout=SECONDS + 60)
    finally:
        if free.poll() is None:
            free.kill()
    return policed, float(json.loads(out)["end"]["sum_received"]["bits_per_second"]) / 1e6


def policers(d: DaemonHandle) -> dict[str, dict[str, Any]]:
    r = d.api("GET", "/config/policy/all")
    assert r.status_code == 200, r.text
    return {e["policyIdent"]: e for e in r.json()["polAttr"]}


def make_rules(d: DaemonHandle, *, other: bool = True) -> None:
    be = backend_ip(1)
    d.cli("create", "lb", ROUTED_VIP, f"--tcp={POLICED_PORT}:{POLICED_PORT}",
          f"--endpoints={be}:1", "--name=web")
    if other:
        d.cli("create", "lb", FREE_VIP, f"--tcp={FREE_PORT}:{FREE_PORT}",
              f"--endpoints={be}:1", "--name=other")


def test_rule_policer_holds_100mbps_other_vip_unaffected(pol: DaemonHandle) -> None:
    make_rules(pol)
    free_before = iperf_mbps(pol, FREE_VIP, FREE_PORT)
    pol.cli("create", "policy", "pol-web", f"--rate={RATE}:{RATE}", "--target=web:2")
    policed, free = iperf_both(pol)
    print(f"policed {policed:.1f} Mbit/s, unpoliced {free:.1f} Mbit/s at the same time "
          f"(unpoliced alone before: {free_before:.1f})")
    assert LOW <= policed <= HIGH
    assert free > 150
    stats = policers(pol)["pol-web"]["stats"]
    assert stats["packetsDropped"] > 0 and stats["packetsOK"] > 0

    # the rule deleted and created again (another service id): the policer attaches again
    pol.cli("delete", "lb", ROUTED_VIP, f"--tcp={POLICED_PORT}")
    assert policers(pol)["pol-web"]["targetObject"]["polObjName"] == "web"  # kept
    make_rules(pol, other=False)
    again = iperf_mbps(pol, ROUTED_VIP, POLICED_PORT)
    print(f"policed after re-create {again:.1f} Mbit/s")
    assert LOW <= again <= HIGH

    # deleted: the rule's flow is free again
    pol.cli("delete", "policy", "pol-web")
    assert iperf_mbps(pol, ROUTED_VIP, POLICED_PORT) > 150


def test_policer_survives_restart_and_bad_port_is_400(pol: DaemonHandle) -> None:
    make_rules(pol)
    pol.cli("create", "policy", "pol-web", f"--rate={RATE}:{RATE}", "--target=web:2")
    pol.restart()
    assert list(policers(pol)) == ["pol-web"]

    # an interface policer: every packet entering the LB's client-facing eth0 (the data of a
    # transfer to the unpoliced VIP; its ACKs enter from the backend side)
    pol.cli("create", "policy", "pol-eth0", f"--rate={RATE}:{RATE}", "--target=eth0:1")
    try:
        port_rate = iperf_mbps(pol, FREE_VIP, FREE_PORT)
        print(f"port-policed {port_rate:.1f} Mbit/s")
        assert LOW <= port_rate <= HIGH
        assert policers(pol)["pol-eth0"]["stats"]["packetsDropped"] > 0
    finally:
        pol.cli("delete", "policy", "pol-eth0")
    policed = iperf_mbps(pol, ROUTED_VIP, POLICED_PORT)
    print(f"policed after restart {policed:.1f} Mbit/s")
    assert LOW <= policed <= HIGH
    r = pol.api("POST", "/config/policy", {
        "policyIdent": "pol-lo", "policyInfo": {"peakInfoRate": 100, "committedInfoRate": 100},
        "targetObject": {"attachment": 1, "polObjName": "lo"}})
    assert r.status_code == 400 and "not one the datapath is attached to" in r.text
    assert list(policers(pol)) == ["pol-web"]
