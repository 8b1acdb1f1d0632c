"""BGP routes (loxilb handler/gobgp.go):

- POST   /config/bgp/global            body BGPGlobalConfig {routerId, localAs, ...}
- GET    /config/bgp/neigh/all         {"bgpNeiAttr": [BGPNeighGetEntry]}
- POST   /config/bgp/neigh             body BGPNeigh {ipAddress, remoteAs, remotePort, ...}
- DELETE /config/bgp/neigh/{ip}        query remoteAs
- GET|DELETE /config/bgp/policy/definedsets/{defineset_type}/{type_name}  ("all": every set)
- POST   /config/bgp/policy/definedsets/{defineset_type}  body BGPPolicyDefinedSetsMod
- GET    /config/bgp/policy/definitions/all   {"bgpPolicyAttr": [BGPPolicyDefinitionsMod]}
- POST   /config/bgp/policy/definitions       body BGPPolicyDefinitionsMod
- DELETE /config/bgp/policy/definitions/{policy_name}
- POST|DELETE /config/bgp/policy/apply        body BGPApplyPolicyToNeighborMod

Built around a speaker passed in (pyloxi.bgp.BgpSpeaker, seen through the `BgpControl`
protocol so the API layer does not import the bgp layer); None: the daemon runs without
--bgp, and every route answers 503. Handlers are plain `def`: the speaker blocks on gRPC.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, Protocol, TypeVar

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from pyloxi.api.errors import SUCCESS, LoxiRoute, validation_reason
from pyloxi.api.guard import read_json_object
from pyloxi.model.bgp import (
    BGPApplyPolicyToNeighborMod,
    BGPGlobalConfig,
    BGPNeigh,
    BGPNeighGetEntry,
    BGPNeighList,
    BGPPolicyDefinedSetGetEntry,
    BGPPolicyDefinedSetList,
    BGPPolicyDefinedSetsMod,
    BGPPolicyDefinitionsList,
    BGPPolicyDefinitionsMod,
)
from pyloxi.model.errors import InvalidInput, PyloxiError


class BgpControl(Protocol):
    def api_set_global(self, cfg: BGPGlobalConfig) -> None: ...
    def api_add_neighbor(self, neigh: BGPNeigh) -> None: ...
    def api_delete_neighbor(self, ip: str, remote_as: int) -> None: ...
    def api_neighbors(self) -> list[BGPNeighGetEntry]: ...
    def api_add_defined_set(self, kind: str, s: BGPPolicyDefinedSetsMod) -> None: ...
    def api_delete_defined_set(self, kind: str, name: str) -> None: ...
    def api_defined_sets(self, kind: str, name: str) -> list[BGPPolicyDefinedSetGetEntry]: ...
    def api_add_policy(self, d: BGPPolicyDefinitionsMod) -> None: ...
    def api_delete_policy(self, name: str) -> None: ...
    def api_policies(self) -> list[BGPPolicyDefinitionsMod]: ...
    def api_apply_policy(self, req: BGPApplyPolicyToNeighborMod) -> None: ...
    def api_unapply_policy(self, req: BGPApplyPolicyToNeighborMod) -> None: ...


class BgpDisabled(PyloxiError):
    def __init__(self) -> None:
        super().__init__(503, "bgp is not enabled (start the daemon with --bgp)")


def _body_openapi(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True)
    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": schema}}}}


M = TypeVar("M", bound=BaseModel)


async def _read(request: Request, model: type[M]) -> M:
    data = await read_json_object(await request.body(), f"a {model.__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(validation_reason(exc.errors())) from None


def bgp_router(speaker: BgpControl | None) -> APIRouter:
    router = APIRouter(prefix="/config/bgp", tags=["bgp"], route_class=LoxiRoute)

    def need() -> BgpControl:
        if speaker is None:
            raise BgpDisabled()
        return speaker

    async def with_body(request: Request, model: type[M],
                        call: Callable[[M], None]) -> dict[str, str]:
        """The body read as `model` in the event loop, `call` (a method of need(): no speaker
        answers 503 before the body is read) given it in the threadpool."""
        body = await _read(request, model)
        await run_in_threadpool(call, body)
        return SUCCESS

    @router.post("/global", summary="Set the BGP global config (starts BGP in gobgpd)",
                 openapi_extra=_body_openapi(BGPGlobalConfig))
    async def set_global(request: Request) -> dict[str, str]:
        return await with_body(request, BGPGlobalConfig, need().api_set_global)

    @router.get("/neigh/all", summary="BGP neighbours and their session state")
    def get_neighbors() -> dict[str, Any]:
        return BGPNeighList(attr=need().api_neighbors()).wire()

    @router.post("/neigh", summary="Add a BGP neighbour", openapi_extra=_body_openapi(BGPNeigh))
    async def add_neighbor(request: Request) -> dict[str, str]:
        return await with_body(request, BGPNeigh, need().api_add_neighbor)

    @router.delete("/neigh/{ip_address}", summary="Delete a BGP neighbour")
    def delete_neighbor(
        ip_address: str,
        remote_as: int = Query(default=0, alias="remoteAs", ge=0, le=4294967295),
    ) -> dict[str, str]:
        need().api_delete_neighbor(ip_address, remote_as)
        return SUCCESS

    # -- policies ---------------------------------------------------------------------------
    @router.get("/policy/definedsets/{defineset_type}/{type_name}",
                summary="BGP defined sets of a type (type_name 'all': every one)")
    def get_defined_sets(defineset_type: str, type_name: str) -> dict[str, Any]:
        return BGPPolicyDefinedSetList(
            attr=need().api_defined_sets(defineset_type, type_name)).wire()

    @router.delete("/policy/definedsets/{defineset_type}/{type_name}",
                   summary="Delete a BGP defined set")
    def delete_defined_set(defineset_type: str, type_name: str) -> dict[str, str]:
        need().api_delete_defined_set(defineset_type, type_name)
        return SUCCESS

    @router.post("/policy/definedsets/{defineset_type}",
                 summary="Add a BGP defined set (prefix, neighbor, community, extcommunity, "
                         "largecommunity, aspath)",
                 openapi_extra=_body_openapi(BGPPolicyDefinedSetsMod))
    async def add_defined_set(defineset_type: str, request: Request) -> dict[str, str]:
        return await with_body(request, BGPPolicyDefinedSetsMod,
                               partial(need().api_add_defined_set, defineset_type))

    @router.get("/policy/definitions/all", summary="BGP policy definitions")
    def get_policies() -> dict[str, Any]:
        return BGPPolicyDefinitionsList(attr=need().api_policies()).wire()

    @router.post("/policy/definitions", summary="Add a BGP policy",
                 openapi_extra=_body_openapi(BGPPolicyDefinitionsMod))
    async def add_policy(request: Request) -> dict[str, str]:
        return await with_body(request, BGPPolicyDefinitionsMod, need().api_add_policy)

    @router.delete("/policy/definitions/{policy_name}", summary="Delete a BGP policy")
    def delete_policy(policy_name: str) -> dict[str, str]:
        need().api_delete_policy(policy_name)
        return SUCCESS

    @router.post("/policy/apply",
                 summary="Apply BGP policies to a neighbour's (or 'global') import or export",
                 openapi_extra=_body_openapi(BGPApplyPolicyToNeighborMod))
    async def apply_policy(request: Request) -> dict[str, str]:
        return await with_body(request, BGPApplyPolicyToNeighborMod, need().api_apply_policy)

    @router.delete("/policy/apply",
                   summary="Remove applied BGP policies (none listed: all of that direction)",
                   openapi_extra=_body_openapi(BGPApplyPolicyToNeighborMod))
    async def unapply_policy(request: Request) -> dict[str, str]:
        return await with_body(request, BGPApplyPolicyToNeighborMod, need().api_unapply_policy)

    return router
