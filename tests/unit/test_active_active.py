"""Active-active agreement (pyloxi.cluster.probeviews, .fingerprint, .activeactive), three or
two nodes joined by a fake peer channel with the interface of pyloxi.cluster.peers
(`register(section, provide, receive)`; a peer silent for 3 s is delivered as `{}`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from tests.served import serve
from typer.testing import CliRunner

from pyloxi.api import create_app
from pyloxi.api.cluster import cluster_router
from pyloxi.cli.main import app as cli
from pyloxi.cluster.activeactive import ActiveActive
from pyloxi.cluster.fingerprint import MaglevFingerprints
from pyloxi.cluster.probeviews import ProbeViews, endpoint_id
from pyloxi.datapath.memory import MemoryDatapath
from pyloxi.engine import Engine
from pyloxi.model.cluster import ClusterStatus
from pyloxi.model.lb import LoadBalancerEntry, Oper
from pyloxi.probes import ProbeTarget, engine_sink

A = ProbeTarget("31.31.31.1_tcp_8080", "31.31.31.1", "tcp", 8080, ep_proto="tcp", ep_port=8080)
B = ProbeTarget("31.31.31.2_tcp_8080", "31.31.31.2", "tcp", 8080, ep_proto="tcp", ep_port=8080)
EPS = [("31.31.31.1", 8080, 1), ("31.31.31.2", 8080, 1), ("31.31.31.3", 8080, 1)]


class Net:
    """The peer channels of several nodes: `exchange()` is one round of every node sending each
    section to every live peer; `silence(n)` is what the others get once n is quiet for 3 s."""

    def __init__(self) -> None:
        self.sections: dict[int, dict[str, tuple[Callable[[], dict[str, Any]],
                                                 Callable[[int, dict[str, Any]], None]]]] = {}
        self.down: set[int] = set()

    def channel(self, node: int) -> Any:
        net = self

        class Channel:
            def register(self, section: str, provide: Callable[[], dict[str, Any]],
                         receive: Callable[[int, dict[str, Any]], None]) -> None:
                net.sections.setdefault(node, {})[section] = (provide, receive)

        return Channel()

    def exchange(self) -> None:
        for src, secs in self.sections.items():
            if src in self.down:
                continue
            for name, (provide, _) in secs.items():
                payload = provide()
                for dst, dsecs in self.sections.items():
                    if dst != src and dst not in self.down and name in dsecs:
                        dsecs[name][1](src, payload)

    def silence(self, node: int) -> None:
        self.down.add(node)
        for dst, dsecs in self.sections.items():
            if dst != node:
                for _, receive in dsecs.values():
                    receive(node, {})


class Node:
    """One node's probe views: `verdicts` stands for its ProbeManager, `told` records what the
    engine would be told."""

    def __init__(self, index: int, net: Net, targets: tuple[ProbeTarget, ...] = (A, B)) -> None:
        self.verdicts: dict[ProbeTarget, bool] = {t: True for t in targets}
        self.told: list[tuple[str, bool, str]] = []
        self.views = ProbeViews(lambda: list(self.verdicts.items()), self._sink, index)
        self.fps = MaglevFingerprints(list)
        self.aa = ActiveActive(self.fps, self.views, index)
        self.aa.attach(net.channel(index))

    def _sink(self, target: ProbeTarget, up: bool, reason: str) -> None:
        self.told.append((endpoint_id(target), up, reason))

    def probe(self, target: ProbeTarget, up: bool) -> None:
        """What the ProbeManager does on a settled change: verdict in force, then on_change."""
        self.verdicts[target] = up
        self.views.local_changed(target, up, "probe says so")

    def state(self, target: ProbeTarget) -> bool:
        return self.views.effective()[endpoint_id(target)]


@pytest.fixture
def three() -> tuple[Net, list[Node]]:
    net = Net()
    nodes = [Node(i, net) for i in range(3)]
    net.exchange()
    return net, nodes


def test_alone_the_local_verdict_decides() -> None:
    node = Node(0, Net())
    node.probe(A, False)
    assert node.told == [("tcp 31.31.31.1:8080", False, "probe says so")]
    node.probe(A, True)
    assert node.told[-1] == ("tcp 31.31.31.1:8080", True, "probe says so")
    assert len(node.told) == 2


def test_local_down_with_two_peers_up_stays_up(three: tuple[Net, list[Node]]) -> None:
    net, nodes = three
    nodes[0].probe(A, False)
    net.exchange()
    assert nodes[0].told == []  # the engine never hears of it
    assert all(n.state(A) for n in nodes)
    assert nodes[0].views.overrides == 1
    (d,) = nodes[0].aa.status().disagreements
    assert d.endpoint == "tcp 31.31.31.1:8080" and d.effective == "up"
    assert [(v.node, v.state) for v in d.views] == [(0, "down"), (1, "up"), (2, "up")]


def test_two_of_three_down_is_down_on_every_node(three: tuple[Net, list[Node]]) -> None:
    net, nodes = three
    nodes[0].probe(A, False)
    net.exchange()
    nodes[1].probe(A, False)  # node 1 knows node 0's view already: 2 of 3
    assert nodes[1].told == [("tcp 31.31.31.1:8080", False,
                              "cluster: 2 of 3 live nodes see it down")]
    net.exchange()
    # node 0 (down here too) and node 2 (up here, outvoted) follow the majority
    assert [n.state(A) for n in nodes] == [False, False, False]
    assert nodes[2].told == [("tcp 31.31.31.1:8080", False,
                              "cluster: 2 of 3 live nodes see it down")]
    assert all(n.state(B) for n in nodes)  # the other endpoint is untouched
    # the endpoint comes back for one of the two: 1 of 3 down, up again everywhere
    nodes[1].probe(A, True)
    net.exchange()
    assert [n.state(A) for n in nodes] == [True, True, True]


def test_peer_going_silent_re_decides(three: tuple[Net, list[Node]]) -> None:
    net, nodes = three
    nodes[0].probe(A, False)
    nodes[1].probe(A, False)
    net.exchange()
    assert [n.state(A) for n in nodes] == [False, False, False]
    # node 1 goes silent: nodes 0 (down) and 2 (up) tie, and a tie keeps the endpoint up
    net.silence(1)
    assert nodes[0].state(A) is True and nodes[2].state(A) is True
    assert nodes[0].told[-1][:2] == ("tcp 31.31.31.1:8080", True)
    # node 2 goes silent as well: node 0 is alone, its own verdict decides again
    net.silence(2)
    assert nodes[0].state(A) is False
    assert nodes[0].told[-1] == ("tcp 31.31.31.1:8080", False,
                                 "no peer view any more: the local verdict decides")
    peers = {p.index: p.live for p in nodes[0].aa.status().peers}
    assert peers == {1: False, 2: False}


def test_two_nodes_tie_keeps_up() -> None:
    net = Net()
    a, b = Node(0, net), Node(1, net)
    net.exchange()
    a.probe(A, False)
    net.exchange()
    assert a.state(A) and b.state(A) and a.told == [] and b.told == []
    b.probe(A, False)
    net.exchange()
    assert not a.state(A) and not b.state(A)


def test_a_peer_without_the_endpoint_has_no_vote() -> None:
    net = Net()
    a, b, _c = Node(0, net), Node(1, net), Node(2, net, targets=(B,))
    net.exchange()
    a.probe(A, False)
    b.probe(A, False)
    net.exchange()
    assert not a.state(A) and not b.state(A)  # 2 of 2 voters, c does not probe A


def test_bad_payloads_are_not_views(three: tuple[Net, list[Node]]) -> None:
    net, nodes = three
    nodes[0].views.receive(7, {"v": 99, "eps": {"tcp 31.31.31.1:8080": "down"}})
    nodes[0].views.receive(8, {"v": 1, "eps": {"tcp 31.31.31.1:8080": "maybe"}})
    nodes[0].probe(A, False)
    assert nodes[0].state(A)  # still outvoted by nodes 1 and 2 only


# ---------------------------------------------------------------------------- maglev


def hash_rule(eps: list[tuple[str, int, int]], oper: Oper = Oper.CREATE) -> LoadBalancerEntry:
    return LoadBalancerEntry.model_validate({
        "serviceArguments": {"externalIP": "20.20.20.1", "port": 80, "protocol": "tcp", "sel": 1,
                             "oper": int(oper)},
        "endpoints": [{"endpointIP": i, "targetPort": p, "weight": w} for i, p, w in eps],
    })


def rr_rule() -> LoadBalancerEntry:
    return LoadBalancerEntry.model_validate({
        "serviceArguments": {"externalIP": "20.20.20.2", "port": 80, "protocol": "tcp"},
        "endpoints": [{"endpointIP": "31.31.31.9", "targetPort": 80}]})


class LbNode:
    """A node with an engine whose probe verdicts go through its views (as the daemon wires)."""

    def __init__(self, index: int, net: Net, eps: list[tuple[str, int, int]],
                 clock: Callable[[], float] = lambda: 0.0, grace_s: float = 0.0) -> None:
        self.engine = Engine(MemoryDatapath())
        self.engine.add_rule(hash_rule(eps))
        self.engine.add_rule(rr_rule())
        self.verdicts: dict[ProbeTarget, bool] = {A: True, B: True}
        sink = engine_sink(self.engine)
        self.views = ProbeViews(lambda: list(self.verdicts.items()), sink, index)
        self.fps = MaglevFingerprints(self.engine.programs, grace_s=grace_s, clock=clock)
        self.aa = ActiveActive(self.fps, self.views, index)
        self.aa.attach(net.channel(index))

    def probe(self, target: ProbeTarget, up: bool) -> None:
        self.verdicts[target] = up
        self.views.local_changed(target, up, "probe says so")


def test_same_tables_no_mismatch_and_a_weight_drift_is_reported(
        caplog: pytest.LogCaptureFixture) -> None:
    net = Net()
    a, b = LbNode(0, net, EPS), LbNode(1, net, list(reversed(EPS)))
    net.exchange()
    assert list(a.fps.local()) == ["20.20.20.1:80/tcp"]  # rr services have no fingerprint
    assert a.fps.local() == b.fps.local()
    assert a.aa.status().mismatches == [] and a.fps.mismatches_seen == 0
    caplog.set_level(logging.INFO, "pyloxi.cluster.fingerprint")
    b.engine.add_rule(hash_rule([("31.31.31.2", 8080, 4)], oper=Oper.ATTACH))
    for _ in range(3):
        net.exchange()
    st = a.aa.status()
    (m,) = st.mismatches
    assert (m.service, m.peer) == ("20.20.20.1:80/tcp", 1)
    assert (m.local, m.remote) == (a.fps.local()[m.service], b.fps.local()[m.service])
    assert st.mismatch_count == 1 and b.aa.status().mismatch_count == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # once on each node, not once per exchange
    assert "20.20.20.1:80/tcp" in warnings[0].getMessage()
    b.engine.add_rule(hash_rule([("31.31.31.2", 8080, 1)], oper=Oper.ATTACH))
    net.exchange()
    assert a.aa.status().mismatches == [] and b.aa.status().mismatches == []
    assert a.aa.status().mismatch_count == 1
    assert any("agrees with node" in r.getMessage() for r in caplog.records)


def test_a_difference_counts_only_when_it_lasts(caplog: pytest.LogCaptureFixture) -> None:
    """Nodes apply a change an exchange or two apart: a difference shorter than the grace is no
    mismatch; one that lasts is reported once, however many exchanges it lasts."""
    now = [100.0]
    net = Net()
    a, b = (LbNode(i, net, EPS, clock=lambda: now[0], grace_s=2.5) for i in range(2))
    caplog.set_level(logging.WARNING, "pyloxi.cluster.fingerprint")
    b.engine.add_rule(hash_rule([("31.31.31.2", 8080, 4)], oper=Oper.ATTACH))
    net.exchange()
    now[0] += 1
    a.engine.add_rule(hash_rule([("31.31.31.2", 8080, 4)], oper=Oper.ATTACH))  # caught up
    net.exchange()
    now[0] += 5
    net.exchange()
    assert a.fps.mismatches_seen == 0 and not caplog.records
    b.engine.add_rule(hash_rule([("31.31.31.3", 8080, 2)], oper=Oper.ATTACH))  # a real drift
    for _ in range(2):
        net.exchange()
        now[0] += 1
    assert a.aa.status().mismatches == []  # 2 s: not yet
    for _ in range(5):
        net.exchange()
        now[0] += 1
    assert [m.service for m in a.aa.status().mismatches] == ["20.20.20.1:80/tcp"]
    assert a.fps.mismatches_seen == 1
    assert len([r for r in caplog.records if "differs from node 1" in r.getMessage()]) == 1


def test_a_local_probe_failure_does_not_make_the_tables_differ() -> None:
    net = Net()
    nodes = [LbNode(i, net, EPS) for i in range(3)]
    net.exchange()
    nodes[0].probe(A, False)  # without the views, node 0 would re-point A's slots
    net.exchange()
    assert {n.fps.local()["20.20.20.1:80/tcp"] for n in nodes} == {nodes[1].fps.local()[
        "20.20.20.1:80/tcp"]}
    assert all(n.aa.status().mismatches == [] for n in nodes)
    # the endpoint really fails (2 of 3): every node takes it out, the tables still agree
    nodes[1].probe(A, False)
    net.exchange()
    net.exchange()
    digests = {n.fps.local()["20.20.20.1:80/tcp"] for n in nodes}
    assert len(digests) == 1
    assert [ep.state for ep in nodes[2].engine.list_rules()[0].endpoints] == \
        ["inactive", "active", "active"]
    assert all(n.aa.status().mismatches == [] for n in nodes)


def test_without_views_a_local_failure_is_a_mismatch() -> None:
    """The control: verdicts straight into the engine (as without --cluster) make the tables
    differ, and the fingerprints catch it."""
    net = Net()
    a, _b = LbNode(0, net, EPS), LbNode(1, net, EPS)
    a.engine.set_endpoint_state("31.31.31.1", port=8080, protocol="tcp", up=False)
    net.exchange()
    assert [(m.service, m.peer) for m in a.aa.status().mismatches] == [("20.20.20.1:80/tcp", 1)]


# ---------------------------------------------------------------------------- API and CLI


def cluster_app(status: Callable[[], ClusterStatus] | None) -> Any:
    return create_app(Engine(MemoryDatapath()), version="0",
                      extra_routers=[cluster_router(status)])


def status_url(env: dict[str, str]) -> str:
    return f"http://{env['PYLOXI_API']}/netlox/v1/cluster/status"


@pytest.fixture
def disagreeing() -> Iterator[dict[str, str]]:
    """The API of node 0 of three, served (tests.served): its PYLOXI_API environment."""
    net = Net()
    nodes = [Node(i, net) for i in range(3)]
    nodes[0].probe(A, False)
    nodes[0].fps.receive(2, {"v": 1, "tables": {}})
    net.exchange()
    with serve(cluster_app(nodes[0].aa.status)) as env:
        yield env


def test_api_cluster_status(disagreeing: dict[str, str]) -> None:
    body = httpx.get(status_url(disagreeing)).json()
    assert body["self"] == 0
    assert [(p["index"], p["live"]) for p in body["peers"]] == [(1, True), (2, True)]
    assert body["maglevMismatches"] == [] and body["maglevMismatchCount"] == 0
    assert body["probeDisagreements"] == [{
        "endpoint": "tcp 31.31.31.1:8080", "effective": "up",
        "views": [{"node": 0, "state": "down"}, {"node": 1, "state": "up"},
                  {"node": 2, "state": "up"}]}]
    assert body["probeOverrides"] == 1


def test_api_cluster_status_without_cluster() -> None:
    with serve(cluster_app(None)) as env:
        body = httpx.get(status_url(env)).json()
    assert body == {"self": 0, "peers": [], "maglevMismatches": [], "maglevMismatchCount": 0,
                    "probeDisagreements": [], "probeOverrides": 0}


def test_cli_get_cluster(disagreeing: dict[str, str]) -> None:
    env = disagreeing
    res = CliRunner().invoke(cli, ["get", "cluster"], env=env, prog_name="pyloxi")
    assert res.exit_code == 0, (res.stdout, res.stderr)
    lines = res.stdout.splitlines()
    assert lines[0].startswith("node 0: 2 live peer(s), 0 maglev mismatch(es)")
    assert "1 probe disagreement(s)" in lines[0]
    assert any(line.split()[:3] == ["tcp", "31.31.31.1:8080", "up"] and
               "0:down 1:up 2:up" in line for line in lines)
    js = CliRunner().invoke(cli, ["get", "cluster", "-o", "json"], env=env, prog_name="pyloxi")
    assert js.exit_code == 0 and '"probeOverrides": 1' in js.stdout


def test_a_table_changing_under_the_read_is_read_again() -> None:
    """The manager's dict belongs to the event loop; the channel's thread may see it change."""
    calls = [0]

    def local() -> list[tuple[ProbeTarget, bool]]:
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("dictionary changed size during iteration")
        return [(A, False)]

    views = ProbeViews(local, lambda t, up, r: None)
    assert views.provide() == {"v": 1, "eps": {"tcp 31.31.31.1:8080": "down"}}
