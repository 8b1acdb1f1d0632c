"""pyloxi answers as loxilb's own swagger says: schemathesis builds schema-valid requests from
loxilb's api/swagger.yml (tests/data/loxilb-swagger.yml) and sends them to the daemon's app.

The app is the API fuzz test's (every router the daemon mounts, in-memory datapath and fakes),
seeded with one object of each kind so the list answers have something to validate. For every
loxilb operation, with a bounded number of examples (PYLOXI_CONFORMANCE_EXAMPLES, default 10):

- no 5xx (but the statuses a documented divergence names: loxilb answers them too);
- no 404 from a route not found: a listed path is routed. A 404 of a routed request is an
  object not found, and must be loxilb's error body;
- the body validates against loxilb's schema for that status, except where loxilb's own answers
  do not (scripts/api_coverage.py DIVERGENCES patches the schema to what loxilb answers).

Operations pyloxi does not serve are skipped only through scripts/api_coverage.py's NOT_SERVED
(whose entries that are served make test_api_coverage fail).
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.specs.openapi.checks import response_schema_conformance  # noqa: E402
from starlette.routing import Match  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402
from test_api_coverage import coverage_module  # noqa: E402
from test_api_fuzz import _users_app, assert_loxilb_error, daemon_app  # noqa: E402

from pyloxi.engine.program import Flow  # noqa: E402

B = "/netlox/v1"
EXAMPLES = int(os.environ.get("PYLOXI_CONFORMANCE_EXAMPLES", "10"))


coverage = coverage_module()
UNSERVED: dict[tuple[str, str], str] = {
    op: f"not served: {why}" for op, why in coverage.NOT_SERVED.items()}
ALLOWED_STATUSES: dict[tuple[str, str], frozenset[int]] = {
    op: d.statuses for d in coverage.DIVERGENCES for op in d.ops}

# One of each kind of object, in loxilb's request shapes (POSTed before the run).
SEEDS: list[tuple[str, dict[str, Any]]] = [
    ("/config/loadbalancer", {
        "serviceArguments": {"externalIP": "20.20.20.1", "port": 80, "protocol": "tcp",
                             "name": "seed"},
        "endpoints": [{"endpointIP": "31.31.31.1", "targetPort": 8080, "weight": 1}]}),
    ("/config/loadbalancer", {
        "serviceArguments": {"externalIP": "20.20.20.2", "port": 443, "protocol": "tcp",
                             "monitor": True, "probetype": "http", "probeport": 443},
        "endpoints": [{"endpointIP": "31.31.31.2", "targetPort": 8443, "weight": 2}],
        "allowedSources": [{"prefix": "10.0.0.0/8"}]}),
    ("/config/endpoint", {"hostName": "31.31.31.1", "name": "seed-ep", "probeType": "ping"}),
    ("/config/firewall", {"ruleArguments": {"sourceIP": "10.0.0.0/24",
                                            "destinationIP": "0.0.0.0/0", "preference": 10},
                          "opts": {"drop": True}}),
    ("/config/vlan", {"vid": 100}),
    ("/config/vlan/100/member", {"dev": "eth0", "Tagged": True}),
    ("/config/ipv4address", {"dev": "eth0", "ipAddress": "10.1.1.1/24"}),
    ("/config/ipv4address", {"dev": "eth1", "ipAddress": "10.2.2.1/24"}),
    ("/config/neighbor", {"dev": "eth0", "ipAddress": "10.1.1.2",
                          "macAddress": "00:11:22:33:44:55"}),
    ("/config/route", {"destinationIPNet": "10.9.0.0/16", "gateway": "10.1.1.2"}),
    ("/config/fdb", {"dev": "eth0", "macAddress": "00:11:22:33:44:66"}),
    ("/config/tunnel/vxlan", {"epIntf": "eth1", "vxlanID": 50}),
    ("/config/tunnel/vxlan/50/peer", {"peerIP": "10.2.2.2"}),
    ("/config/cors", {"cors": ["http://example.com"]}),
    ("/config/bgp/neigh", {"ipAddress": "10.3.3.3", "remoteAs": 65001}),
    ("/config/policy", {"policyIdent": "seed-pol",
                        "policyInfo": {"type": 0, "colorAware": False, "peakInfoRate": 100,
                                       "committedInfoRate": 100},
                        "targetObject": {"attachment": 1, "polObjName": "eth0"}}),
    ("/config/mirror", {"mirrorIdent": "seed-mirr",
                        "mirrorInfo": {"type": 0, "port": "eth1", "vlan": 0},
                        "targetObject": {"attachment": 1, "mirrObjName": "eth0"}}),
    ("/config/metrics", {}),  # Prometheus on: GET /metrics answers 200
]


def _seeded_app() -> Any:
    app, engine = daemon_app()
    client = TestClient(app)
    for path, body in SEEDS:
        resp = client.post(B + path, json=body)
        assert resp.status_code == 200, (path, resp.text)
    # two tracked flows of the first rule, for GET /config/conntrack/all
    datapath = engine._dp  # the fuzz app's MemoryDatapath
    svc_id = next(p.svc_id for p in datapath.services.values() if p.vip == "20.20.20.1")
    datapath.flow_table = [
        Flow("192.168.1.5", "20.20.20.1", 40000, 80, 6, "est", svc_id, "31.31.31.1", 8080,
             None, 0, 12, 3400),
        Flow("192.168.1.6", "20.20.20.1", 40001, 80, 6, "closed-wait", svc_id, "31.31.31.1",
             8080, None, 0, 3, 180)]
    assert len(client.get(f"{B}/config/conntrack/all").json()["ctAttr"]) == 2
    return app


APP = _seeded_app()


def _loxilb_schema(app: Any) -> Any:
    raw = coverage.conformance_swagger()
    raw["host"], raw["schemes"] = "testserver", ["http"]
    schema = schemathesis.openapi.from_dict(raw)
    schema.app = app
    # positive only: what loxilb's swagger allows, sent to see what pyloxi answers (the fuzz
    # test sends the rest)
    schema.config.generation.update(modes=[GenerationMode.POSITIVE], max_examples=EXAMPLES,
                                    database="none")
    return schema


schema = _loxilb_schema(APP)
# the user routes, of an app with --userservice (APP answers them 404 "not enabled")
USERS_APP, ADMIN_TOKEN = _users_app()
users_schema = _loxilb_schema(USERS_APP).include(path_regex="^/auth/")


def routed(app: Any, method: str, path: str) -> bool:
    """Whether some route of the app takes this path (for any method: a wrong method is 405)."""
    scope = {"type": "http", "method": method, "path": path, "root_path": "",
             "query_string": b"", "headers": []}
    return any(route.matches(scope)[0] != Match.NONE for route in app.router.routes)


def check(app: Any, case: Any) -> None:
    op = (case.method.upper(), case.operation.path)
    if op in UNSERVED:
        pytest.skip(UNSERVED[op])
    resp = case.call()
    where = f"{case.method} {case.formatted_path}: {resp.status_code} {resp.text[:300]}"
    assert resp.status_code < 500 or resp.status_code in ALLOWED_STATUSES.get(op, ()), where
    if resp.status_code == 404:
        assert routed(app, op[0], unquote(urlsplit(resp.request.url).path)), \
            f"route not found: {where}"
        assert_loxilb_error(resp)
    case.validate_response(resp, checks=[response_schema_conformance])


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_pyloxi_answers_as_loxilbs_swagger_says(case: Any) -> None:
    check(APP, case)


@users_schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_the_user_routes_answer_as_loxilbs_swagger_says(case: Any) -> None:
    case.headers = {**(case.headers or {}), "Authorization": ADMIN_TOKEN}
    check(USERS_APP, case)


@pytest.mark.parametrize("path", ["/config/cors/%0A0", "/config/cors/0%0A",
                                  "/config/loadbalancer/name/%0Ax"])
def test_a_path_parameter_with_a_newline_reaches_its_route(path: str) -> None:
    """Found by the run above: the cors route's `path` parameter (`.*`) stopped at a newline,
    so the request matched no route (404 Not Found) or lost the newline."""
    resp = TestClient(APP).delete(B + path)
    assert routed(APP, "DELETE", unquote(B + path))
    assert resp.status_code in (400, 404), resp.text
    assert_loxilb_error(resp)
    assert resp.json()["message"] != "Not Found"
