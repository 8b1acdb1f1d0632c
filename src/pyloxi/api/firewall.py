"""Firewall routes (loxilb handler/firewall.go):

- POST   /config/firewall       body FirewallEntry {ruleArguments, opts}
- GET    /config/firewall/all   {"fwAttr": [FirewallEntry]} (opts.counter: "<packets>:<bytes>")
- DELETE /config/firewall       the rule key as query parameters (sourceIP, destinationIP,
                                min/maxSourcePort, min/maxDestinationPort, protocol, portName,
                                preference)

Built around the rule table passed in (pyloxi.engine.firewall.Firewall, seen through
`FirewallControl`).
"""

from __future__ import annotations

from typing import Any, Protocol

from fastapi import APIRouter, Request
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from pyloxi.api.errors import SUCCESS, LoxiRoute, validation_reason
from pyloxi.api.guard import read_json_object
from pyloxi.model.errors import InvalidInput
from pyloxi.model.firewall import FirewallEntry, FirewallList, FirewallRuleEntry

_QUERY = ("sourceIP", "destinationIP", "minSourcePort", "maxSourcePort", "minDestinationPort",
          "maxDestinationPort", "protocol", "portName", "preference")
_INTS = {"minSourcePort", "maxSourcePort", "minDestinationPort", "maxDestinationPort",
         "protocol", "preference"}


# The query is read by hand (_rule_from_query: loxilb's parameter names), so declared here.
_DELETE_OPENAPI: dict[str, Any] = {"parameters": [
    {"name": n, "in": "query", "required": False,
     "schema": {"type": "integer", "minimum": 0} if n in _INTS else {"type": "string"}}
    for n in _QUERY]}


class FirewallControl(Protocol):
    def add(self, entry: FirewallEntry) -> None: ...
    def delete(self, args: FirewallRuleEntry) -> None: ...
    def list(self) -> list[FirewallEntry]: ...


def _body_openapi(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True)
    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": schema}}}}


def _rule_from_query(request: Request) -> FirewallRuleEntry:
    data: dict[str, Any] = {}
    for name in _QUERY:
        value = request.query_params.get(name)
        if value is None:
            continue
        if name in _INTS:
            if not (value.isascii() and value.isdigit()) or len(value) > 10:
                raise InvalidInput(f"invalid {name}: {value[:40]!r} is not an integer")
            data[name] = int(value)
        else:
            data[name] = value
    try:
        return FirewallRuleEntry.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(validation_reason(exc.errors())) from None


def firewall_router(fw: FirewallControl) -> APIRouter:
    router = APIRouter(prefix="/config/firewall", tags=["firewall"], route_class=LoxiRoute)

    @router.post("", summary="Create a firewall rule", openapi_extra=_body_openapi(FirewallEntry))
    async def create_fw(request: Request) -> dict[str, str]:
        data = await read_json_object(await request.body(), "a FirewallEntry")
        try:
            entry = FirewallEntry.model_validate(data)
        except ValidationError as exc:
            raise InvalidInput(validation_reason(exc.errors())) from None
        await run_in_threadpool(fw.add, entry)
        return SUCCESS

    @router.get("/all", summary="List every firewall rule, with its counters",
                response_model=FirewallList)
    def list_fw() -> dict[str, Any]:
        return {"fwAttr": [e.wire() for e in fw.list()]}

    @router.delete("", summary="Delete a firewall rule (its key as query parameters)",
                   openapi_extra=_DELETE_OPENAPI)
    def delete_fw(request: Request) -> dict[str, str]:
        fw.delete(_rule_from_query(request))
        return SUCCESS

    return router
