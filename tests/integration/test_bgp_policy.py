"""BGP policies (loxilb's /config/bgp/policy/*) with a real gobgpd and a BIRD 2 router: an
export policy that rejects one VIP's prefix, applied to the neighbour, takes that route out of
the router's kernel table while another VIP's stays; removing the assignment brings it back.
The policy survives a restart of the daemon (bgp.json).

    lb (10.78.1.2, AS 65001, pyloxi + gobgpd) ── rt (10.78.1.1, AS 65000, BIRD)
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from pyloxi.testing.lab import Lab, cleanup_stale

from ..waiting import wait_until
from .conftest import DaemonHandle

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(shutil.which("gobgpd") is None or shutil.which("bird") is None,
                       reason="needs gobgpd and bird2 (scripts/install-deps)"),
]

VIP_A, VIP_B = "10.99.1.1", "10.99.1.2"
RT_IP, LB_IP = "10.78.1.1", "10.78.1.2"
LB_AS, RT_AS = 65001, 65000

BIRD_CONF = f"""
router id {RT_IP};
protocol device {{ scan time 1; }}
protocol kernel {{ ipv4 {{ import none; export all; }}; }}
protocol bgp lb {{
  local as {RT_AS}; neighbor {LB_IP} as {LB_AS};
  hold time 3; keepalive time 1; connect retry time 1; error wait time 1, 2;
  ipv4 {{ import all; export none; }};
}}
"""


class PolicyLab:
    def __init__(self) -> None:
        self.lab = Lab("plbgpp")
        self.tmp = tempfile.TemporaryDirectory(prefix="pyloxi-bgpp-")
        self.rt = self.lab.netns("rt")
        self.lb = self.lab.netns("lb")
        self.lab.link(self.rt, "tolb", f"{RT_IP}/24", self.lb, "eth0", f"{LB_IP}/24")
        conf = os.path.join(self.tmp.name, "bird.conf")
        with open(conf, "w") as f:
            f.write(BIRD_CONF)
        self.rt.popen(["bird", "-f", "-c", conf, "-s", os.path.join(self.tmp.name, "bird.ctl"),
                       "-P", os.path.join(self.tmp.name, "bird.pid")])
        self.api_port = 50300 + os.getpid() % 1000
        self.d = DaemonHandle(SimpleNamespace(lb=self.lb, lab=self.lab, tmp=self.tmp),  # type: ignore[arg-type]
                              name="lb")
        self.d.extra_args = ["--bgp", "--bgp-api", f"127.0.0.1:{self.api_port}",
                             "--bgp-timers", "3,1,1", "--interfaces", "eth0"]
        self.d.start()

    def close(self) -> None:
        self.d.stop()
        self.lab.close()
        self.tmp.cleanup()

    def call(self, method: str, path: str, body: dict[str, object] | None = None) -> None:
        """One API call, tried again while gobgpd is (re)starting (503)."""
        def done() -> bool:
            r = self.d.api(method, path, body)
            if r.status_code == 503:
                return False
            assert r.status_code == 200, f"{method} {path}: {r.status_code} {r.text}"
            return True
        wait_until(done, 60, interval=0.5, what=f"{method} {path}")

    def established(self) -> bool:
        r = self.d.api("GET", "/config/bgp/neigh/all")
        return r.status_code == 200 and [n["state"] for n in r.json()["bgpNeiAttr"]] == [
            "established"]

    def router_vips(self) -> set[str]:
        """The VIPs the router's kernel has a route to."""
        out = self.rt.run(["ip", "-4", "route", "show", "proto", "bird"], check=False).stdout
        return set(re.findall(r"^(10\.99\.\S+?)(?:/32)?\s", out, re.M)) & {VIP_A, VIP_B}

    def adj_out(self) -> str:
        """What gobgpd sends the router, after its export policy (gobgp's own CLI)."""
        return self.lb.run(["gobgp", "-p", str(self.api_port), "neighbor", RT_IP, "adj-out"],
                           check=False).stdout


@pytest.fixture
def lab() -> Iterator[PolicyLab]:
    cleanup_stale("plbgpp")
    lab = PolicyLab()
    try:
        lab.call("POST", "/config/bgp/global", {"routerId": LB_IP, "localAs": LB_AS})
        lab.call("POST", "/config/bgp/neigh", {"ipAddress": RT_IP, "remoteAs": RT_AS})
        for vip in (VIP_A, VIP_B):
            lab.call("POST", "/config/loadbalancer", {
                "serviceArguments": {"externalIP": vip, "port": 80, "protocol": "tcp",
                                     "bgp": True},
                "endpoints": [{"endpointIP": "10.78.9.9", "targetPort": 80, "weight": 1}]})
        # gobgpd 3.10 waits 5-10 s between connect attempts: a missed first one costs that
        wait_until(lab.established, 60, what="session established")
        yield lab
    finally:
        lab.close()


def test_export_policy_on_the_neighbour_withdraws_one_vip_and_is_undone(lab: PolicyLab):
    wait_until(lambda: lab.router_vips() == {VIP_A, VIP_B}, 30, what="both VIPs routed")
    P = "/config/bgp/policy"
    lab.call("POST", f"{P}/definedsets/prefix", {
        "name": "vip-a", "prefixList": [{"ipPrefix": f"{VIP_A}/32", "masklengthRange": "32..32"}]})
    lab.call("POST", f"{P}/definitions", {"name": "hide-vip-a", "statements": [{
        "name": "hide", "conditions": {"matchPrefixSet": {"prefixSet": "vip-a",
                                                          "matchSetOption": "any"}},
        "actions": {"routeDisposition": "reject-route"}}]})
    assert lab.router_vips() == {VIP_A, VIP_B}  # defined, not applied: nothing changes
    apply = {"ipAddress": RT_IP, "policyType": "export", "policies": ["hide-vip-a"],
             "routeAction": "accept"}
    lab.call("POST", f"{P}/apply", apply)
    wait_until(lambda: lab.router_vips() == {VIP_B}, 30, what="VIP A withdrawn by the policy")
    assert VIP_A not in lab.adj_out() and VIP_B in lab.adj_out()

    # the daemon restarted (its gobgpd with it): the policy comes back from bgp.json before
    # any route is sent
    lab.d.stop()
    lab.d.start()
    wait_until(lab.established, 60, what="session re-established")
    wait_until(lambda: VIP_B in lab.adj_out() and lab.router_vips() == {VIP_B}, 30,
               what="VIP B announced again")
    assert VIP_A not in lab.adj_out()
    r = lab.d.api("GET", f"{P}/definitions/all")
    assert [p["name"] for p in r.json()["bgpPolicyAttr"]] == ["hide-vip-a"]

    lab.call("DELETE", f"{P}/apply", {"ipAddress": RT_IP, "policyType": "export",
                                      "policies": ["hide-vip-a"]})
    wait_until(lambda: lab.router_vips() == {VIP_A, VIP_B}, 30, what="VIP A routed again")
