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

from typing import Any, Protocol

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


async def _read(request: Request, model: type[BaseModel], what: str) -> Any:
    data = await read_json_object(await request.body(), f"a {what}")
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

    # The bodies are read in the event loop, the speaker is called in the threadpool.
    @router.post("/global", summary="Set the BGP global config (starts BGP in gobgpd)",
                 openapi_extra=_body_openapi(BGPGlobalConfig))
    async def set_global(request: Request) -> dict[str, str]:
        control = need()
        cfg = await _read(request, BGPGlobalConfig, "BGPGlobalConfig")
        await run_in_threadpool(control.api_set_global, cfg)
        return SUCCESS

    @router.get("/neigh/all", summary="BGP neighbours and their session state")
    def get_neighbors() -> dict[str, Any]:
        return BGPNeighList(attr=need().api_neighbors()).wire()

    @router.post("/neigh", summary="Add a BGP neighbour", openapi_extra=_body_openapi(BGPNeigh))
    async def add_neighbor(request: Request) -> dict[str, str]:
        control = need()
        neigh = await _read(request, BGPNeigh, "BGPNeigh")
        await run_in_threadpool(control.api_add_neighbor, neigh)
        return SUCCESS

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
        control = need()
        s = await _read(request, BGPPolicyDefinedSetsMod, "BGPPolicyDefinedSetsMod")
        await run_in_threadpool(control.api_add_defined_set, defineset_type, s)
        return SUCCESS

    @router.get("/policy/definitions/all", summary="BGP policy definitions")
    def get_policies() -> dict[str, Any]:
        return BGPPolicyDefinitionsList(attr=need().api_policies()).wire()

    @router.post("/policy/definitions", summary="Add a BGP policy",
                 openapi_extra=_body_openapi(BGPPolicyDefinitionsMod))
    async def add_policy(request: Request) -> dict[str, str]:
        control = need()
        d = await _read(request, BGPPolicyDefinitionsMod, "BGPPolicyDefinitionsMod")
        await run_in_threadpool(control.api_add_policy, d)
        return SUCCESS

    @router.delete("/policy/definitions/{policy_name}", summary="Delete a BGP policy")
    def delete_policy(policy_name: str) -> dict[str, str]:
        need().api_delete_policy(policy_name)
        return SUCCESS

    @router.post("/policy/apply",
                 summary="Apply BGP policies to a neighbour's (or 'global') import or export",
                 openapi_extra=_body_openapi(BGPApplyPolicyToNeighborMod))
    async def apply_policy(request: Request) -> dict[str, str]:
        control = need()
        req = await _read(request, BGPApplyPolicyToNeighborMod, "BGPApplyPolicyToNeighborMod")
        await run_in_threadpool(control.api_apply_policy, req)
        return SUCCESS

    @router.delete("/policy/apply",
                   summary="Remove applied BGP policies (none listed: all of that direction)",
                   openapi_extra=_body_openapi(BGPApplyPolicyToNeighborMod))
    async def unapply_policy(request: Request) -> dict[str, str]:
        control = need()
        req = await _read(request, BGPApplyPolicyToNeighborMod, "BGPApplyPolicyToNeighborMod")
        await run_in_threadpool(control.api_unapply_policy, req)
        return SUCCESS

    return router
