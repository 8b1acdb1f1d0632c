"""Endpoint liveness routes (loxilb handler/endpoint.go):

- POST   /config/endpoint                      body EndPoint: monitor a host (or override a
                                               rule-made probe by naming it like the rule's key)
- GET    /config/endpoint/all                  {"Attr": [EndPointGetEntry]}
- DELETE /config/endpoint/epipaddress/{ip}     query name, probe_type, probe_port
- POST   /config/endpointhoststate             body EndPointHostState: external verdict

The routes are built around a probe manager passed in (pyloxi.probes.ProbeManager, reached
through pyloxi.api.probe_adapter so the API layer does not import the probes layer). Handlers are
`async def`: they run in the event loop that also runs the manager.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ValidationError

from pyloxi.api.errors import SUCCESS, LoxiRoute, validation_reason
from pyloxi.api.guard import read_json_object, show_value
from pyloxi.api.probe_adapter import EndpointAdapter, ProbeBook
from pyloxi.model.base import text_problem
from pyloxi.model.endpoint import EndPoint, EndPointHostState, EndPointList
from pyloxi.model.errors import InvalidInput
from pyloxi.model.limits import MAX_NAME_LEN, MAX_WORD_LEN, PORT_MAX


def _body_openapi(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True)
    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": schema}}}}


async def _read(request: Request, model: type[BaseModel], what: str) -> Any:
    """The body through the case-folding model validator (any key casing, as loxilb)."""
    data = await read_json_object(await request.body(), f"an {what}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(validation_reason(exc.errors())) from None


def _probe_port(value: str) -> int:
    """loxilb's swagger types probe_port as a *number*, so "8080.0" is accepted; it must still
    be a finite whole number in 0-PORT_MAX (inf or 1e400 must not reach int())."""
    try:
        number = float(value or "0")
    except ValueError:
        raise InvalidInput(f"invalid probe_port {show_value(value)}: not a number") from None
    if not math.isfinite(number):
        raise InvalidInput(f"invalid probe_port {show_value(value)}: not a finite number")
    if not number.is_integer():
        raise InvalidInput(f"invalid probe_port {show_value(value)}: not a whole number")
    if not 0 <= number <= PORT_MAX:
        raise InvalidInput(f"invalid probe_port {show_value(value)}: must be 0-{PORT_MAX}")
    return int(number)


def _query_text(what: str, value: str, limit: int) -> str:
    if len(value) > limit:
        raise InvalidInput(f"invalid {what}: longer than {limit} characters")
    problem = text_problem(value)
    if problem is not None:
        raise InvalidInput(f"invalid {what}: {problem[1]}")
    return value


def endpoint_router(probes: ProbeBook[Any]) -> APIRouter:
    manager = EndpointAdapter(probes)
    router = APIRouter(prefix="/config", tags=["endpoint"], route_class=LoxiRoute)

    @router.post("/endpoint", summary="Add (or update) an endpoint to monitor",
                 openapi_extra=_body_openapi(EndPoint))
    async def add_endpoint(request: Request) -> dict[str, str]:
        ep = await _read(request, EndPoint, "EndPoint")
        manager.api_add(ep)
        return SUCCESS

    @router.get("/endpoint/all", summary="Endpoints monitored and their state")
    async def get_endpoints() -> dict[str, Any]:
        return EndPointList(attr=manager.api_list()).wire()

    @router.delete("/endpoint/epipaddress/{ip_address}", summary="Stop monitoring an endpoint")
    async def delete_endpoint(
        ip_address: str,
        name: str = Query(default=""),
        probe_type: str = Query(default=""),
        probe_port: str = Query(default="0"),
    ) -> dict[str, str]:
        port = _probe_port(probe_port)
        name = _query_text("name", name, MAX_NAME_LEN)
        probe_type = _query_text("probe_type", probe_type, MAX_WORD_LEN)
        manager.api_delete(ip_address, name=name, probe_type=probe_type, probe_port=port)
        return SUCCESS

    @router.post("/endpointhoststate", summary="Set an external verdict on a host",
                 openapi_extra=_body_openapi(EndPointHostState))
    async def set_host_state(request: Request) -> dict[str, str]:
        hs = await _read(request, EndPointHostState, "EndPointHostState")
        manager.api_host_state(hs)
        return SUCCESS

    return router
