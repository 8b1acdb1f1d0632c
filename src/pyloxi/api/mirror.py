"""Mirror routes (loxilb handler/mirror.go):

- POST   /config/mirror               body MirrorEntry {mirrorIdent, mirrorInfo, targetObject}
- GET    /config/mirror/all           {"mirrAttr": [MirrorGetEntry]} (adds sync; pyloxi adds
                                      counter: "<packets>:<bytes>" copied to the mirror port)
- DELETE /config/mirror/ident/{ident}

Built around the mirror table passed in (pyloxi.engine.mirror.Mirrors, seen through
`MirrorControl`).
"""

from __future__ import annotations

from typing import Any, Protocol

from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from pyloxi.api.errors import SUCCESS, LoxiRoute, validation_reason
from pyloxi.api.guard import read_json_object
from pyloxi.model.errors import InvalidInput
from pyloxi.model.mirror import MirrorEntry, MirrorGetEntry, MirrorList


class MirrorControl(Protocol):
    def add(self, entry: MirrorEntry) -> None: ...
    def delete(self, ident: str) -> None: ...
    def list(self) -> list[MirrorGetEntry]: ...


_BODY_OPENAPI: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": MirrorEntry.model_json_schema(by_alias=True)}}}}


def mirror_router(mirrors: MirrorControl) -> APIRouter:
    router = APIRouter(prefix="/config/mirror", tags=["mirror"], route_class=LoxiRoute)

    @router.post("", summary="Create (or change the mirrorInfo of) a mirror",
                 openapi_extra=_BODY_OPENAPI)
    async def create_mirror(request: Request) -> dict[str, str]:
        data = await read_json_object(await request.body(), "a MirrorEntry")
        try:
            entry = MirrorEntry.model_validate(data)
        except ValidationError as exc:
            raise InvalidInput(validation_reason(exc.errors())) from None
        await run_in_threadpool(mirrors.add, entry)
        return SUCCESS

    @router.get("/all", summary="List every mirror, with its counters",
                response_model=MirrorList)
    def list_mirrors() -> dict[str, Any]:
        return {"mirrAttr": [e.wire() for e in mirrors.list()]}

    @router.delete("/ident/{ident}", summary="Delete a mirror")
    def delete_mirror(ident: str) -> dict[str, str]:
        mirrors.delete(ident)
        return SUCCESS

    return router
