"""No input makes the API answer 500 or poisons it for others (issue 8).

Each case sends something hostile (a lone surrogate, deep nesting, a huge body, a bool for a
port, a cross-site text/plain POST, bad percent-encoding) and checks the observable outcome:
the status code, loxilb's error body, and that the rule table and datapath are as before.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyloxi.api import create_app
from pyloxi.api.endpoint import endpoint_router
from pyloxi.api.guard import MAX_BODY_BYTES, MAX_JSON_DEPTH
from pyloxi.datapath.memory import MemoryDatapath
from pyloxi.engine.engine import Engine
from pyloxi.model.base import MAX_NAME_LEN
from pyloxi.probes import ProbeManager
from pyloxi.store import JsonStore

B = "/netlox/v1"
LB = f"{B}/config/loadbalancer"
EP = f"{B}/config/endpoint"
JSON_CT = {"content-type": "application/json"}


def rule(port: int = 2020, **svc: Any) -> dict[str, Any]:
    return {
        "serviceArguments": {"externalIP": "20.20.20.1", "port": port, "protocol": "tcp", **svc},
        "endpoints": [{"endpointIP": "31.31.31.1", "targetPort": 8080, "weight": 1}],
    }


class Rig:
    def __init__(self, http: TestClient, engine: Engine, dp: MemoryDatapath,
                 probes: ProbeManager) -> None:
        self.http = http
        self.engine = engine
        self.dp = dp
        self.probes = probes

    def post_raw(self, body: bytes | str, path: str = LB, **headers: str) -> Any:
        content = body.encode() if isinstance(body, str) else body
        return self.http.post(path, content=content, headers={**JSON_CT, **headers})

    def snapshot(self) -> tuple[Any, ...]:
        """Everything a rejected request must leave as it was."""
        return (
            [r.model_dump() for r in self.engine.list_rules()],
            list(self.dp.calls),
            sorted(self.probes.keys()),
        )

    def lb_all(self) -> list[dict[str, Any]]:
        resp = self.http.get(f"{LB}/all")
        assert resp.status_code == 200, resp.text
        return resp.json()["lbAttr"]


@pytest.fixture
def rig() -> Iterator[Rig]:
    dp = MemoryDatapath()
    engine = Engine(dp)
    probes = ProbeManager()
    app = create_app(engine, version="0", extra_routers=[endpoint_router(probes)])
    with TestClient(app, raise_server_exceptions=False) as http:
        yield Rig(http, engine, dp, probes)


def assert_error(resp: Any, code: int, *words: str) -> str:
    assert resp.status_code == code, resp.text
    body = resp.json()
    assert set(body) == {"code", "message", "result"}
    assert body["code"] == code
    msg = body["message"]
    assert msg and "\n" not in msg and len(msg) <= 1024
    for w in words:
        assert w.lower() in msg.lower(), msg
    return str(msg)


# ------------------------------------------------------------------- lone surrogates


def test_lone_surrogate_name_is_refused_and_list_keeps_working(rig: Rig) -> None:
    body = json.dumps(rule(name="\ud800"))  # ensure_ascii: the JSON escape "\ud800"
    assert "\\ud800" in body
    before = rig.snapshot()
    assert_error(rig.post_raw(body), 400, "serviceArguments.name", "surrogate")
    assert rig.snapshot() == before
    assert rig.lb_all() == []
    # a good rule still goes in and lists
    assert rig.http.post(LB, json=rule(name="web")).status_code == 200
    assert [r["serviceArguments"]["name"] for r in rig.lb_all()] == ["web"]


@pytest.mark.parametrize(
    "body",
    [
        rule(name="ok\udfffok"),  # lone low surrogate in the middle
        rule(host="\ud83d"),  # half of an emoji's pair
        rule() | {"endpoints": [{"endpointIP": "\udc00", "targetPort": 1, "weight": 1}]},
        rule() | {"unknownField": "\ud800"},  # even where the model would ignore it
        rule() | {"\ud800": 1},  # in a key
    ],
)
def test_lone_surrogate_anywhere_in_body_is_400(rig: Rig, body: dict[str, Any]) -> None:
    before = rig.snapshot()
    assert_error(rig.post_raw(json.dumps(body)), 400, "surrogate")
    assert rig.snapshot() == before


def test_valid_non_ascii_name_round_trips(rig: Rig) -> None:
    resp = rig.post_raw(json.dumps(rule(name="wéb-😀")))  # escaped pair: a valid character
    assert resp.status_code == 200, resp.text
    assert rig.lb_all()[0]["serviceArguments"]["name"] == "wéb-😀"


def test_endpoint_with_lone_surrogate_name_is_refused(rig: Rig) -> None:
    body = json.dumps({"hostName": "31.31.31.9", "name": "\ud800", "probeType": "ping"})
    assert_error(rig.post_raw(body, EP), 400, "name", "surrogate")
    assert rig.probes.keys() == []
    resp = rig.http.get(f"{EP}/all")
    assert resp.status_code == 200 and resp.json() == {"Attr": []}
    # endpointhoststate too
    body = json.dumps({"hostName": "31.31.31.9", "state": "r\udcffed"})
    assert_error(rig.post_raw(body, f"{B}/config/endpointhoststate"), 400, "surrogate")


def test_control_characters_in_names_are_refused(rig: Rig) -> None:
    before = rig.snapshot()
    assert_error(rig.http.post(LB, json=rule(name="a\x00b")), 400, "name", "control character")
    assert_error(rig.http.post(LB, json=rule(name="a\nb")), 400, "control character")
    assert rig.snapshot() == before
    # probe payloads may need CR/LF
    ok = rule(probetype="tcp", probeport=8080, probereq="PING\r\n", proberesp="PONG\r\n")
    assert rig.http.post(LB, json=ok).status_code == 200


# ------------------------------------------------------------------- URLs


@pytest.mark.parametrize(
    "path",
    [
        f"{LB}/name/%ED%A0%80",  # a surrogate's UTF-8-style bytes: not UTF-8
        f"{LB}/name/%FF",
        f"{LB}/hosturl/%C0%AF/externalipaddress/20.20.20.1/port/2020/protocol/tcp",
        f"{EP}/epipaddress/31.31.31.1?name=%ED%A0%80",
    ],
)
def test_url_that_is_not_utf8_is_400(rig: Rig, path: str) -> None:
    rig.http.post(LB, json=rule(name="web"))
    before = rig.snapshot()
    assert_error(rig.http.delete(path), 400, "URL", "UTF-8")
    assert rig.snapshot() == before


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("probe_port=inf", ("probe_port",)),
        ("probe_port=1e400", ("probe_port",)),
        ("probe_port=nan", ("probe_port",)),
        ("probe_port=80.5", ("probe_port", "whole")),
        ("probe_port=-1", ("probe_port",)),
        ("name=" + "x" * (MAX_NAME_LEN + 1), ("name", "longer")),
        ("name=a%00b", ("name", "control")),
    ],
)
def test_endpoint_delete_query_is_checked(rig: Rig, query: str, words: tuple[str, ...]) -> None:
    assert_error(rig.http.delete(f"{EP}/epipaddress/31.31.31.1?{query}"), 400, *words)


def test_endpoint_delete_probe_port_as_number_still_works(rig: Rig) -> None:
    # loxilb's swagger types probe_port as a number: "8080.0" is a valid spelling
    rig.http.post(EP, json={"hostName": "31.31.31.1", "probeType": "tcp", "probePort": 8080})
    resp = rig.http.delete(f"{EP}/epipaddress/31.31.31.1?probe_type=tcp&probe_port=8080.0")
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize("port", ["+80", "8_0", "\u0668\u0660", " 80", "99999999999999999999"])
def test_lb_delete_port_must_be_ascii_digits(rig: Rig, port: str) -> None:
    rig.http.post(LB, json=rule(port=80))
    before = rig.snapshot()
    assert_error(rig.http.delete(f"{LB}/externalipaddress/20.20.20.1/port/{port}/protocol/tcp"),
                 400, "port")
    assert rig.snapshot() == before


# ------------------------------------------------------------------- nesting


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 1000, 100_000])
def test_deeply_nested_json_is_400(rig: Rig, depth: int) -> None:
    inner = "[" * depth + "]" * depth
    before = rig.snapshot()
    assert_error(rig.post_raw('{"serviceArguments": ' + inner + "}"), 400, "nested")
    assert_error(rig.post_raw('{"x": ' + '{"a": ' * depth + "1" + "}" * depth + "}"), 400,
                 "nested")
    assert_error(rig.post_raw("[" * depth + "]" * depth, EP), 400)
    assert rig.snapshot() == before


def test_nesting_within_limit_is_only_judged_by_the_model(rig: Rig) -> None:
    deep = "[" * (MAX_JSON_DEPTH - 2) + "]" * (MAX_JSON_DEPTH - 2)
    body = json.dumps(rule())[:-1] + ', "ignored": ' + deep + "}"
    assert rig.post_raw(body).status_code == 200


@pytest.mark.parametrize("const", ["NaN", "Infinity", "-Infinity"])
def test_non_json_number_constants_are_400(rig: Rig, const: str) -> None:
    body = json.dumps(rule()).replace('"port": 2020', f'"port": {const}')
    assert_error(rig.post_raw(body), 400, "malformed JSON", const)


def test_huge_integer_is_400(rig: Rig) -> None:
    body = json.dumps(rule()).replace('"port": 2020', '"port": ' + "9" * 5000)
    assert_error(rig.post_raw(body), 400)
    body = json.dumps(rule()).replace('"port": 2020', '"port": ' + "9" * 400)
    assert_error(rig.post_raw(body), 400, "port")


# ------------------------------------------------------------------- sizes


def test_ten_megabyte_name_is_413(rig: Rig) -> None:
    before = rig.snapshot()
    assert_error(rig.http.post(LB, json=rule(name="x" * 10_000_000)), 413, "larger than")
    assert rig.snapshot() == before
    assert rig.lb_all() == []


def test_body_over_limit_without_content_length_is_413(rig: Rig) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"serviceArguments": {"name": "'
        for _ in range(MAX_BODY_BYTES // 65536 + 1):
            yield b"x" * 65536
        yield b'"}}'

    before = rig.snapshot()
    assert_error(rig.http.post(LB, content=chunks(), headers=JSON_CT), 413)
    assert rig.snapshot() == before


def test_body_just_under_limit_is_parsed(rig: Rig) -> None:
    body = json.dumps(rule())
    padded = body[:-1] + " " * (MAX_BODY_BYTES - len(body)) + "}"
    assert len(padded) == MAX_BODY_BYTES
    assert rig.post_raw(padded).status_code == 200


@pytest.mark.parametrize(
    ("field", "limit"),
    [("name", MAX_NAME_LEN), ("externalIP", 64), ("host", 1024), ("probereq", 4096),
     ("protocol", 32)],
)
def test_string_length_limits(rig: Rig, field: str, limit: int) -> None:
    before = rig.snapshot()
    msg = assert_error(rig.http.post(LB, json=rule(**{field: "a" * (limit + 1)})), 400,
                       f"serviceArguments.{field}", f"at most {limit} characters")
    assert "aaaa" not in msg  # the value is not echoed back
    assert rig.snapshot() == before


def test_name_at_limit_is_accepted(rig: Rig) -> None:
    assert rig.http.post(LB, json=rule(name="n" * MAX_NAME_LEN)).status_code == 200


def test_list_length_limits(rig: Rig) -> None:
    before = rig.snapshot()
    many = [{"endpointIP": f"10.{i // 256}.{i % 256}.1", "targetPort": 80, "weight": 1}
            for i in range(2000)]
    assert_error(rig.http.post(LB, json=rule() | {"endpoints": many}), 400, "endpoints")
    srcs = [{"prefix": f"10.{i // 256}.{i % 256}.0/24"} for i in range(300)]
    assert_error(rig.http.post(LB, json=rule() | {"allowedSources": srcs}), 400,
                 "allowedSources", "at most 256")
    assert rig.snapshot() == before


# ------------------------------------------------------------------- strict types


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("port", True, ("serviceArguments.port", "integer", "got boolean")),
        ("port", False, ("serviceArguments.port", "got boolean")),
        ("port", "2020", ("serviceArguments.port", "got string")),
        ("port", 2020.0, ("serviceArguments.port", "got number")),
        ("block", True, ("serviceArguments.block",)),
        ("sel", True, ("serviceArguments.sel",)),
        ("bgp", 1, ("serviceArguments.bgp", "boolean", "got integer")),
        ("monitor", "true", ("serviceArguments.monitor", "got string")),
        ("name", 5, ("serviceArguments.name", "got integer")),
        ("name", None, ("serviceArguments.name", "got null")),
        ("externalIP", ["20.20.20.1"], ("serviceArguments.externalIP", "got array")),
    ],
)
def test_strict_types(rig: Rig, field: str, value: Any, words: tuple[str, ...]) -> None:
    before = rig.snapshot()
    assert_error(rig.http.post(LB, json=rule(**{field: value})), 400, *words)
    assert rig.snapshot() == before


def test_bool_weight_and_target_port_are_refused(rig: Rig) -> None:
    body = rule() | {"endpoints": [{"endpointIP": "31.31.31.1", "targetPort": True,
                                    "weight": 1}]}
    assert_error(rig.http.post(LB, json=body), 400, "endpoints[0].targetPort", "boolean")
    body = rule() | {"endpoints": [{"endpointIP": "31.31.31.1", "targetPort": 80,
                                    "weight": True}]}
    assert_error(rig.http.post(LB, json=body), 400, "endpoints[0].weight", "boolean")
    assert rig.lb_all() == []


def test_endpoint_body_types_are_strict(rig: Rig) -> None:
    body = {"hostName": "31.31.31.1", "probeType": "tcp", "probePort": True}
    assert_error(rig.http.post(EP, json=body), 400, "probePort", "boolean")
    body = {"hostName": "31.31.31.1", "state": "red", "epPort": "80", "epProto": "tcp"}
    assert_error(rig.http.post(f"{B}/config/endpointhoststate", json=body), 400, "epPort")
    assert rig.probes.keys() == []


# ------------------------------------------------------------------- content type / CSRF


@pytest.mark.parametrize(
    "headers",
    [
        {"content-type": "text/plain"},
        {"content-type": "text/plain; charset=utf-8"},
        {"content-type": "application/x-www-form-urlencoded"},
        {"content-type": "multipart/form-data; boundary=x"},
        {"content-type": "application/json; charset=latin-1"},
        {"content-type": "application/jsonx"},
        {},  # none at all
    ],
)
def test_post_without_json_content_type_is_415(rig: Rig, headers: dict[str, str]) -> None:
    before = rig.snapshot()
    resp = rig.http.post(LB, content=json.dumps(rule()).encode(), headers=headers)
    assert_error(resp, 415, "application/json")
    resp = rig.http.post(EP, content=b'{"hostName": "1.1.1.1"}', headers=headers)
    assert_error(resp, 415)
    assert rig.snapshot() == before


def test_cross_site_text_plain_post_cannot_delete_a_rule(rig: Rig) -> None:
    """A page on another origin can make a browser POST text/plain without a preflight.
    An update with an empty endpoint list deletes the rule, a detach (oper 2) empties it."""
    assert rig.http.post(LB, json=rule()).status_code == 200
    before = rig.snapshot()
    for body in (rule() | {"endpoints": []}, rule(oper=2)):
        resp = rig.http.post(LB, content=json.dumps(body), headers={"content-type":
                                                                      "text/plain"})
        assert_error(resp, 415)
    assert rig.snapshot() == before
    assert len(rig.lb_all()) == 1


def test_delete_preflight_is_refused_without_cors_headers(rig: Rig) -> None:
    """A cross-site DELETE needs a CORS preflight; the API grants none."""
    resp = rig.http.options(f"{LB}/all", headers={
        "origin": "http://evil.example", "access-control-request-method": "DELETE"})
    assert resp.status_code >= 400
    assert not any(h.lower().startswith("access-control-allow") for h in resp.headers)


@pytest.mark.parametrize("ct", ["application/json", "Application/JSON; charset=UTF-8",
                                "application/json;charset=\"utf-8\""])
def test_json_content_type_spellings_are_accepted(rig: Rig, ct: str) -> None:
    resp = rig.http.post(LB, content=json.dumps(rule()), headers={"content-type": ct})
    assert resp.status_code == 200, resp.text


def test_bodyless_requests_need_no_content_type(rig: Rig) -> None:
    rig.http.post(LB, json=rule())
    assert rig.http.get(f"{LB}/all").status_code == 200
    resp = rig.http.delete(f"{LB}/externalipaddress/20.20.20.1/port/2020/protocol/tcp")
    assert resp.status_code == 200
    # unknown routes and methods keep their own answers (not a 415 about the body)
    assert_error(rig.http.put(f"{LB}/all", content=b"x"), 405)
    assert_error(rig.http.post(f"{B}/nothing", content=b"x"), 404)


def test_pyloxi_clients_send_json_content_type() -> None:
    import httpx

    from pyloxi.cli.client import Client, Settings

    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("content-type", ""))
        return httpx.Response(200, json={"result": "Success"})

    with Client(Settings(), transport=httpx.MockTransport(handler)) as c:
        c.post("/config/loadbalancer", rule())
    assert seen == ["application/json"]


async def test_k8s_agent_client_sends_json_content_type() -> None:
    import httpx

    from pyloxi.client import AsyncClient

    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("content-type", ""))
        return httpx.Response(200, json={"result": "Success"})

    async with AsyncClient("http://127.0.0.1:1", transport=httpx.MockTransport(handler)) as c:
        await c.create_loadbalancer(rule())
    assert seen == ["application/json"]


# ------------------------------------------------------------------- state written before


def test_store_from_older_version_with_bad_name_skips_that_rule(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "lbconfig.json"
    good = rule(port=80, name="good")
    bad = rule(port=81, name="\ud800")
    long = rule(port=82, name="y" * 5000)
    path.write_text(json.dumps({"lbAttr": [good, bad, long]}))  # as the old version wrote it
    store = JsonStore(path)
    with caplog.at_level("ERROR", logger="pyloxi.store"):
        entries = store.load()
    assert [e.service_arguments.port for e in entries] == [80]
    assert len(store.skipped) == 2
    assert "20.20.20.1:81/tcp" in store.skipped[0] and "unicode" in store.skipped[0]
    assert "20.20.20.1:82/tcp" in store.skipped[1] and "256" in store.skipped[1]
    assert any(str(path) in r.getMessage() for r in caplog.records)
    # the API built on what was loaded answers normally
    engine = Engine(MemoryDatapath())
    assert engine.restore(entries) == []
    with TestClient(create_app(engine, version="0")) as http:
        resp = http.get(f"{LB}/all")
        assert resp.status_code == 200
        assert [r["serviceArguments"]["name"] for r in resp.json()["lbAttr"]] == ["good"]


def test_store_that_does_not_fit_the_schema_is_still_corrupt(tmp_path: Path) -> None:
    from pyloxi.store import StoreError

    path = tmp_path / "lbconfig.json"
    path.write_text(json.dumps({"lbAttr": [rule(name="\ud800"), {"serviceArguments": 5}]}))
    with pytest.raises(StoreError, match=str(path)):
        JsonStore(path).load()


# ------------------------------------------------------------------- properties

# Any JSON value, strings drawn from all of Unicode *including lone surrogates*, which
# json.dumps writes as \udXXX escapes (the way a hostile client would).
_any_char = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())
_plain = st.text(st.one_of(_any_char, st.sampled_from(["\x00", "\n", "\x7f", "é", "😀"])),
                 max_size=20)
_surrogate = st.integers(0xD800, 0xDFFF).map(chr)  # hypothesis' text() avoids these
_text = st.one_of(
    _plain,
    st.builds(lambda a, s, b: a + s + b, _plain, _surrogate, _plain),
    st.sampled_from(["x" * 300, "y" * 5000, "20.20.20.9", "tcp", "ping", "red"]),
)
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
    | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=12,
)
_SVC_FIELDS = ["externalIP", "privateIP", "port", "portMax", "protocol", "sel", "mode", "bgp",
               "monitor", "probetype", "probeport", "probereq", "proberesp", "probeTimeout",
               "probeRetries", "managed", "security", "block", "inactiveTimeOut", "name",
               "snat", "oper", "host", "proxyprotocolv2", "egress", "PORT", "Name"]
_EP_FIELDS = ["endpointIP", "targetPort", "weight", "state", "counter"]
_EPAPI_FIELDS = ["hostName", "name", "inactiveReTries", "probeType", "probeReq", "probeResp",
                 "probeDuration", "probePort"]


@pytest.fixture(scope="module")
def shared_rig() -> Iterator[Rig]:
    # One app for all examples (hypothesis runs many); each example compares before/after.
    dp = MemoryDatapath()
    engine = Engine(dp)
    probes = ProbeManager()
    app = create_app(engine, version="0", extra_routers=[endpoint_router(probes)])
    with TestClient(app, raise_server_exceptions=False) as http:
        yield Rig(http, engine, dp, probes)


def _check(rig: Rig, resp: Any, before: tuple[Any, ...]) -> None:
    assert resp.status_code != 500, resp.text
    assert resp.status_code in (200, 400, 403, 404, 409, 413), resp.text
    body = resp.json()
    if resp.status_code != 200:
        assert body["code"] == resp.status_code and isinstance(body["message"], str)
        assert rig.snapshot() == before
    # whatever happened, nobody else is poisoned
    assert rig.http.get(f"{LB}/all").status_code == 200
    assert rig.http.get(f"{EP}/all").status_code == 200


_settings = settings(max_examples=150, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture,
                                            HealthCheck.too_slow])


@_settings
@given(body=_json)
def test_any_json_body_never_500(shared_rig: Rig, body: Any) -> None:
    for path in (LB, EP, f"{B}/config/endpointhoststate"):
        before = shared_rig.snapshot()
        _check(shared_rig, shared_rig.post_raw(json.dumps(body), path), before)


@_settings
@given(field=st.sampled_from(_SVC_FIELDS), value=_json, port=st.integers(1, 65535))
def test_any_value_in_any_rule_field_never_500(
    shared_rig: Rig, field: str, value: Any, port: int
) -> None:
    before = shared_rig.snapshot()
    body = rule(port=port)
    body["serviceArguments"][field] = value
    resp = shared_rig.post_raw(json.dumps(body))
    _check(shared_rig, resp, before)


_SVC_TEXT_FIELDS = ["name", "host", "probereq", "proberesp", "probetype", "protocol",
                    "externalIP", "privateIP"]


@_settings
@given(field=st.sampled_from(_SVC_TEXT_FIELDS), value=_text, port=st.integers(1, 65535))
def test_any_string_in_any_rule_text_field_never_500(
    shared_rig: Rig, field: str, value: str, port: int
) -> None:
    body = rule(port=port)
    body["serviceArguments"][field] = value
    before = shared_rig.snapshot()
    _check(shared_rig, shared_rig.post_raw(json.dumps(body)), before)


@_settings
@given(field=st.sampled_from(_EP_FIELDS), value=_json)
def test_any_value_in_any_endpoint_field_never_500(shared_rig: Rig, field: str,
                                                   value: Any) -> None:
    body = rule(port=9)
    body["endpoints"][0][field] = value
    before = shared_rig.snapshot()
    _check(shared_rig, shared_rig.post_raw(json.dumps(body)), before)


@_settings
@given(field=st.sampled_from(_EPAPI_FIELDS), value=_json | _text)
def test_any_value_in_endpoint_api_never_500(shared_rig: Rig, field: str, value: Any) -> None:
    body = {"hostName": "31.31.31.1", "probeType": "tcp", "probePort": 80, field: value}
    before = shared_rig.snapshot()
    _check(shared_rig, shared_rig.post_raw(json.dumps(body), EP), before)


@_settings
@given(raw=st.binary(max_size=64))
def test_any_bytes_never_500(shared_rig: Rig, raw: bytes) -> None:
    before = shared_rig.snapshot()
    _check(shared_rig, shared_rig.post_raw(raw), before)


_segment = st.text(st.characters(min_codepoint=1, max_codepoint=0x10FFFF,
                                 blacklist_categories=["Cs"]), min_size=1, max_size=12)


@_settings
@given(name=_segment, ip=_segment, port=_segment, proto=_segment, raw=st.binary(min_size=1,
                                                                               max_size=8))
def test_any_delete_path_never_500(shared_rig: Rig, name: str, ip: str, port: str,
                                   proto: str, raw: bytes) -> None:
    from urllib.parse import quote

    def q(s: str) -> str:
        return quote(s, safe="")

    for path in (
        f"{LB}/name/{q(name)}",
        f"{LB}/name/{quote(raw, safe='')}",
        f"{LB}/externalipaddress/{q(ip)}/port/{q(port)}/protocol/{q(proto)}",
        f"{LB}/hosturl/{q(name)}/externalipaddress/{q(ip)}/port/{q(port)}/portmax/{q(port)}"
        f"/protocol/{q(proto)}",
        f"{EP}/epipaddress/{q(ip)}?name={q(name)}&probe_type={q(proto)}&probe_port={q(port)}",
        f"{LB}/externalipaddress/20.20.20.1/port/2020/protocol/tcp?block={q(port)}&bgp={q(name)}",
    ):
        before = shared_rig.snapshot()
        resp = shared_rig.http.delete(path)
        assert resp.status_code in (200, 400, 404), (path, resp.text)
        if resp.status_code != 200:
            assert shared_rig.snapshot() == before


@pytest.mark.parametrize("bad", ["\ud800", "1.2.3.4\x00", "1" * 100_000])
def test_engine_refuses_bad_address_built_in_code(bad: str) -> None:
    """An entry built without validation (model_construct, model_copy) still gets a 400."""
    from pyloxi.model.errors import InvalidInput
    from pyloxi.model.lb import LoadBalancerEntry

    entry = LoadBalancerEntry.model_validate(rule())
    svc = entry.service_arguments.model_copy(update={"external_ip": bad})
    engine = Engine(MemoryDatapath())
    with pytest.raises(InvalidInput) as exc:
        engine.add_rule(entry.model_copy(update={"service_arguments": svc}))
    assert len(exc.value.message) < 200
    assert engine.list_rules() == []


@pytest.mark.parametrize(("name", "words"), [("x" * 300, "at most 256"),
                                             ("a\tb", "control character")])
def test_cli_reports_a_refused_value_in_one_line(name: str, words: str) -> None:
    """The model's limits reach the CLI before any request: one line, exit 2, no traceback."""
    from typer.testing import CliRunner

    from pyloxi.cli.main import app as cli

    res = CliRunner().invoke(cli, ["create", "lb", "20.20.20.1", "--tcp=80:80",
                                   "--endpoints=31.31.31.1:1", f"--name={name}"],
                             env={"PYLOXI_API": "127.0.0.1:9"}, prog_name="pyloxi")
    assert res.exit_code == 2, (res.stdout, res.stderr)
    err = res.stderr.strip()
    assert err.startswith("Error: invalid name") and "\n" not in err and words in err, err


def test_wide_body_with_long_key_is_checked_without_copies(rig: Rig) -> None:
    """A 500 KB key over a 150,000-item list: error paths are built only on error (naively
    that is 75 GB of path strings)."""
    body = rule() | {"k" * 500_000: [1] * 150_000}
    raw = json.dumps(body)
    assert len(raw) < MAX_BODY_BYTES
    assert rig.post_raw(raw).status_code == 200
    bad = rule(port=2021) | {"k" * 500_000: [1] * 150_000 + ["\ud800"]}
    assert_error(rig.post_raw(json.dumps(bad)), 400, "[150000]", "surrogate")
