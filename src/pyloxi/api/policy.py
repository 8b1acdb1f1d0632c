"""QoS policer routes (loxilb handler/policy.go):

- POST   /config/policy               body PolicyEntry {policyIdent, policyInfo, targetObject}
- GET    /config/policy/all           {"polAttr": [PolicyEntry]} (with pyloxi's `stats`)
- DELETE /config/policy/ident/{ident}

Built around the policer table passed in (pyloxi.engine.policer.Policers, seen through
`PolicyControl`).
"""

from __future__ import annotations

from typing import Any, Protocol

from fastapi import APIRouter, Request
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from pyloxi.api.errors import SUCCESS, LoxiRoute, validation_reason
from pyloxi.api.guard import read_json_object
from pyloxi.model.errors import InvalidInput
from pyloxi.model.policy import PolicyEntry, PolicyList


class PolicyControl(Protocol):
    def add(self, entry: PolicyEntry) -> None: ...
    def delete(self, ident: str) -> None: ...
    def list(self) -> list[PolicyEntry]: ...


def _body_openapi(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True)
    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": schema}}}}


def policy_router(pols: PolicyControl) -> APIRouter:
    router = APIRouter(prefix="/config/policy", tags=["policy"], route_class=LoxiRoute)

    @router.post("", summary="Create (or replace) a QoS policer",
                 openapi_extra=_body_openapi(PolicyEntry))
    async def create_policy(request: Request) -> dict[str, str]:
        data = await read_json_object(await request.body(), "a PolicyEntry")
        try:
            entry = PolicyEntry.model_validate(data)
        except ValidationError as exc:
            raise InvalidInput(validation_reason(exc.errors())) from None
        await run_in_threadpool(pols.add, entry)
        return SUCCESS

    @router.get("/all", summary="List every QoS policer, with its counters",
                response_model=PolicyList)
    def list_policy() -> dict[str, Any]:
        return {"polAttr": [e.wire() for e in pols.list()]}

    @router.delete("/ident/{ident}", summary="Delete a QoS policer")
    def delete_policy(ident: str) -> dict[str, str]:
        pols.delete(ident)
        return SUCCESS

    return router
