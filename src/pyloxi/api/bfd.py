"""Built-in BFD routes (loxilb handler/bfd.go):

- POST   /config/bfd                      body BfdEntry {instance, remoteIp, sourceIp,
                                          interval (us), retryCount}; the same peer again with
                                          a new interval/retryCount changes them (`set bfd`)
- GET    /config/bfd/all                  {"Attr": [BfdGetEntry]}
- DELETE /config/bfd/remoteIP/{remote_ip} query `instance` (optional)

The api layer does not import pyloxi.cluster; the daemon hands in its pyloxi.cluster.bfd.Bfd
through the BfdControl protocol. The routes are coroutines: the sessions live on the event
loop, and are changed from it.
"""

from __future__ import annotations

from typing import Any, Protocol

from fastapi import APIRouter, Query, Request
from pydantic import ValidationError

from pyloxi.api.errors import SUCCESS, LoxiRoute, validation_reason
from pyloxi.api.guard import read_json_object
from pyloxi.model.bfd import BfdEntry, BfdGetEntry, BfdList
from pyloxi.model.errors import InvalidInput


class BfdControl(Protocol):
    def add(self, entry: BfdEntry) -> None: ...
    def delete(self, remote: str, instance: str = "") -> None: ...
    def list(self) -> list[BfdGetEntry]: ...


def bfd_router(bfd: BfdControl) -> APIRouter:
    router = APIRouter(prefix="/config/bfd", tags=["ha"], route_class=LoxiRoute)

    @router.post("", summary="Create (or change) a BFD session with a peer",
                 openapi_extra={"requestBody": {"required": True, "content": {
                     "application/json": {
                         "schema": BfdEntry.model_json_schema(by_alias=True)}}}})
    async def create_bfd(request: Request) -> dict[str, str]:
        data = await read_json_object(await request.body(), "a BfdEntry")
        try:
            entry = BfdEntry.model_validate(data)
        except ValidationError as exc:
            raise InvalidInput(validation_reason(exc.errors())) from None
        bfd.add(entry)
        return SUCCESS

    @router.get("/all", summary="BFD sessions and their state", response_model=BfdList)
    async def get_bfd() -> dict[str, Any]:
        return BfdList(attr=bfd.list()).wire()

    @router.delete("/remoteIP/{remote_ip}", summary="Delete a BFD session")
    async def delete_bfd(remote_ip: str,
                         instance: str = Query(default="", max_length=256)) -> dict[str, str]:
        bfd.delete(remote_ip, instance)
        return SUCCESS

    return router
