"""Endpoint liveness routes (loxilb handler/endpoint.go):

- POST   /config/endpoint                      body EndPoint: monitor a host (or override a
                                               rule-made probe by naming it like the rule's key)
- GET    /config/endpoint/all                  {"Attr": [EndPointGetEntry]}
- DELETE /config/endpoint/epipaddress/{ip}     query name, probe_type, probe_port
- POST   /config/endpointhoststate             body EndPointHostState: external verdict

The routes are built around a probe manager passed in (pyloxi.probes.ProbeManager, duck-typed so
the API layer does not import the probes layer). Handlers are `async def`: they run in the event
loop that also runs the manager.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ValidationError

from pyloxi.api.errors import SUCCESS, LoxiRoute, validation_reason
from pyloxi.model.endpoint import EndPoint, EndPointGetEntry, EndPointHostState, EndPointList
from pyloxi.model.errors import InvalidInput


class EndpointManager(Protocol):
    def api_add(self, ep: EndPoint) -> Any: ...
    def api_delete(self, ip: str, name: str = "", probe_type: str = "",
                   probe_port: int = 0) -> None: ...
    def api_list(self) -> list[EndPointGetEntry]: ...
    def api_host_state(self, hs: EndPointHostState) -> int: ...


def _body_openapi(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True)
    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": schema}}}}


async def _read(request: Request, model: type[BaseModel], what: str) -> Any:
    """The body through the case-folding model validator (any key casing, as loxilb)."""
    raw = await request.body()
    if not raw.strip():
        raise InvalidInput(f"malformed request: empty body, expected an {what} object")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"malformed JSON body: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"malformed request: body must be a JSON object, "
                           f"got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(validation_reason(exc.errors())) from None


def endpoint_router(manager: EndpointManager) -> APIRouter:
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
        try:
            port = int(float(probe_port or "0"))
        except ValueError:
            raise InvalidInput(f"invalid probe_port {probe_port!r}: not a number") from None
        if not 0 <= port <= 65535:
            raise InvalidInput(f"invalid probe_port {port}: must be 0-65535")
        manager.api_delete(ip_address, name=name, probe_type=probe_type, probe_port=port)
        return SUCCESS

    @router.post("/endpointhoststate", summary="Set an external verdict on a host",
                 openapi_extra=_body_openapi(EndPointHostState))
    async def set_host_state(request: Request) -> dict[str, str]:
        hs = await _read(request, EndPointHostState, "EndPointHostState")
        manager.api_host_state(hs)
        return SUCCESS

    return router
