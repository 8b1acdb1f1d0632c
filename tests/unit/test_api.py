"""REST API (/netlox/v1) against the real Engine and the in-memory datapath, over ASGI."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from pyloxi.api import create_app
from pyloxi.datapath.memory import MemoryDatapath
from pyloxi.engine.engine import Engine
from pyloxi.engine.program import EndpointCounters, Flow, ServiceCounters

B = "/netlox/v1"
LB = f"{B}/config/loadbalancer"


def rule(
    vip: str = "20.20.20.1",
    port: int = 2020,
    proto: str = "tcp",
    eps: tuple[str, ...] = ("31.31.31.1", "32.32.32.1"),
    **svc: Any,
) -> dict[str, Any]:
    return {
        "serviceArguments": {"externalIP": vip, "port": port, "protocol": proto, **svc},
        "endpoints": [{"endpointIP": ip, "targetPort": 8080, "weight": 1} for ip in eps],
    }


class Env:
    def __init__(self) -> None:
        self.dp = MemoryDatapath()
        self.engine = Engine(self.dp)
        self.app = create_app(self.engine, version="9.9.9", build_info="test-build")
        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://pyloxi"
        )

    async def rules(self) -> list[dict[str, Any]]:
        resp = await self.http.get(f"{LB}/all")
        assert resp.status_code == 200
        return resp.json()["lbAttr"]


@pytest.fixture
async def env():
    e = Env()
    yield e
    await e.http.aclose()


def assert_error(resp: httpx.Response, code: int, *words: str) -> str:
    assert resp.status_code == code, resp.text
    body = resp.json()
    assert set(body) == {"code", "message", "result"}
    assert body["code"] == code
    msg = body["message"]
    assert msg and "\n" not in msg
    for w in words:
        assert w.lower() in msg.lower(), msg
    return msg


# ------------------------------------------------------------------- create / list


async def test_create_then_list(env: Env) -> None:
    resp = await env.http.post(LB, json=rule(name="web"))
    assert resp.status_code == 200
    assert resp.json() == {"result": "Success"}
    rules = await env.rules()
    assert len(rules) == 1
    svc = rules[0]["serviceArguments"]
    assert svc["externalIP"] == "20.20.20.1"
    assert svc["port"] == 2020
    assert svc["protocol"] == "tcp"
    assert svc["name"] == "web"
    eps = rules[0]["endpoints"]
    assert [e["endpointIP"] for e in eps] == ["31.31.31.1", "32.32.32.1"]
    for e in eps:
        assert e["targetPort"] == 8080
        assert e["state"] == "active"
        pkts, _, byts = e["counter"].partition(":")
        assert pkts.isdigit() and byts.isdigit()


async def test_list_shows_datapath_counters(env: Env) -> None:
    await env.http.post(LB, json=rule())
    [prog] = env.engine.programs()
    env.dp.counters[prog.svc_id] = ServiceCounters(
        packets=15, bytes=1500, endpoints=(EndpointCounters(10, 1000), EndpointCounters(5, 500))
    )
    [r] = await env.rules()
    assert [e["counter"] for e in r["endpoints"]] == ["10:1000", "5:500"]


async def test_datapath_failure_is_reported_and_rolled_back(env: Env) -> None:
    env.dp.fail_next = OSError(28, "map full")
    resp = await env.http.post(LB, json=rule())
    assert resp.status_code >= 400
    assert resp.json()["code"] == resp.status_code
    assert await env.rules() == []


async def test_list_empty(env: Env) -> None:
    resp = await env.http.get(f"{LB}/all")
    assert resp.status_code == 200
    assert resp.json() == {"lbAttr": []}


async def test_keys_in_any_letter_case(env: Env) -> None:
    body = {
        "SERVICEARGUMENTS": {
            "EXTERNALIP": "20.20.20.1",
            "Port": 80,
            "PROTOCOL": "TCP",
            "BGP": False,
            "Monitor": True,
            "InactiveTimeout": 30,
            "NAME": "shout",
        },
        "Endpoints": [{"ENDPOINTIP": "31.31.31.1", "targetport": 8080, "Weight": 3}],
    }
    resp = await env.http.post(LB, json=body)
    assert resp.status_code == 200, resp.text
    [r] = await env.rules()
    svc = r["serviceArguments"]
    assert (svc["protocol"], svc["monitor"], svc["inactiveTimeOut"], svc["name"]) == (
        "tcp",
        True,
        30,
        "shout",
    )
    assert r["endpoints"][0]["weight"] == 3
    assert r["endpoints"][0]["targetPort"] == 8080


async def test_identical_repost_is_409(env: Env) -> None:
    assert (await env.http.post(LB, json=rule())).status_code == 200
    assert_error(await env.http.post(LB, json=rule()), 409, "exists")
    assert len(await env.rules()) == 1


async def test_repost_with_other_endpoints_updates(env: Env) -> None:
    await env.http.post(LB, json=rule())
    resp = await env.http.post(LB, json=rule(eps=("33.33.33.1",)))
    assert resp.status_code == 200
    [r] = await env.rules()
    assert [e["endpointIP"] for e in r["endpoints"]] == ["33.33.33.1"]


async def test_engine_validation_error_is_400(env: Env) -> None:
    assert_error(await env.http.post(LB, json=rule(vip="300.1.1.1")), 400, "externalIP")
    assert_error(await env.http.post(LB, json=rule(sel=6)), 400)
    assert await env.rules() == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        # a value out of the field's own range: the model's reason, with what was sent
        (rule(port=70000), "invalid serviceArguments.port: Input should be less than or equal "
                           "to 65535, got 70000"),
        (rule(sel=9), "invalid serviceArguments.sel: 9 is not a valid sel (0 rr, 1 hash, "
                      "2 priority, 3 persist, 4 lc, 5 n2, 6 n3)"),
        (rule(proto="gre"), "invalid serviceArguments.protocol: unknown protocol 'gre': "
                            "expected one of tcp, udp, sctp, icmp"),
        (rule(probetype="dns"), "invalid serviceArguments.probetype: unknown probe type 'dns': "
                                "expected one of tcp, udp, sctp, ping, http, https, none"),
        (rule(vip="20.20.20"), "invalid serviceArguments.externalIP: '20.20.20' is not an IP "
                               "address"),
        (rule() | {"allowedSources": [{"prefix": "10.0.0.0/33"}]},
         "invalid allowedSources[0].prefix: '10.0.0.0/33' is not an IP prefix"),
        # what the engine does not do (yet)
        (rule(vip="2001:db8::1", eps=("2001:db8::2", "31.31.31.1")),
         "malformed-service mixed-family error"),
        (rule(eps=("2001:db8::2",)), "malformed-service nat46 error"),
        (rule(vip="fe80::1", eps=("2001:db8::2",)),
         "externalIP fe80::1: link-local address not allowed"),
        (rule(vip="2001:db8::1", eps=("::ffff:31.31.31.1",)),
         "endpointIP ::ffff:31.31.31.1: IPv4-mapped address, write the IPv4 form 31.31.31.1"),
        (rule(vip="2001:db8::1", eps=("2001:db8::2",))
         | {"allowedSources": [{"prefix": "10.0.0.0/8"}]},
         "allowedSources 10.0.0.0/8: not of the externalIP's family (IPv6)"),
        (rule(vip="2001:db8::1", eps=("31.31.31.1",)), "no local address toward 31.31.31.1"),
        (rule(sel=5), "sel n2 not supported"),
        (rule(proto="sctp") | {"secondaryIPs": [{"secondaryIP": "21.0.0.1"}] * 2},
         "secondaryIP 21.0.0.1: duplicate of the VIP or another secondaryIP"),
    ],
)
async def test_reasons_name_the_field_and_the_value(
    env: Env, body: dict[str, Any], message: str
) -> None:
    msg = assert_error(await env.http.post(LB, json=body), 400)
    assert msg.startswith(message), msg
    assert await env.rules() == []


# ------------------------------------------------------------------- garbage in


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"", ("empty",)),
        (b"{not json", ("malformed", "json")),
        (b"\xff\xfe", ("malformed",)),
        (b"[]", ("object", "list")),
        (b'"text"', ("object",)),
        (b"42", ("object",)),
        (b"null", ("object",)),
        (b"{}", ("serviceArguments",)),
        (b'{"serviceArguments": 5}', ("serviceArguments",)),
        (b'{"serviceArguments": {"port": 80}}', ("serviceArguments.externalIP",)),
        (
            b'{"serviceArguments": {"externalIP": "1.1.1.1", "port": "http"}}',
            ("serviceArguments.port",),
        ),
        (
            json.dumps(rule() | {"endpoints": [{"endpointIP": "1.1.1.1", "weight": "x"}]}).encode(),
            ("endpoints[0].weight",),
        ),
        (json.dumps(rule() | {"endpoints": "all"}).encode(), ("endpoints",)),
    ],
)
async def test_garbage_body_is_400_and_engine_untouched(
    env: Env, content: bytes, words: tuple[str, ...]
) -> None:
    resp = await env.http.post(LB, content=content, headers={"content-type": "application/json"})
    assert_error(resp, 400, *words)
    assert env.engine.list_rules() == []
    assert env.dp.calls == []


async def test_validation_names_field_not_fastapi_422(env: Env) -> None:
    resp = await env.http.post(LB, json={"serviceArguments": {"externalIP": "1.1.1.1"}})
    msg = assert_error(resp, 400)
    assert msg == "invalid serviceArguments.port: field required"


# ------------------------------------------------------------------- deletes


async def test_delete_by_key(env: Env) -> None:
    await env.http.post(LB, json=rule())
    await env.http.post(LB, json=rule(port=2021))
    resp = await env.http.delete(f"{LB}/externalipaddress/20.20.20.1/port/2020/protocol/tcp")
    assert resp.status_code == 200 and resp.json() == {"result": "Success"}
    assert [r["serviceArguments"]["port"] for r in await env.rules()] == [2021]


async def test_delete_missing_is_404(env: Env) -> None:
    resp = await env.http.delete(f"{LB}/externalipaddress/20.20.20.1/port/2020/protocol/tcp")
    assert_error(resp, 404)


async def test_delete_by_key_with_block_and_bgp(env: Env) -> None:
    await env.http.post(LB, json=rule(block=7))
    path = f"{LB}/externalipaddress/20.20.20.1/port/2020/protocol/tcp"
    assert_error(await env.http.delete(path), 404)  # block is part of the key
    resp = await env.http.delete(path, params={"block": 7, "bgp": "true"})
    assert resp.status_code == 200
    assert await env.rules() == []


async def test_delete_protocol_any_case(env: Env) -> None:
    await env.http.post(LB, json=rule(proto="udp"))
    resp = await env.http.delete(f"{LB}/externalipaddress/20.20.20.1/port/2020/protocol/UDP")
    assert resp.status_code == 200


async def test_delete_port_range(env: Env) -> None:
    await env.http.post(LB, json=rule(port=8080, portMax=8090))
    [r] = await env.rules()
    assert r["serviceArguments"]["portMax"] == 8090
    assert_error(
        await env.http.delete(f"{LB}/externalipaddress/20.20.20.1/port/8080/protocol/tcp"), 404
    )
    resp = await env.http.delete(
        f"{LB}/externalipaddress/20.20.20.1/port/8080/portmax/8090/protocol/tcp"
    )
    assert resp.status_code == 200
    assert await env.rules() == []


async def test_delete_hosturl_any_means_no_host(env: Env) -> None:
    await env.http.post(LB, json=rule())
    await env.http.post(LB, json=rule(port=3000, portMax=3005))
    resp = await env.http.delete(
        f"{LB}/hosturl/any/externalipaddress/20.20.20.1/port/2020/protocol/tcp"
    )
    assert resp.status_code == 200
    resp = await env.http.delete(
        f"{LB}/hosturl/any/externalipaddress/20.20.20.1/port/3000/portmax/3005/protocol/tcp"
    )
    assert resp.status_code == 200
    assert await env.rules() == []


async def test_delete_hosturl_names_host(env: Env) -> None:
    await env.http.post(LB, json=rule(host="example.org"))
    assert_error(
        await env.http.delete(f"{LB}/externalipaddress/20.20.20.1/port/2020/protocol/tcp"), 404
    )
    resp = await env.http.delete(
        f"{LB}/hosturl/example.org/externalipaddress/20.20.20.1/port/2020/protocol/tcp"
    )
    assert resp.status_code == 200


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("externalipaddress/20.20.20/port/80/protocol/tcp", ("ip_address",)),
        ("externalipaddress/not-an-ip/port/80/protocol/tcp", ("ip_address",)),
        ("externalipaddress/20.20.20.1/port/http/protocol/tcp", ("port",)),
        ("externalipaddress/20.20.20.1/port/70000/protocol/tcp", ("port", "range")),
        ("externalipaddress/20.20.20.1/port/-1/protocol/tcp", ("port",)),
        ("externalipaddress/20.20.20.1/port/80/protocol/gre", ("proto",)),
        ("externalipaddress/20.20.20.1/port/80/portmax/x/protocol/tcp", ("portmax",)),
        ("externalipaddress/20.20.20.1/port/80/protocol/tcp?block=x", ("block",)),
        ("externalipaddress/20.20.20.1/port/80/protocol/tcp?block=-1", ("block",)),
        ("externalipaddress/20.20.20.1/port/80/protocol/tcp?bgp=maybe", ("bgp",)),
    ],
)
async def test_delete_bad_path_params_are_400(env: Env, path: str, words: tuple[str, ...]) -> None:
    await env.http.post(LB, json=rule(port=80))
    assert_error(await env.http.delete(f"{LB}/{path}"), 400, *words)
    assert len(await env.rules()) == 1


async def test_delete_by_name(env: Env) -> None:
    await env.http.post(LB, json=rule(name="web"))
    await env.http.post(LB, json=rule(port=443, name="web"))
    await env.http.post(LB, json=rule(port=22, name="ssh"))
    resp = await env.http.delete(f"{LB}/name/web")
    assert resp.status_code == 200 and resp.json() == {"result": "Success"}
    assert [r["serviceArguments"]["name"] for r in await env.rules()] == ["ssh"]
    assert_error(await env.http.delete(f"{LB}/name/web"), 404)


async def test_delete_all(env: Env) -> None:
    for port in (80, 81, 82):
        await env.http.post(LB, json=rule(port=port))
    resp = await env.http.delete(f"{LB}/all")
    assert resp.status_code == 200 and resp.json() == {"result": "Success"}
    assert await env.rules() == []
    assert (await env.http.delete(f"{LB}/all")).status_code == 200  # nothing left: still fine


# ------------------------------------------------------------------- conntrack, version, misc


async def test_conntrack(env: Env) -> None:
    assert (await env.http.get(f"{B}/config/conntrack/all")).json() == {"ctAttr": []}
    await env.http.post(LB, json=rule(name="web"))
    [prog] = env.engine.programs()
    flow = Flow(
        src="10.0.0.9", dst="20.20.20.1", sport=40000, dport=2020, proto=6, state="est",
        svc_id=prog.svc_id, ep_ip="31.31.31.1", ep_port=8080, snat_ip=None, snat_port=0,
        packets=12, bytes=3400,
    )  # fmt: skip
    env.dp.flow_table.append(flow)
    resp = await env.http.get(f"{B}/config/conntrack/all")
    assert resp.status_code == 200
    [ct] = resp.json()["ctAttr"]
    assert ct["sourceIP"] == "10.0.0.9"
    assert ct["destinationIP"] == "20.20.20.1"
    assert (ct["sourcePort"], ct["destinationPort"]) == (40000, 2020)
    assert ct["protocol"] == "tcp"
    assert ct["conntrackState"] == "est"
    assert (ct["packets"], ct["bytes"]) == (12, 3400)
    assert ct["servName"] == "web"
    assert "31.31.31.1" in ct["conntrackAct"]


async def test_version(env: Env) -> None:
    resp = await env.http.get(f"{B}/version")
    assert resp.status_code == 200
    assert resp.json() == {"version": "9.9.9", "buildInfo": "test-build"}


async def test_default_build_info() -> None:
    app = create_app(Engine(MemoryDatapath()), version="1.2.3")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://x"
    ) as http:
        info = (await http.get(f"{B}/version")).json()
    assert info["version"] == "1.2.3"
    assert "1.2.3" in info["buildInfo"]


async def test_openapi_served(env: Env) -> None:
    resp = await env.http.get(f"{B}/swagger.json")
    assert resp.status_code == 200
    spec = resp.json()
    paths = spec["paths"]
    for p in (
        "/config/loadbalancer",
        "/config/loadbalancer/all",
        "/config/loadbalancer/name/{lb_name}",
        "/config/loadbalancer/externalipaddress/{ip_address}/port/{port}/protocol/{proto}",
        "/config/loadbalancer/externalipaddress/{ip_address}/port/{port}/portmax/{portmax}"
        "/protocol/{proto}",
        "/config/loadbalancer/hosturl/{hosturl}/externalipaddress/{ip_address}/port/{port}"
        "/protocol/{proto}",
        "/config/loadbalancer/hosturl/{hosturl}/externalipaddress/{ip_address}/port/{port}"
        "/portmax/{portmax}/protocol/{proto}",
        "/config/conntrack/all",
        "/version",
    ):
        assert B + p in paths, p
    post = paths[f"{B}/config/loadbalancer"]["post"]
    ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    name = ref.rsplit("/", 1)[1]
    body_schema = spec["components"]["schemas"][name]
    assert "serviceArguments" in body_schema["properties"]
    assert "422" not in post["responses"]
    assert "400" in post["responses"]
    docs = await env.http.get(f"{B}/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert (await env.http.get("/docs")).status_code == 404


async def test_unknown_route_and_method_use_loxilb_body(env: Env) -> None:
    assert_error(await env.http.get(f"{B}/config/nothing"), 404)
    assert_error(await env.http.put(f"{LB}/all"), 405)


async def test_unexpected_engine_error_is_500(
    env: Env, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def boom() -> list[Any]:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(env.engine, "list_rules", boom)
    with caplog.at_level("ERROR", logger="pyloxi.api"):
        resp = await env.http.get(f"{LB}/all")
    assert_error(resp, 500, "disk on fire")
    assert any("disk on fire" in (r.exc_text or "") or r.exc_info for r in caplog.records)


async def test_extra_routers_are_mounted() -> None:
    from fastapi import APIRouter

    extra = APIRouter()

    @extra.get("/config/endpoint/all")
    def eps() -> dict[str, Any]:
        return {"Attr": []}

    app = create_app(Engine(MemoryDatapath()), version="0", extra_routers=[extra])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://x"
    ) as http:
        resp = await http.get(f"{B}/config/endpoint/all")
    assert resp.json() == {"Attr": []}


async def test_heavy_handlers_run_in_threadpool(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Listing (O(rules) datapath reads) stays off the event loop; creates run on it (cheap)."""
    import threading

    seen: list[str] = []
    real = env.engine.list_rules

    def spy() -> Any:
        seen.append(threading.current_thread().name)
        return real()

    monkeypatch.setattr(env.engine, "list_rules", spy)
    assert (await env.http.get(LB + "/all")).status_code == 200
    assert seen and seen[0] != threading.main_thread().name
