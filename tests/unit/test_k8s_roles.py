"""The agent's cluster roles: setRoles/setBGP/extBGPPeers flags, the election policy (pure), one
round of `ClusterRoles` against fake nodes (httpx mock transport, fake clock), and the
`loxilb.io/bgp` annotation on the rules."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from pyloxi.client import AsyncClient, rule_body
from pyloxi.k8s import annotations as ann
from pyloxi.k8s import reconcile
from pyloxi.k8s.config import AgentConfig, ConfigError, parse_args, parse_peers
from pyloxi.k8s.roles import BACKUP, INSTANCE, MASTER, ClusterRoles, RolePolicy

# ---- config -------------------------------------------------------------------------------


def test_role_and_bgp_flags():
    cfg = parse_args(["--setRoles=0.0.0.0", "--setBGP=65100",
                      "--extBGPPeers=50.50.50.1:65101, 2001:db8::1:65102"])
    assert cfg.set_roles == "0.0.0.0" and cfg.set_bgp == 65100
    assert parse_peers(cfg.ext_bgp_peers) == [("50.50.50.1", 65101), ("2001:db8::1", 65102)]
    off = parse_args([])
    assert off.set_roles == "" and off.set_bgp == 0 and parse_peers(off.ext_bgp_peers) == []


def test_role_and_bgp_config_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("setRoles: 192.168.80.200\nsetBGP: 64512\n"
                 "extBGPPeers: ['10.0.0.1:64513', '10.0.0.2:64514']\n")
    cfg = parse_args(["--config", str(f)])
    assert cfg.set_roles == "192.168.80.200" and cfg.set_bgp == 64512
    assert parse_peers(cfg.ext_bgp_peers) == [("10.0.0.1", 64513), ("10.0.0.2", 64514)]


@pytest.mark.parametrize("argv", [
    ["--setRoles=master"], ["--setBGP=-1"], ["--setBGP=4294967296"], ["--setBGP=x"],
    ["--setBGP=1", "--extBGPPeers=10.0.0.1"], ["--setBGP=1", "--extBGPPeers=10.0.0.1:0"],
    ["--setBGP=1", "--extBGPPeers=nohost:65000"], ["--extBGPPeers=10.0.0.1:65000"],
])
def test_bad_role_and_bgp_flags(argv):
    with pytest.raises(ConfigError):
        parse_args(argv)


# ---- the bgp annotation -------------------------------------------------------------------


def _svc(annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "web", "namespace": "default",
                         "annotations": annotations or {}},
            "spec": {"type": "LoadBalancer"}}


@pytest.mark.parametrize(("set_bgp", "value", "want"), [
    (0, None, False), (65000, None, True), (65000, "false", False), (0, "true", True),
    (65000, "False", False), (0, " yes ", True),
])
def test_bgp_annotation_overrides_the_flag(set_bgp, value, want):
    cfg = AgentConfig(set_bgp=set_bgp)
    a = {} if value is None else {ann.BGP: value}
    opts = ann.parse(_svc(a), cfg, {"defaultPool"}, set())
    assert opts.bgp is want
    rules = reconcile.build_rules("default", "web", opts, ["20.0.0.1"],
                                  {(80, "tcp"): [("10.0.0.1", 8080)]}, [])
    (entry,) = rules.values()
    assert rule_body(entry)["serviceArguments"]["bgp"] is want


def test_invalid_bgp_annotation_is_refused():
    with pytest.raises(ann.AnnotationError, match="loxilb.io/bgp='maybe'"):
        ann.parse(_svc({ann.BGP: "maybe"}), AgentConfig(set_bgp=65000), {"defaultPool"}, set())


def test_bgp_change_is_a_rule_difference():
    opts = ann.parse(_svc(), AgentConfig(), {"defaultPool"}, set())
    eps = {(80, "tcp"): [("10.0.0.1", 8080)]}
    (off,) = reconcile.build_rules("default", "web", opts, ["20.0.0.1"], eps, []).values()
    opts_on = ann.parse(_svc({ann.BGP: "true"}), AgentConfig(), {"defaultPool"}, set())
    (on,) = reconcile.build_rules("default", "web", opts_on, ["20.0.0.1"], eps, []).values()
    assert reconcile.differs(rule_body(on), rule_body(off))
    assert not reconcile.differs(rule_body(on), rule_body(on))


# ---- the election policy --------------------------------------------------------------------

A, B, C = "http://a", "http://b", "http://c"


def _round(p: RolePolicy, up: dict[str, bool], reported: dict[str, str]) -> str | None:
    for u, ok in up.items():
        p.observe(u, ok)
    return p.elect({u: s for u, s in reported.items() if up.get(u)})


def test_first_healthy_url_becomes_master_and_stays():
    p = RolePolicy([A, B, C])
    assert p.elect({}) is None  # nobody answered yet: nobody elected
    assert _round(p, {A: False, B: True, C: True}, {}) == B
    assert p.wanted() == {B: MASTER, C: BACKUP}
    # A answers now: it is first in the list but B is a working MASTER and stays
    assert _round(p, {A: True, B: True, C: True}, {}) == B
    assert p.wanted() == {A: BACKUP, B: MASTER, C: BACKUP}


def test_one_failed_check_is_not_a_failover():
    p = RolePolicy([A, B], down_after=2)
    assert _round(p, {A: True, B: True}, {}) == A
    assert _round(p, {A: False, B: True}, {}) == A  # one slow answer
    assert _round(p, {A: True, B: True}, {}) == A
    assert _round(p, {A: False, B: True}, {}) == A
    assert _round(p, {A: False, B: True}, {}) == B  # twice in a row: down
    assert p.wanted() == {B: MASTER}  # a down node is not told anything
    # A comes back (holding MASTER from before, say persisted): it is told BACKUP
    assert _round(p, {A: True, B: True}, {A: MASTER, B: MASTER}) == B
    assert p.to_post({A: MASTER, B: MASTER}) == {A: BACKUP}


def test_an_existing_master_is_adopted_at_start():
    p = RolePolicy([A, B, C])
    assert _round(p, {A: True, B: True, C: True}, {A: BACKUP, B: "", C: MASTER}) == C
    assert p.to_post({A: BACKUP, B: "", C: MASTER}) == {B: BACKUP}


def test_everyone_down_then_one_back():
    p = RolePolicy([A, B], down_after=1)
    assert _round(p, {A: True, B: True}, {}) == A
    assert _round(p, {A: False, B: False}, {}) is None
    assert p.wanted() == {}
    assert _round(p, {A: False, B: True}, {}) == B


# ---- one round against fake nodes -----------------------------------------------------------


class FakeNode:
    """A pyloxi node's cistate and BGP API, as far as the roles use it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.up = True
        self.bgp_up = True  # False: BGP answers 503 (gobgpd starting)
        self.state = ""
        self.vip = ""
        self.bgp_global: dict[str, Any] | None = None
        self.neighbors: dict[str, int] = {}
        self.posts: list[tuple[str, dict[str, Any]]] = []

    def restart(self) -> None:
        """A restarted daemon: cistate persisted, BGP config gone."""
        self.bgp_global, self.neighbors = None, {}

    def handle(self, request: httpx.Request) -> httpx.Response:
        if not self.up:
            raise httpx.ConnectError("connection refused", request=request)
        path = request.url.path.removeprefix("/netlox/v1")
        body = json.loads(request.content) if request.content else None
        if request.method == "POST":
            self.posts.append((path, body))
        if path == "/config/cistate/all":
            rows = [{"instance": INSTANCE, "state": self.state, "vip": self.vip}] \
                if self.state else []
            return httpx.Response(200, json={"Attr": rows})
        if path == "/config/cistate":
            self.state, self.vip = body["state"], body["vip"]
            return httpx.Response(200, json={"result": "Success"})
        if path.startswith("/config/bgp") and not self.bgp_up:
            return httpx.Response(503, json={"result": "bgp: gobgpd not answering"})
        if path == "/config/bgp/global":
            self.bgp_global = body
            return httpx.Response(200, json={"result": "Success"})
        if path == "/config/bgp/neigh":
            if self.bgp_global is None:
                return httpx.Response(400, json={"result": "bgp: no global config"})
            self.neighbors[body["ipAddress"]] = body["remoteAs"]
            return httpx.Response(200, json={"result": "Success"})
        if path == "/config/bgp/neigh/all":
            return httpx.Response(200, json={"bgpNeiAttr": [
                {"ipAddress": ip, "remoteAs": asn, "state": "active"}
                for ip, asn in self.neighbors.items()]})
        return httpx.Response(404, json={"result": "no such path"})

    def count(self, path: str) -> int:
        return sum(1 for p, _ in self.posts if p == path)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _cluster(n: int, **kw: Any) -> tuple[list[FakeNode], ClusterRoles, Clock]:
    nodes = [FakeNode(f"http://10.0.0.{i + 1}:11111") for i in range(n)]
    clients = [AsyncClient(nd.url, transport=httpx.MockTransport(nd.handle)) for nd in nodes]
    clock = Clock()
    return nodes, ClusterRoles(clients, clock=clock, **kw), clock


async def test_roles_elected_posted_and_failed_over():
    (n1, n2), roles, _ = _cluster(2, vip="0.0.0.0")
    await roles.tick()
    assert (n1.state, n2.state) == (MASTER, BACKUP)
    assert n1.vip == n2.vip == "0.0.0.0"
    await roles.tick()
    assert n1.count("/config/cistate") == n2.count("/config/cistate") == 1  # nothing to say

    n1.up = False
    await roles.tick()
    assert n2.state == BACKUP  # one failed check: not yet
    await roles.tick()
    assert n2.state == MASTER and roles.policy.master == n2.url

    n1.up = True  # back, still MASTER in its own (persisted) state: told BACKUP
    await roles.tick()
    assert (n1.state, n2.state) == (BACKUP, MASTER)
    n2.state = BACKUP  # someone else told the MASTER otherwise: told again
    await roles.tick()
    assert n2.state == MASTER


async def test_roles_off_posts_no_cistate():
    (n1, n2), roles, _ = _cluster(2, local_as=65001)
    await roles.tick()
    assert n1.count("/config/cistate") == n2.count("/config/cistate") == 0


async def test_bgp_config_given_once_then_periodically_and_after_restart():
    (n1, n2), roles, clock = _cluster(2, local_as=65001, peers=[("10.9.0.1", 65000)],
                                      bgp_period=60)
    await roles.tick()
    for nd, rid in ((n1, "10.0.0.1"), (n2, "10.0.0.2")):
        assert nd.bgp_global == {"routerId": rid, "localAs": 65001}  # the node's own address
        assert nd.neighbors == {"10.9.0.1": 65000}
    await roles.tick()
    # neighbours there: not posted again (a re-post resets the session); global not due yet
    assert n1.count("/config/bgp/neigh") == 1 and n1.count("/config/bgp/global") == 1
    clock.now += 61
    await roles.tick()
    assert n1.count("/config/bgp/global") == 2 and n1.count("/config/bgp/neigh") == 1

    n2.restart()  # between two rounds: only its lost neighbours tell
    await roles.tick()
    assert n2.bgp_global == {"routerId": "10.0.0.2", "localAs": 65001}
    assert n2.neighbors == {"10.9.0.1": 65000}
    assert n1.count("/config/bgp/neigh") == 1


async def test_bgp_retried_while_gobgpd_is_starting():
    (n1,), roles, _ = _cluster(1, local_as=65001, peers=[("10.9.0.1", 65000)])
    n1.bgp_up = False
    await roles.tick()
    await roles.tick()
    assert n1.bgp_global is None
    n1.bgp_up = True
    await roles.tick()
    assert n1.bgp_global is not None and n1.neighbors == {"10.9.0.1": 65000}


async def test_bgp_given_again_to_a_node_that_comes_back():
    (n1,), roles, _ = _cluster(1, local_as=65001, down_after=1)
    await roles.tick()
    assert n1.count("/config/bgp/global") == 1
    n1.up = False
    await roles.tick()
    n1.up, n1.bgp_global = True, None
    await roles.tick()
    assert n1.bgp_global == {"routerId": "10.0.0.1", "localAs": 65001}
