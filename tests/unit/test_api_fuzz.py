"""The API never answers 5xx: schemathesis fuzzes every operation of the served OpenAPI document.

The app is the daemon's (every router), over the in-memory datapath, with a fake BGP speaker so
the BGP routes are reached rather than answering "bgp is not enabled". Both schema-valid inputs
(positive) and schema-violating ones (negative) are sent; a bounded number of examples per
operation keeps the run well under a minute. Every refusal must be loxilb's error object, with
its `code` equal to the HTTP status.

A second run sends the same kind of inputs to an app with token authentication, without a
token: every operation but the open ones answers 401 and the rule table stays empty. A third
fuzzes the /auth and /oauth routes of an app with --userservice, as an admin.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402
from netfake import FakeNetConfig  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402

from pyloxi.api import create_app  # noqa: E402
from pyloxi.api.auth import AuthApi  # noqa: E402
from pyloxi.api.bfd import bfd_router  # noqa: E402
from pyloxi.api.bgp import bgp_router  # noqa: E402
from pyloxi.api.cistate import cistate_router  # noqa: E402
from pyloxi.api.cluster import cluster_router  # noqa: E402
from pyloxi.api.endpoint import endpoint_router  # noqa: E402
from pyloxi.api.firewall import firewall_router  # noqa: E402
from pyloxi.api.logs import logs_router  # noqa: E402
from pyloxi.api.metrics import metrics_router  # noqa: E402
from pyloxi.api.mirror import mirror_router  # noqa: E402
from pyloxi.api.netcfg import netcfg_router  # noqa: E402
from pyloxi.api.params import params_router  # noqa: E402
from pyloxi.api.policy import policy_router  # noqa: E402
from pyloxi.api.security import TokenFile  # noqa: E402
from pyloxi.api.session import session_router  # noqa: E402
from pyloxi.api.users import UserStore  # noqa: E402
from pyloxi.bgp.policy import PolicyBook  # noqa: E402
from pyloxi.cluster import ClusterState  # noqa: E402
from pyloxi.cluster.bfd import Bfd  # noqa: E402
from pyloxi.datapath.memory import MemoryDatapath  # noqa: E402
from pyloxi.engine.engine import Engine  # noqa: E402
from pyloxi.engine.firewall import Firewall  # noqa: E402
from pyloxi.engine.mirror import Mirrors  # noqa: E402
from pyloxi.engine.policer import Policers  # noqa: E402
from pyloxi.metrics import VIEWS, MetricsExporter, Sources  # noqa: E402
from pyloxi.model.bgp import BGPGlobalConfig, BGPNeigh, BGPNeighGetEntry  # noqa: E402
from pyloxi.oplog import LogControl, LogRing, LogSource  # noqa: E402
from pyloxi.probes import ProbeManager  # noqa: E402

B = "/netlox/v1"
# per operation and mode: ~15 s for the whole document on a quiet machine; raise it to hunt
EXAMPLES = int(os.environ.get("PYLOXI_FUZZ_EXAMPLES", "40"))
OPEN = {("GET", f"{B}/version"), ("GET", f"{B}/swagger.json"), ("GET", f"{B}/docs"),
        ("GET", f"{B}/meta"),
        ("POST", f"{B}/auth/login"), ("GET", f"{B}/oauth/{{provider}}"),
        ("GET", f"{B}/oauth/{{provider}}/callback"), ("GET", f"{B}/oauth/{{provider}}/token")}


class FakeBgp:
    """pyloxi.api.bgp.BgpControl, in memory."""

    def __init__(self) -> None:
        self.neighbors: dict[str, BGPNeigh] = {}
        self.policy = PolicyBook()

    def api_set_global(self, cfg: BGPGlobalConfig) -> None:
        self.global_config = cfg

    def api_add_neighbor(self, neigh: BGPNeigh) -> None:
        self.neighbors[neigh.ip_address] = neigh

    def api_delete_neighbor(self, ip: str, remote_as: int) -> None:
        self.neighbors.pop(ip, None)

    def api_neighbors(self) -> list[BGPNeighGetEntry]:
        return []

    # policies: the speaker's own book (its checks are what is fuzzed), without gobgpd
    def api_add_defined_set(self, kind: str, s: Any) -> None:
        self.policy.add_set(kind, s)

    def api_delete_defined_set(self, kind: str, name: str) -> None:
        self.policy.delete_set(kind, name)

    def api_defined_sets(self, kind: str, name: str) -> list[Any]:
        return self.policy.get_sets(kind, name)

    def api_add_policy(self, d: Any) -> None:
        self.policy.add_policy(d)

    def api_delete_policy(self, name: str) -> None:
        self.policy.delete_policy(name)

    def api_policies(self) -> list[Any]:
        return list(self.policy.policies.values())

    def api_apply_policy(self, req: Any) -> None:
        self.policy.apply(req, set(self.neighbors))

    def api_unapply_policy(self, req: Any) -> None:
        self.policy.unapply(req)


def daemon_app(tokens: Any = None, users: UserStore | None = None) -> tuple[Any, Engine]:
    datapath = MemoryDatapath()
    engine = Engine(datapath)
    auth = AuthApi(tokens, users)
    metrics = MetricsExporter(Sources(rules=engine.rule_table,
                                      counters=datapath.services_counters), flows=datapath.flows)
    app = create_app(engine, version="0", tokens=auth.check, open_calls=auth.open_calls,
                     viewer_may=auth.viewer_may, request_observer=metrics.api, extra_routers=[
        metrics_router(metrics, VIEWS), endpoint_router(ProbeManager()), bgp_router(FakeBgp()),
        cistate_router(ClusterState()), cluster_router(None),
        bfd_router(Bfd(lambda _i, _s: None)), session_router(),
        firewall_router(Firewall(MemoryDatapath())),
        netcfg_router(FakeNetConfig("eth0", "eth1")),
        params_router(LogControl(logger="pyloxi.fuzz")), logs_router(LogSource(ring=LogRing())),
        *auth.routers, policy_router(Policers(MemoryDatapath())),
        mirror_router(Mirrors(MemoryDatapath(interfaces=frozenset({"eth0", "eth1"}))))])
    return app, engine


def _schema(app: Any) -> Any:
    schema = schemathesis.openapi.from_asgi(f"{B}/swagger.json", app)
    schema.config.generation.update(
        modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=EXAMPLES,
        database="none")
    return schema


APP, ENGINE = daemon_app()
schema = _schema(APP)


def assert_loxilb_error(resp: Any) -> None:
    body = resp.json()
    assert set(body) == {"code", "message", "result"}, body
    assert body["code"] == resp.status_code
    assert isinstance(body["message"], str) and body["message"]


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_input_makes_the_api_fail(case: Any) -> None:
    resp = case.call()
    # 501 is the deliberate answer of the GTP session routes (no GTP-U datapath); GET /metrics
    # answers 503 while Prometheus is off (a fuzzed DELETE /config/metrics), as loxilb's does
    sessions = resp.status_code == 501 and "/config/session" in case.path
    metrics_off = resp.status_code == 503 and case.path == f"{B}/metrics"
    assert resp.status_code < 500 or sessions or metrics_off, \
        f"{case.method} {case.formatted_path}: {resp.text}"
    if resp.status_code >= 400:
        assert_loxilb_error(resp)


def _auth_app() -> tuple[Any, Engine]:
    # A token file made at import (parametrize needs the schema then): removed at exit.
    import atexit
    import tempfile

    directory = tempfile.TemporaryDirectory(prefix="pyloxi-fuzz-")
    atexit.register(directory.cleanup)
    path = Path(directory.name) / "tokens"
    path.write_text("fuzz-token-that-nobody-sends\n")
    users = UserStore(Path(directory.name) / "users.json", scrypt_n=2**4)
    return daemon_app(TokenFile(path), users)


AUTH_APP, AUTH_ENGINE = _auth_app()
auth_schema = _schema(AUTH_APP)


@auth_schema.parametrize()
@settings(max_examples=EXAMPLES // 4, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_without_a_token_nothing_but_the_open_routes_answers(case: Any) -> None:
    case.headers = {k: v for k, v in (case.headers or {}).items()
                    if k.lower() != "authorization"}
    resp = case.call()
    if (case.method.upper(), case.path) in OPEN:
        assert resp.status_code < 500
    else:
        assert resp.status_code == 401, resp.text
        assert_loxilb_error(resp)
    assert AUTH_ENGINE.list_rules() == []


def _users_app() -> tuple[Any, str]:
    """An app with --userservice, called with an admin's manual token (which no fuzzed logout
    or password change revokes): the user routes reached for real."""
    import atexit
    import tempfile

    directory = tempfile.TemporaryDirectory(prefix="pyloxi-fuzz-users-")
    atexit.register(directory.cleanup)
    users = UserStore(Path(directory.name) / "users.json", scrypt_n=2**4)
    users.add("admin", "Fuzz!admin-pw1", "admin")
    path = Path(directory.name) / "tokens"
    path.write_text("fuzz-admin-token\n")
    app, _engine = daemon_app(TokenFile(path), users)
    return app, "fuzz-admin-token"


USERS_APP, ADMIN_TOKEN = _users_app()
users_schema = _schema(USERS_APP).include(path_regex="/(auth|oauth)/")


@users_schema.parametrize()
@settings(max_examples=EXAMPLES // 2, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_input_makes_the_user_routes_fail(case: Any) -> None:
    case.headers = {**(case.headers or {}), "Authorization": ADMIN_TOKEN}
    resp = case.call()
    assert resp.status_code < 500, f"{case.method} {case.formatted_path}: {resp.text}"
    if resp.status_code >= 400:
        assert_loxilb_error(resp)
