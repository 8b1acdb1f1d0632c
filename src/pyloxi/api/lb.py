"""Load-balancer rule routes: /config/loadbalancer (loxilb handler/loadbalancer.go)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from pyloxi.api.deps import EngineDep, get_engine
from pyloxi.api.errors import (
    SUCCESS,
    LoxiRoute,
    error_response,
    unexpected_error,
    validation_reason,
)
from pyloxi.api.guard import read_json_object, show_value
from pyloxi.model.enums import PROTOCOLS, Protocol
from pyloxi.model.errors import InvalidInput, PyloxiError
from pyloxi.model.lb import LoadBalancerEntry, LoadBalancerList
from pyloxi.model.limits import PORT_MAX, UINT32_MAX

router = APIRouter(prefix="/config/loadbalancer", tags=["loadbalancer"], route_class=LoxiRoute)

# The request body is parsed by hand (see read_lb_entry), so its schema is declared here.
_LB_BODY_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/LoadBalancerEntry"}}
        },
    }
}


async def read_lb_entry(request: Request) -> LoadBalancerEntry:
    """The POST body as a LoadBalancerEntry (see `parse_lb_entry`)."""
    return await parse_lb_entry(await request.body())


async def parse_lb_entry(body: bytes) -> LoadBalancerEntry:
    """A POST body as a LoadBalancerEntry, through the case-folding model validator.

    FastAPI's own body parsing matches aliases exactly; loxicmd sends "BGP" and "Monitor", and Go
    clients may send any casing, so the raw JSON goes through `model_validate` instead. The
    RequestGuard middleware has already checked Content-Type and size; `read_json_object`
    checks the JSON itself (depth, Unicode), in a thread when the body is large.
    """
    data = await read_json_object(body, "a LoadbalanceEntry")
    try:
        return LoadBalancerEntry.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(validation_reason(exc.errors())) from None


async def add_rule(engine: Any, entry: LoadBalancerEntry) -> None:
    """`engine.add_rule`, from the event loop without a worker thread when the engine lock is
    free: the change is applied inline (validation, table, map writes: no waiting) and the
    store's writer calls back once it is on disk. The thread-pool hop it replaces (two thread
    switches and GIL hand-offs per create) was a fifth of a create's CPU. When the lock is
    busy (a bulk delete, a liveness round) or the store cannot call back, a worker thread
    waits, as before: the event loop must keep serving everyone else."""
    begin = getattr(engine, "begin_add", None)
    staged = begin(entry) if begin is not None else None
    if staged is None:
        await run_in_threadpool(engine.add_rule, entry)
        return
    loop = asyncio.get_running_loop()
    durable: asyncio.Future[None] = loop.create_future()

    def wake() -> None:  # in the store's writer thread (or here, if already durable)
        loop.call_soon_threadsafe(_resolve, durable)

    if staged.when_durable(wake):
        try:
            await durable
        except asyncio.CancelledError:
            # nobody left to answer; the change still has to be settled (or undone)
            loop.run_in_executor(None, _settle_quietly, engine, staged)
            raise
        if engine.settle(staged, blocking=False):
            return
    await run_in_threadpool(engine.settle, staged)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _settle_quietly(engine: Any, staged: Any) -> None:
    with contextlib.suppress(PyloxiError):  # undone, and logged by the engine
        engine.settle(staged)


@router.post("", summary="Create or update a load-balancer rule", openapi_extra=_LB_BODY_OPENAPI)
async def create_lb(request: Request) -> dict[str, str]:
    # Served by CreateLane in the app (below); this route stays for the OpenAPI document and
    # for an app built without the lane. The request alone, no dependencies.
    entry = await read_lb_entry(request)
    await add_rule(get_engine(request), entry)
    return SUCCESS


_CREATE_ROUTE = next(r for r in router.routes
                     if isinstance(r, APIRoute) and "POST" in (r.methods or ()))
_SUCCESS_BODY = json.dumps(SUCCESS, separators=(",", ":")).encode()
_SUCCESS_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-length", str(len(_SUCCESS_BODY)).encode()),
                (b"content-type", b"application/json")],
}


class CreateLane:
    """ASGI middleware, innermost (under the guard, auth, CORS and the request counter):
    `POST <path>` (the create route above) answered here, below FastAPI's exception
    middleware, router and route machinery, which cost about a third of a create's CPU. Same
    body parsing, engine call and answers (loxilb's error bodies) as the route; the route is
    put in the scope for the request counter, as the router does."""

    def __init__(self, app: ASGIApp, *, path: str) -> None:
        self.app = app
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        scope["route"] = _CREATE_ROUTE
        body = await _read_body(receive)
        if body is None:
            return  # the client went away mid-body: nobody to answer
        try:
            entry = await parse_lb_entry(body)
            await add_rule(scope["app"].state.engine, entry)
        except PyloxiError as exc:
            response = error_response(exc.code, exc.message)
        except ValidationError as exc:  # as LoxiRoute answers it
            response = error_response(400, validation_reason(exc.errors()))
        except Exception as exc:
            response = unexpected_error("POST", self.path, exc)
        else:
            await send(_SUCCESS_START)
            await send({"type": "http.response.body", "body": _SUCCESS_BODY})
            return
        await response(scope, receive, send)


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


@router.get("/all", summary="List every load-balancer rule", response_model=LoadBalancerList)
def list_lb(engine: EngineDep) -> JSONResponse:
    rules = [e.wire() for e in engine.list_rules()]
    for rule in rules:
        # loxilb's model omits an empty probetype (`omitempty`); "" is not in its swagger's enum
        if rule["serviceArguments"].get("probetype") == "":
            del rule["serviceArguments"]["probetype"]
    return JSONResponse({"lbAttr": rules})


@router.delete("/all", summary="Delete every load-balancer rule")
def delete_all_lb(engine: EngineDep) -> dict[str, str]:
    engine.delete_all()
    return SUCCESS


@router.delete("/name/{lb_name}", summary="Delete every rule with this name")
def delete_lb_by_name(engine: EngineDep, lb_name: str) -> dict[str, str]:
    engine.delete_by_name(lb_name)
    return SUCCESS


def _vip(ip_address: str) -> str:
    try:
        return str(ipaddress.ip_address(ip_address))
    except ValueError:
        raise InvalidInput(
            f"invalid ip_address: {show_value(ip_address)} is not an IP address"
        ) from None


def _port(name: str, value: str) -> int:
    # ASCII digits only: int() would also take "+80", "8_0", " 80" and Unicode digits ("٨٠").
    text = value.removeprefix("-")
    if not (text.isascii() and text.isdigit()) or len(text) > 10:
        raise InvalidInput(f"invalid {name}: {show_value(value)} is not an integer")
    port = int(value)
    if not 0 <= port <= PORT_MAX:
        raise InvalidInput(f"invalid {name}: {port} is out of range 0-{PORT_MAX}")
    return port


def _proto(proto: str) -> Protocol:
    try:
        return Protocol(proto.lower())
    except ValueError:
        raise InvalidInput(
            f"invalid proto: {show_value(proto)}, expected one of {', '.join(PROTOCOLS)}"
        ) from None


BlockQ = Annotated[int, Query(ge=0, le=UINT32_MAX, description="block (mark) of the rule")]
BgpQ = Annotated[bool, Query(description="accepted for compatibility; BGP withdraw is implicit")]


def _delete(
    engine: Any, hosturl: str, ip_address: str, port: str, portmax: str, proto: str, block: int
) -> dict[str, str]:
    host = "" if hosturl == "any" else hosturl
    engine.delete_rule(
        _vip(ip_address),
        _port("port", port),
        _proto(proto),
        port_max=_port("portmax", portmax),
        block=block,
        host=host,
    )
    return SUCCESS


@router.delete(
    "/externalipaddress/{ip_address}/port/{port}/protocol/{proto}",
    summary="Delete one rule by its key",
)
def delete_lb(
    engine: EngineDep,
    ip_address: str,
    port: str,
    proto: str,
    block: BlockQ = 0,
    bgp: BgpQ = False,
) -> dict[str, str]:
    return _delete(engine, "any", ip_address, port, "0", proto, block)


@router.delete(
    "/externalipaddress/{ip_address}/port/{port}/portmax/{portmax}/protocol/{proto}",
    summary="Delete one port-range rule by its key",
)
def delete_lb_range(
    engine: EngineDep,
    ip_address: str,
    port: str,
    portmax: str,
    proto: str,
    block: BlockQ = 0,
    bgp: BgpQ = False,
) -> dict[str, str]:
    return _delete(engine, "any", ip_address, port, portmax, proto, block)


@router.delete(
    "/hosturl/{hosturl}/externalipaddress/{ip_address}/port/{port}/protocol/{proto}",
    summary="Delete one rule by its key, with host URL ('any' = none)",
)
def delete_lb_host(
    engine: EngineDep,
    hosturl: str,
    ip_address: str,
    port: str,
    proto: str,
    block: BlockQ = 0,
    bgp: BgpQ = False,
) -> dict[str, str]:
    return _delete(engine, hosturl, ip_address, port, "0", proto, block)


@router.delete(
    "/hosturl/{hosturl}/externalipaddress/{ip_address}/port/{port}/portmax/{portmax}/protocol/{proto}",
    summary="Delete one port-range rule by its key, with host URL ('any' = none)",
)
def delete_lb_host_range(
    engine: EngineDep,
    hosturl: str,
    ip_address: str,
    port: str,
    portmax: str,
    proto: str,
    block: BlockQ = 0,
    bgp: BgpQ = False,
) -> dict[str, str]:
    return _delete(engine, hosturl, ip_address, port, portmax, proto, block)
