"""Load-balancer rule routes: /config/loadbalancer (loxilb handler/loadbalancer.go)."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from pyloxi.api.deps import EngineDep, get_engine
from pyloxi.api.errors import SUCCESS, LoxiRoute, validation_reason
from pyloxi.api.guard import read_json_object, show_value
from pyloxi.model.enums import PROTOCOLS, Protocol
from pyloxi.model.errors import InvalidInput
from pyloxi.model.lb import LoadBalancerEntry, LoadBalancerList
from pyloxi.model.limits import PORT_MAX, UINT32_MAX

router = APIRouter(prefix="/config/loadbalancer", tags=["loadbalancer"], route_class=LoxiRoute)

# The request body is parsed by hand (see read_lb_entry), so its schema is declared here.
_LB_BODY_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/LoadBalancerEntry"}}
        },
    }
}


async def read_lb_entry(request: Request) -> LoadBalancerEntry:
    """The POST body as a LoadBalancerEntry, through the case-folding model validator.

    FastAPI's own body parsing matches aliases exactly; loxicmd sends "BGP" and "Monitor", and Go
    clients may send any casing, so the raw JSON goes through `model_validate` instead. The
    RequestGuard middleware has already checked Content-Type and size; `read_json_object`
    checks the JSON itself (depth, Unicode), in a thread when the body is large.
    """
    data = await read_json_object(await request.body(), "a LoadbalanceEntry")
    try:
        return LoadBalancerEntry.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(validation_reason(exc.errors())) from None


@router.post("", summary="Create or update a load-balancer rule", openapi_extra=_LB_BODY_OPENAPI)
async def create_lb(request: Request) -> dict[str, str]:
    # The request alone, no dependencies: FastAPI's dependency solving was a tenth of a
    # create's CPU (the body is parsed by hand anyway, and its schema declared above).
    entry = await read_lb_entry(request)
    # In the thread pool: add_rule waits for the engine lock (a bulk delete may hold it) and
    # for the change to be on disk, and the event loop must keep serving everyone else.
    await run_in_threadpool(get_engine(request).add_rule, entry)
    return SUCCESS


@router.get("/all", summary="List every load-balancer rule", response_model=LoadBalancerList)
def list_lb(engine: EngineDep) -> JSONResponse:
    rules = [e.wire() for e in engine.list_rules()]
    for rule in rules:
        # loxilb's model omits an empty probetype (`omitempty`); "" is not in its swagger's enum
        if rule["serviceArguments"].get("probetype") == "":
            del rule["serviceArguments"]["probetype"]
    return JSONResponse({"lbAttr": rules})


@router.delete("/all", summary="Delete every load-balancer rule")
def delete_all_lb(engine: EngineDep) -> dict[str, str]:
    engine.delete_all()
    return SUCCESS


@router.delete("/name/{lb_name}", summary="Delete every rule with this name")
def delete_lb_by_name(engine: EngineDep, lb_name: str) -> dict[str, str]:
    engine.delete_by_name(lb_name)
    return SUCCESS


def _vip(ip_address: str) -> str:
    try:
        return str(ipaddress.ip_address(ip_address))
    except ValueError:
        raise InvalidInput(
            f"invalid ip_address: {show_value(ip_address)} is not an IP address"
        ) from None


def _port(name: str, value: str) -> int:
    # ASCII digits only: int() would also take "+80", "8_0", " 80" and Unicode digits ("٨٠").
    text = value.removeprefix("-")
    if not (text.isascii() and text.isdigit()) or len(text) > 10:
        raise InvalidInput(f"invalid {name}: {show_value(value)} is not an integer")
    port = int(value)
    if not 0 <= port <= PORT_MAX:
        raise InvalidInput(f"invalid {name}: {port} is out of range 0-{PORT_MAX}")
    return port


def _proto(proto: str) -> Protocol:
    try:
        return Protocol(proto.lower())
    except ValueError:
        raise InvalidInput(
            f"invalid proto: {show_value(proto)}, expected one of {', '.join(PROTOCOLS)}"
        ) from None


BlockQ = Annotated[int, Query(ge=0, le=UINT32_MAX, description="block (mark) of the rule")]
BgpQ = Annotated[bool, Query(description="accepted for compatibility; BGP withdraw is implicit")]


def _delete(
    engine: Any, hosturl: str, ip_address: str, port: str, portmax: str, proto: str, block: int
) -> dict[str, str]:
    host = "" if hosturl == "any" else hosturl
    engine.delete_rule(
        _vip(ip_address),
        _port("port", port),
        _proto(proto),
        port_max=_port("portmax", portmax),
        block=block,
        host=host,
    )
    return SUCCESS


@router.delete(
    "/externalipaddress/{ip_address}/port/{port}/protocol/{proto}",
    summary="Delete one rule by its key",
)
def delete_lb(
    engine: EngineDep,
    ip_address: str,
    port: str,
    proto: str,
    block: BlockQ = 0,
    bgp: BgpQ = False,
) -> dict[str, str]:
    return _delete(engine, "any", ip_address, port, "0", proto, block)


@router.delete(
    "/externalipaddress/{ip_address}/port/{port}/portmax/{portmax}/protocol/{proto}",
    summary="Delete one port-range rule by its key",
)
def delete_lb_range(
    engine: EngineDep,
    ip_address: str,
    port: str,
    portmax: str,
    proto: str,
    block: BlockQ = 0,
    bgp: BgpQ = False,
) -> dict[str, str]:
    return _delete(engine, "any", ip_address, port, portmax, proto, block)


@router.delete(
    "/hosturl/{hosturl}/externalipaddress/{ip_address}/port/{port}/protocol/{proto}",
    summary="Delete one rule by its key, with host URL ('any' = none)",
)
def delete_lb_host(
    engine: EngineDep,
    hosturl: str,
    ip_address: str,
    port: str,
    proto: str,
    block: BlockQ = 0,
    bgp: BgpQ = False,
) -> dict[str, str]:
    return _delete(engine, hosturl, ip_address, port, "0", proto, block)


@router.delete(
    "/hosturl/{hosturl}/externalipaddress/{ip_address}/port/{port}/portmax/{portmax}/protocol/{proto}",
    summary="Delete one port-range rule by its key, with host URL ('any' = none)",
)
def delete_lb_host_range(
    engine: EngineDep,
    hosturl: str,
    ip_address: str,
    port: str,
    portmax: str,
    proto: str,
    block: BlockQ = 0,
    bgp: BgpQ = False,
) -> dict[str, str]:
    return _delete(engine, hosturl, ip_address, port, portmax, proto, block)
