"""HA state routes (loxilb handler/cluster.go):

- POST /config/cistate        body CIStatusEntry {instance, state, vip}: this node's state in
                              an HA instance (keepalived's notify script, kube-loxilb)
- GET  /config/cistate/all    {"Attr": [CIStatusGetEntry]}

The api layer does not import pyloxi.cluster (it sits above the api); the daemon hands in its
ClusterState, reached through the HAStates protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from fastapi import APIRouter, Request
from pydantic import ValidationError

from pyloxi.api.errors import SUCCESS, LoxiRoute, validation_reason
from pyloxi.api.guard import read_json_object
from pyloxi.model.cluster import CIStatusEntry, CIStatusGetEntry, CIStatusList
from pyloxi.model.errors import InvalidInput


class InstanceView(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def vip(self) -> str: ...


class HAStates(Protocol):
    """The part of pyloxi.cluster.ClusterState these routes use."""

    def set_state(self, instance: str, state: str, vip: str = "") -> bool: ...

    def instances(self) -> Sequence[InstanceView]: ...


def cistate_router(ha: HAStates) -> APIRouter:
    router = APIRouter(prefix="/config", tags=["ha"], route_class=LoxiRoute)

    @router.post("/cistate", summary="Set this node's state in a cluster instance",
                 openapi_extra={"requestBody": {"required": True, "content": {
                     "application/json": {
                         "schema": CIStatusEntry.model_json_schema(by_alias=True)}}}})
    async def set_cistate(request: Request) -> dict[str, str]:
        data = await read_json_object(await request.body(), "a CIStatusEntry")
        try:
            entry = CIStatusEntry.model_validate(data)
        except ValidationError as exc:
            raise InvalidInput(validation_reason(exc.errors())) from None
        ha.set_state(entry.instance, entry.state, entry.vip)
        return SUCCESS

    @router.get("/cistate/all", summary="This node's state in each cluster instance",
                response_model=CIStatusList)
    async def get_cistate() -> dict[str, Any]:
        rows = [CIStatusGetEntry(instance=i.name, state=i.state, vip=i.vip)
                for i in ha.instances()]
        return CIStatusList(attr=rows).wire()

    return router
