"""GTP user sessions and ULCL filters (loxilb handler/session.go):

- GET    /config/session/all                                   {"sessionAttr": []}
- POST   /config/session                                       SessionEntry  -> 501
- DELETE /config/session/ident/{ident}                         -> 501
- GET    /config/sessionulcl/all                               {"ulclAttr": []}
- POST   /config/sessionulcl                                   SessionUlClEntry -> 501
- DELETE /config/sessionulcl/ident/{ident}/ulclAddress/{ip}    -> 501

pyloxi has no GTP-U datapath (loxilb encapsulates and decapsulates in llb_kern_sessfwd.c).
A session accepted but not enforced would tell a 5G control plane that a UE's traffic is
tunnelled when it is not, so a valid request is refused with 501 and a clear message (a
malformed one still gets 400, as from loxilb). The lists answer empty, which is the truth,
so `loxicmd get session` and `save -a` keep working.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ValidationError

from pyloxi.api.errors import LoxiRoute, validation_reason
from pyloxi.api.guard import read_json_object
from pyloxi.model.errors import InvalidInput, PyloxiError
from pyloxi.model.session import SessionEntry, SessionList, SessionUlClEntry, UlclList

NOT_SUPPORTED = ("GTP user sessions and ULCL filters are not supported: pyloxi has no GTP-U "
                 "datapath (docs/api.md \"GTP sessions and ULCL\")")


def _not_supported() -> PyloxiError:
    return PyloxiError(501, NOT_SUPPORTED)


def _body(model: type[BaseModel]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": model.model_json_schema(by_alias=True)}}}}


async def _check(request: Request, model: type[BaseModel], what: str) -> None:
    data = await read_json_object(await request.body(), what)
    try:
        model.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(validation_reason(exc.errors())) from None


def _ident(ident: str) -> None:
    if not ident or len(ident) > 256 or not ident.isprintable():
        raise InvalidInput(f"invalid ident {ident[:64]!r}")


def session_router() -> APIRouter:
    router = APIRouter(prefix="/config", tags=["session"], route_class=LoxiRoute)

    @router.get("/session/all", summary="GTP user sessions (none: no GTP-U datapath)",
                response_model=SessionList)
    async def get_sessions() -> dict[str, Any]:
        return SessionList().wire()

    @router.post("/session", summary="Create a GTP user session (501: not supported)",
                 openapi_extra=_body(SessionEntry))
    async def create_session(request: Request) -> dict[str, str]:
        await _check(request, SessionEntry, "a SessionEntry")
        raise _not_supported()

    @router.delete("/session/ident/{ident}", summary="Delete a GTP user session (501)")
    async def delete_session(ident: str) -> dict[str, str]:
        _ident(ident)
        raise _not_supported()

    @router.get("/sessionulcl/all", summary="ULCL filters (none: no GTP-U datapath)",
                response_model=UlclList)
    async def get_ulcls() -> dict[str, Any]:
        return UlclList().wire()

    @router.post("/sessionulcl", summary="Create a ULCL filter (501: not supported)",
                 openapi_extra=_body(SessionUlClEntry))
    async def create_ulcl(request: Request) -> dict[str, str]:
        await _check(request, SessionUlClEntry, "a SessionUlClEntry")
        raise _not_supported()

    @router.delete("/sessionulcl/ident/{ident}/ulclAddress/{ip_address}",
                   summary="Delete a ULCL filter (501)")
    async def delete_ulcl(ident: str, ip_address: str) -> dict[str, str]:
        _ident(ident)
        try:
            ipaddress.ip_address(ip_address)
        except ValueError:
            raise InvalidInput(f"invalid ulclAddress {ip_address[:64]!r}") from None
        raise _not_supported()

    return router
