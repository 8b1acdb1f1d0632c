"""pyloxi.client over httpx mock transports: requests sent, answers read, one error type per
meaning, the same for Client and AsyncClient."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from pyloxi.client import (
    ApiError,
    AsyncClient,
    BadRequest,
    CapacityExceeded,
    Client,
    Conflict,
    NotFound,
    ServerError,
    Unreachable,
    rule_body,
)
from pyloxi.client.errors import error_class
from pyloxi.model.lb import Endpoint, LoadBalancerEntry, ServiceArguments

BASE = "http://lb.test:11111"
Handler = Callable[[httpx.Request], httpx.Response]


def entry() -> LoadBalancerEntry:
    return LoadBalancerEntry(
        serviceArguments=ServiceArguments(externalIP="20.0.0.1", port=80, protocol="tcp"),
        endpoints=[Endpoint(endpointIP="10.0.0.1", targetPort=8080, weight=1)],
    )


class Recorder:
    """A handler answering `answer` and remembering every request."""

    def __init__(self, answer: httpx.Response | Exception) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]


async def call(kind: str, handler: Handler, op: str, *args: Any, **kw: Any) -> Any:
    """Run one operation through the sync or the async client."""
    transport = httpx.MockTransport(handler)
    if kind == "sync":
        with Client(BASE, transport=transport) as c:
            return getattr(c, op)(*args, **kw)
    async with AsyncClient(BASE, transport=transport) as ac:
        return await getattr(ac, op)(*args, **kw)


both = pytest.mark.parametrize("kind", ["sync", "async"])


def loxi_error(status: int, message: str) -> httpx.Response:
    return httpx.Response(status, json={"code": status, "message": message, "result": message})


# ---- requests --------------------------------------------------------------------------------


@both
async def test_create_sends_the_rule_body(kind: str) -> None:
    rec = Recorder(httpx.Response(200, json={"result": "Success"}))
    assert await call(kind, rec, "create_loadbalancer", entry()) is None
    req = rec.last
    assert (req.method, str(req.url)) == ("POST", f"{BASE}/netlox/v1/config/loadbalancer")
    assert req.headers["content-type"] == "application/json"
    assert req.headers["accept"] == "application/json"
    body = json.loads(req.content)
    assert body == rule_body(entry())
    assert body["endpoints"] == [{"endpointIP": "10.0.0.1", "targetPort": 8080, "weight": 1}]
    assert "secondaryIPs" not in body and "allowedSources" not in body


@both
async def test_delete_paths_are_quoted_segments(kind: str) -> None:
    rec = Recorder(httpx.Response(200, json={"result": "Success"}))
    await call(kind, rec, "delete_loadbalancer", "fd00::1", 80, "tcp", block=7, port_max=90,
               bgp=True)
    assert rec.last.url.raw_path.decode() == (
        "/netlox/v1/config/loadbalancer/externalipaddress/fd00::1/port/80/portmax/90"
        "/protocol/tcp?block=7&bgp=true")
    await call(kind, rec, "delete_loadbalancer", "20.0.0.1", 80, "udp", host="a/b")
    assert rec.last.url.raw_path.decode() == (
        "/netlox/v1/config/loadbalancer/hosturl/a%2Fb/externalipaddress/20.0.0.1/port/80"
        "/protocol/udp?block=0")
    await call(kind, rec, "delete_loadbalancer_by_name", "ns/svc x")
    assert rec.last.url.raw_path.decode() == "/netlox/v1/config/loadbalancer/name/ns%2Fsvc%20x"
    await call(kind, rec, "delete_endpoint", "10.0.0.5", probe_type="tcp", probe_port=8080)
    assert rec.last.method == "DELETE"
    assert rec.last.url.raw_path.decode() == (
        "/netlox/v1/config/endpoint/epipaddress/10.0.0.5?probe_port=8080&probe_type=tcp")


@both
async def test_list_answers_are_unwrapped_any_key_case(kind: str) -> None:
    rules = [{"serviceArguments": {"name": "a"}}]
    rec = Recorder(httpx.Response(200, json={"LBATTR": rules}))
    assert await call(kind, rec, "list_loadbalancers") == rules
    assert rec.last.url.path == "/netlox/v1/config/loadbalancer/all"
    rec = Recorder(httpx.Response(200, json={"ctAttr": None}))
    assert await call(kind, rec, "list_conntrack") == []
    rec = Recorder(httpx.Response(200, json={"Attr": [{"name": "e"}]}))
    assert await call(kind, rec, "list_endpoints") == [{"name": "e"}]
    rec = Recorder(httpx.Response(200, content=b""))
    assert await call(kind, rec, "get", "/version") == {}


# ---- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("status,cls", [
    (400, BadRequest), (413, BadRequest), (415, BadRequest), (403, CapacityExceeded),
    (404, NotFound), (409, Conflict), (500, ServerError), (503, ServerError), (405, ApiError),
])
@both
async def test_error_type_per_status(kind: str, status: int, cls: type[ApiError]) -> None:
    rec = Recorder(loxi_error(status, "nope"))
    with pytest.raises(cls) as info:
        await call(kind, rec, "create_loadbalancer", entry())
    exc = info.value
    assert type(exc) is cls
    assert (exc.status, exc.code, exc.message) == (status, status, "nope")
    assert (exc.method, exc.url) == ("POST", f"{BASE}/netlox/v1/config/loadbalancer")
    assert str(exc) == f"POST {BASE}/netlox/v1/config/loadbalancer: HTTP {status}: nope"


@pytest.mark.parametrize("status,message,cls", [
    # loxilb: HTTP 200 with the error in `result`
    (200, "lbrule-exists error", Conflict),
    (200, "lbrule-exist error: cant modify rule security mode", Conflict),
    (200, "lbrule not-exists error", NotFound),
    (200, "no-rule error", NotFound),
    (200, "Error: Only Hash Selection criteria allowed for DSR mode", ApiError),
    (500, "lbrule-exists error", Conflict),
    # a status that says what happened wins over words
    (400, "secondaryIPs of an existing rule cannot be modified", BadRequest),
    (409, "lbrule-exists error: 20.0.0.1:80/tcp", Conflict),
    (404, "rule does not exist", NotFound),
])
def test_words_decide_only_where_the_status_does_not(status: int, message: str,
                                                     cls: type[ApiError]) -> None:
    assert error_class(status, message) is cls


@both
async def test_loxilb_style_failure_answered_200(kind: str) -> None:
    rec = Recorder(httpx.Response(200, json={"result": "lbrule-exists error"}))
    with pytest.raises(Conflict) as info:
        await call(kind, rec, "create_loadbalancer", entry())
    assert info.value.status == 200
    # a GET's body is data, not a verdict
    rec = Recorder(httpx.Response(200, json={"result": "anything"}))
    assert await call(kind, rec, "get", "/config/whatever") == {"result": "anything"}


@both
async def test_intent_already_holds(kind: str) -> None:
    rec = Recorder(loxi_error(409, "lbrule-exists error"))
    assert await call(kind, rec, "create_loadbalancer", entry(), exist_ok=True) is None
    rec = Recorder(loxi_error(404, "no such rule"))
    assert await call(kind, rec, "delete_loadbalancer", "20.0.0.1", 80, "tcp",
                      missing_ok=True) is None
    assert await call(kind, rec, "delete_loadbalancer_by_name", "x", missing_ok=True) is None
    with pytest.raises(NotFound):
        await call(kind, rec, "delete_loadbalancer", "20.0.0.1", 80, "tcp")
    # other failures still fail
    rec = Recorder(loxi_error(400, "bad"))
    with pytest.raises(BadRequest):
        await call(kind, rec, "create_loadbalancer", entry(), exist_ok=True)


@both
async def test_error_message_sources(kind: str) -> None:
    rec = Recorder(httpx.Response(502, text="Bad gateway\nsecond line"))
    with pytest.raises(ServerError, match="^.*: Bad gateway$"):
        await call(kind, rec, "version")
    rec = Recorder(httpx.Response(500, content=b""))
    with pytest.raises(ServerError) as info:
        await call(kind, rec, "version")
    assert info.value.message == "HTTP 500 Internal Server Error"
    rec = Recorder(httpx.Response(422, json={"detail": "unprocessable"}))
    with pytest.raises(BadRequest, match="unprocessable"):
        await call(kind, rec, "version")


@pytest.mark.parametrize("exc,needle", [
    (httpx.ConnectError("refused"), f"cannot connect to the pyloxi API at {BASE}: refused"),
    (httpx.ReadTimeout("slow"), f"no answer from the pyloxi API at {BASE} within 10s"),
    (httpx.RemoteProtocolError("garbage"), f"request to {BASE} failed: garbage"),
])
@both
async def test_unreachable(kind: str, exc: Exception, needle: str) -> None:
    with pytest.raises(Unreachable) as info:
        if kind == "sync":
            await call(kind, Recorder(exc), "version")
        else:
            async with AsyncClient(BASE, timeout=10,
                                   transport=httpx.MockTransport(Recorder(exc))) as ac:
                await ac.version()
    err = info.value
    assert (err.status, err.code, err.message) == (None, None, needle)
    assert err.url == f"{BASE}/netlox/v1/version"


@both
async def test_non_json_answer_means_no_api_there(kind: str) -> None:
    rec = Recorder(httpx.Response(200, text="<html>hello</html>"))
    with pytest.raises(Unreachable, match="answered with non-JSON data"):
        await call(kind, rec, "version")


def test_timeout_reaches_the_transport() -> None:
    seen: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        return httpx.Response(200, json={})

    with Client(BASE, timeout=2.5, transport=httpx.MockTransport(handler)) as c:
        c.version()
    assert seen == [{"connect": 2.5, "read": 2.5, "write": 2.5, "pool": 2.5}]


def test_cli_client_is_the_shared_client_configured_by_settings() -> None:
    from pyloxi.cli.client import ApiError as CliApiError
    from pyloxi.cli.client import Client as CliClient
    from pyloxi.cli.client import Settings

    assert CliApiError is ApiError
    rec = Recorder(httpx.Response(200, json={"version": "x"}))
    settings = Settings(server="::1", port=1234, timeout=3.0)
    with CliClient(settings, transport=httpx.MockTransport(rec)) as c:
        assert c.get("/version") == {"version": "x"}
        assert c.timeout == 3.0 and c.settings is settings
    assert str(rec.last.url) == "http://[::1]:1234/netlox/v1/version"
