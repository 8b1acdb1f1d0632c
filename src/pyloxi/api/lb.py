"""Load-balancer rule routes: /config/loadbalancer (loxilb handler/loadbalancer.go)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
from collections.abc import Awaitable
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


class CreateBatcher:
    """Collects the creates parsed in one event-loop turn and applies them together
    (`Engine.begin_add_many`): one engine lock, one store submission, one wake-up from the
    store's writer for all of them, instead of one of each per create. Under 16 concurrent
    clients the creates of a turn arrive together; a lone client's create is a batch of one,
    applied one loop turn later (a `call_soon`), as before otherwise.

    Each create gets its own answer: its own error if it failed (nothing of it applied),
    success once the batch's store commit is durable, the 500 of a store failure (which
    undoes the whole batch) otherwise. The batch is settled whether or not its requests are
    still waiting (a client gone mid-batch changes nothing for the others)."""

    # creates per batch at most: bounds one turn's work (and the loop's pause) under a burst
    MAX_BATCH = 64

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self._waiting: list[tuple[LoadBalancerEntry, asyncio.Future[None]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def add(self, entry: LoadBalancerEntry) -> asyncio.Future[None]:
        """The create's outcome: None once durable, or its error."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        if not self._waiting:
            self._loop = loop
            loop.call_soon(self._flush)
        self._waiting.append((entry, future))
        return future

    def _flush(self) -> None:
        todo, self._waiting = self._waiting, []
        while todo:
            batch, todo = todo[:self.MAX_BATCH], todo[self.MAX_BATCH:]
            self._apply(batch)

    def _apply(self, batch: list[tuple[LoadBalancerEntry, asyncio.Future[None]]]) -> None:
        loop = self._loop
        assert loop is not None
        try:
            begun = self.engine.begin_add_many([entry for entry, _ in batch])
        except Exception as exc:  # a bug: answered (500), never left waiting
            _resolve_all([future for _, future in batch], exc)
            return
        if begun is None:  # the lock is held long (a bulk delete): each in a worker thread
            for entry, future in batch:
                _chain(loop.create_task(add_rule(self.engine, entry)), future)
            return
        staged, errors = begun
        futures = []
        for (_, future), error in zip(batch, errors, strict=True):
            if error is None:
                futures.append(future)
            elif not future.done():
                future.set_exception(error)
        if not futures:
            return

        def wake() -> None:  # in the store's writer thread (or here, if already durable)
            loop.call_soon_threadsafe(self._durable, staged, futures)

        if not staged.when_durable(wake):
            loop.create_task(self._settle_in_thread(staged, futures))

    def _durable(self, staged: Any, futures: list[asyncio.Future[None]]) -> None:
        if self.engine.settle(staged, blocking=False):
            _resolve_all(futures, None)
            return
        assert self._loop is not None
        self._loop.create_task(self._settle_in_thread(staged, futures))

    async def _settle_in_thread(self, staged: Any, futures: list[asyncio.Future[None]]) -> None:
        try:
            await run_in_threadpool(self.engine.settle, staged)
        except Exception as exc:  # a store failure: every create of the batch was undone
            _resolve_all(futures, exc)
            return
        _resolve_all(futures, None)


def _resolve_all(futures: list[asyncio.Future[None]], error: Exception | None) -> None:
    for future in futures:
        if future.done():  # its request was cancelled (client gone)
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


def _chain(task: asyncio.Task[None], future: asyncio.Future[None]) -> None:
    def done(t: asyncio.Task[None]) -> None:
        if future.done():
            if not t.cancelled():
                t.exception()  # retrieved: nobody waits for it any more
            return
        if t.cancelled():
            future.cancel()
        elif t.exception() is not None:
            future.set_exception(t.exception())  # type: ignore[arg-type]
        else:
            future.set_result(None)

    task.add_done_callback(done)


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
        self._batcher: CreateBatcher | None = None

    def _add(self, engine: Any, entry: LoadBalancerEntry) -> Awaitable[None]:
        if getattr(engine, "begin_add_many", None) is None:  # an engine that cannot batch
            return add_rule(engine, entry)
        if self._batcher is None or self._batcher.engine is not engine:
            self._batcher = CreateBatcher(engine)
        return self._batcher.add(entry)

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
            # A future (not a task) shared with the batch: cancelling this request (client
            # gone) leaves the batch's answer to the others and its settling as they are.
            await self._add(scope["app"].state.engine, entry)
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
