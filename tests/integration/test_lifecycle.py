"""Rules change and the daemon restarts while traffic flows; bad input changes nothing."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from pyloxi.datapath.ebpf.libbpf import Map
from pyloxi.testing.lab.topology import ROUTED_VIP, backend_ip

from .conftest import DaemonHandle
from .traffic import http_answers, spread

BIG = 64 << 20
ALL = ",".join(f"{backend_ip(i)}:1" for i in (1, 2, 3))


def start_download(lb: DaemonHandle, rate: str = "8M"):  # type: ignore[no-untyped-def]
    """A long HTTP transfer from the client; returns the curl process (stdout: size code)."""
    import subprocess

    return lb.topo.client.popen(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{size_download} %{http_code}",
         "--limit-rate", rate, "--max-time", "60", f"http://{ROUTED_VIP}/big.bin"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err.decode()
    size, code = out.decode().split()
    return int(size), code


def test_daemon_restart_keeps_long_transfer_and_rules(lb: DaemonHandle) -> None:
    lb.cli("create", "lb", ROUTED_VIP, "--tcp=80:80", f"--endpoints={ALL}", "--name=web")
    before = lb.api("GET", "/config/loadbalancer/all").json()["lbAttr"]
    dl = start_download(lb)
    lb.wait_established()  # the restart comes mid-transfer
    lb.stop()  # the datapath keeps forwarding while no daemon runs
    time.sleep(1)  # the scenario, not a wait: a while with no daemon at all
    lb.start()
    assert finish(dl) == (BIG, "200")
    after = lb.api("GET", "/config/loadbalancer/all").json()["lbAttr"]

    def strip(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**r, "endpoints": [{k: v for k, v in e.items() if k != "counter"}
                                    for e in r["endpoints"]]} for r in rules]

    assert strip(after) == strip(before)
    # and the restarted daemon balances new connections as before
    assert set(spread([b for b, _ in http_answers(lb.topo.client, ROUTED_VIP, 6)])) == {
        "be1", "be2", "be3"}


def test_endpoint_removed_and_added_while_traffic_flows(lb: DaemonHandle) -> None:
    lb.cli("create", "lb", ROUTED_VIP, "--tcp=80:80", f"--endpoints={ALL}")
    dl = start_download(lb)  # first flow of a fresh rule: rr gives it be1
    ct = lb.wait_established()
    assert any(backend_ip(1) in c["conntrackAct"] for c in ct)
    # re-POST without be1: updated in place, be1's flow is left to finish
    lb.cli("create", "lb", ROUTED_VIP, "--tcp=80:80",
           f"--endpoints={backend_ip(2)}:1,{backend_ip(3)}:1")
    assert set(b for b, _ in http_answers(lb.topo.client, ROUTED_VIP, 10)) == {"be2", "be3"}
    lb.cli("create", "lb", ROUTED_VIP, "--tcp=80:80", f"--endpoints={ALL}")
    assert "be1" in {b for b, _ in http_answers(lb.topo.client, ROUTED_VIP, 6)}
    assert finish(dl) == (BIG, "200")


def snapshot(lb: DaemonHandle) -> tuple[object, ...]:
    maps = {}
    for name in ("svc_map", "gen_map", "ver_map", "allow_map"):
        with Map.from_pin(os.path.join(lb.pin, name)) as m:
            maps[name] = sorted(m.lookup_batch(65536))
    return lb.api("GET", "/config/loadbalancer/all").text, maps


BAD = [
    (b"{not json", 400),
    (b"[1, 2]", 400),
    ({"serviceArguments": {"externalIP": "300.1.1.1", "port": 80, "protocol": "tcp"},
      "endpoints": [{"endpointIP": "10.0.11.2", "targetPort": 80, "weight": 1}]}, 400),
    ({"serviceArguments": {"externalIP": ROUTED_VIP, "port": 82, "protocol": "tcp"},   # NAT46
      "endpoints": [{"endpointIP": "2001:db8::2", "targetPort": 80, "weight": 1}]}, 400),
    ({"serviceArguments": {"externalIP": ROUTED_VIP, "port": 70000, "protocol": "tcp"},
      "endpoints": [{"endpointIP": "10.0.11.2", "targetPort": 80, "weight": 1}]}, 400),
    ({"serviceArguments": {"externalIP": ROUTED_VIP, "port": 81, "protocol": "tcp", "mode": 9},
      "endpoints": [{"endpointIP": "10.0.11.2", "targetPort": 80, "weight": 1}]}, 400),
    ({"serviceArguments": {"externalIP": ROUTED_VIP, "port": 81, "protocol": "tcp", "sel": 42},
      "endpoints": [{"endpointIP": "10.0.11.2", "targetPort": 80, "weight": 1}]}, 400),
    ({"serviceArguments": {"externalIP": ROUTED_VIP, "port": 81, "protocol": "tcp"},
      "endpoints": []}, 400),
    ({"serviceArguments": {"externalIP": ROUTED_VIP, "port": 81, "protocol": "tcp"},
      "endpoints": [{"endpointIP": f"10.0.{20 + i // 250}.{1 + i % 250}", "targetPort": 80,
                     "weight": 1} for i in range(1025)]}, 400),  # over 1,024 endpoints
    ({"serviceArguments": {"externalIP": ROUTED_VIP, "port": 75, "portMax": 85,
                           "protocol": "tcp"},
      "endpoints": [{"endpointIP": "10.0.11.2", "targetPort": 80, "weight": 1}]}, 409),
    ({"serviceArguments": {"externalIP": ROUTED_VIP, "port": 80, "protocol": "tcp"},
      "endpoints": [{"endpointIP": "10.0.11.2", "targetPort": 80, "weight": 1}]}, 409),
]


@pytest.mark.parametrize("body,code", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_input_changes_nothing(lb: DaemonHandle, body: object, code: int) -> None:
    lb.cli("create", "lb", ROUTED_VIP, "--tcp=80:80", f"--endpoints={backend_ip(1)}:1")
    before = snapshot(lb)
    if isinstance(body, bytes):
        resp = lb.api("POST", "/config/loadbalancer", raw=body)
    else:
        resp = lb.api("POST", "/config/loadbalancer", body)
    assert resp.status_code == code, resp.text
    err = resp.json()
    assert err["code"] == code and err["message"]
    assert snapshot(lb) == before


def test_cli_rejects_bad_input_with_reason(lb: DaemonHandle) -> None:
    proc = lb.cli("create", "lb", "1.2.3", "--tcp=80:80", "--endpoints=10.0.11.2:1", check=False)
    assert proc.returncode != 0 and proc.stderr.strip().count("\n") == 0 and proc.stderr.strip()
    assert lb.api("GET", "/config/loadbalancer/all").json()["lbAttr"] == []
