"""Network configuration routes (loxilb handler/{port,route,ipv4address,neighbor,fdb,vlan,
vxlan}.go): the host's interfaces, routes, addresses, neighbours, bridge FDB, VLAN bridges and
VXLAN devices, read and changed in the daemon's network namespace.

- GET    /config/port/all                                    {"portAttr": [PortEntry]}
- GET    /config/route/all                                   {"routeAttr": [RouteGetEntry]}
- POST   /config/route                                       RouteEntry
- DELETE /config/route/destinationIPNet/{ip_address}/{mask}
- GET    /config/ipv4address/all                             {"ipAttr": [IPv4AddressGetEntry]}
- POST   /config/ipv4address                                 IPv4AddressEntry
- DELETE /config/ipv4address/{ip_address}/{mask}/dev/{if_name}
- GET    /config/neighbor/all                                {"neighborAttr": [NeighborEntry]}
- POST   /config/neighbor                                    NeighborEntry
- DELETE /config/neighbor/{ip_address}/dev/{if_name}
- GET    /config/fdb/all                                     {"fdbAttr": [FDBEntry]}
- POST   /config/fdb                                         FDBEntry
- DELETE /config/fdb/{mac_address}/dev/{if_name}
- GET    /config/vlan/all                                    {"vlanAttr": [VlanGetEntry]}
- POST   /config/vlan                                        VlanBridgeEntry
- DELETE /config/vlan/{vlan_id}
- POST   /config/vlan/{vlan_id}/member                       VlanMemberEntry
- DELETE /config/vlan/{vlan_id}/member/{if_name}/tagged/{tagged}
- GET    /config/tunnel/vxlan/all                            {"vxlanAttr": [VxlanEntry]}
- POST   /config/tunnel/vxlan                                VxlanBridgeEntry
- DELETE /config/tunnel/vxlan/{vxlanID}
- POST   /config/tunnel/vxlan/{vxlanID}/peer                 VxlanPeerEntry
- DELETE /config/tunnel/vxlan/{vxlanID}/peer/{PeerIP}

Every value is checked here (400, nothing sent to the kernel); what the kernel refuses comes
back from the `NetConfig` given to the router as a PyloxiError carrying the kernel's reason.
The daemon gives pyloxi.host.netcfg.HostNetConfig; unit tests give a fake.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from fastapi import APIRouter, Request
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool

from pyloxi.api.errors import SUCCESS, LoxiRoute, validation_reason
from pyloxi.api.guard import read_json_object
from pyloxi.model.errors import InvalidInput
from pyloxi.model.fields import IPAddress, IPPrefix
from pyloxi.model.netcfg import (
    DevName,
    FDBEntry,
    FdbList,
    IfAddress,
    IpList,
    Ipv4AddressEntry,
    Ipv4AddressGetEntry,
    MacAddress,
    NeighborEntry,
    NeighborList,
    PortEntry,
    PortList,
    RouteEntry,
    RouteGetEntry,
    RouteList,
    VlanBridgeEntry,
    VlanGetEntry,
    VlanId,
    VlanList,
    VlanMemberEntry,
    Vni,
    VxlanBridgeEntry,
    VxlanEntry,
    VxlanList,
    VxlanPeerEntry,
)

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


class NetConfig(Protocol):
    """The host's network configuration. Arguments are checked values (model types); each call
    either changes what it says or nothing, and raises PyloxiError (the kernel's reason)."""

    def ports(self) -> list[PortEntry]: ...
    def routes(self) -> list[RouteGetEntry]: ...
    def add_route(self, entry: RouteEntry) -> None: ...
    def delete_route(self, prefix: str) -> None: ...
    def addresses(self) -> list[Ipv4AddressGetEntry]: ...
    def add_address(self, entry: Ipv4AddressEntry) -> None: ...
    def delete_address(self, address: str, dev: str) -> None: ...
    def neighbors(self) -> list[NeighborEntry]: ...
    def add_neighbor(self, entry: NeighborEntry) -> None: ...
    def delete_neighbor(self, ip: str, dev: str) -> None: ...
    def fdbs(self) -> list[FDBEntry]: ...
    def add_fdb(self, entry: FDBEntry) -> None: ...
    def delete_fdb(self, mac: str, dev: str) -> None: ...
    def vlans(self) -> list[VlanGetEntry]: ...
    def add_vlan(self, vid: int) -> None: ...
    def delete_vlan(self, vid: int) -> None: ...
    def add_vlan_member(self, vid: int, dev: str, tagged: bool) -> None: ...
    def delete_vlan_member(self, vid: int, dev: str, tagged: bool) -> None: ...
    def vxlans(self) -> list[VxlanEntry]: ...
    def add_vxlan(self, vni: int, ep_intf: str) -> None: ...
    def delete_vxlan(self, vni: int) -> None: ...
    def add_vxlan_peer(self, vni: int, peer_ip: str) -> None: ...
    def delete_vxlan_peer(self, vni: int, peer_ip: str) -> None: ...


def _body_openapi(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True)
    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": schema}}}}


async def _body(request: Request, model: type[M]) -> M:
    data = await read_json_object(await request.body(), f"a {model.__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(validation_reason(exc.errors())) from None


_DEV: TypeAdapter[str] = TypeAdapter(DevName)
_IP: TypeAdapter[str] = TypeAdapter(IPAddress)
_PREFIX: TypeAdapter[str] = TypeAdapter(IPPrefix)
_IFADDR: TypeAdapter[str] = TypeAdapter(IfAddress)
_MAC: TypeAdapter[str] = TypeAdapter(MacAddress)
_VID: TypeAdapter[int] = TypeAdapter(VlanId)
_VNI: TypeAdapter[int] = TypeAdapter(Vni)


def _param(adapter: TypeAdapter[T], name: str, value: Any) -> T:
    """A path parameter checked as its model type: 400 `invalid <name>: <why>` otherwise."""
    try:
        return adapter.validate_python(value, strict=True)
    except ValidationError as exc:
        raise InvalidInput(f"invalid {name}: {exc.errors()[0]['msg']}") from None


def _int(name: str, text: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 10:
        raise InvalidInput(f"invalid {name}: {text[:40]!r} is not a whole number")
    return int(text)


def _bool(name: str, text: str) -> bool:
    word = text.strip().lower()
    if word not in ("true", "false"):
        raise InvalidInput(f"invalid {name}: {text[:40]!r} is not true or false")
    return word == "true"


def _mask(ip: str, mask: str) -> str:
    """ip + "/" + mask, refusing a mask that is not a prefix length of ip's family."""
    bits = _int("mask", mask)
    if bits > (128 if ":" in ip else 32):
        raise InvalidInput(f"invalid mask: {bits} is too long for {ip}")
    return f"{ip}/{bits}"


def netcfg_router(net: NetConfig) -> APIRouter:
    router = APIRouter(prefix="/config", tags=["network"], route_class=LoxiRoute)

    @router.get("/port/all", summary="List the interfaces, with their state and counters",
                response_model=PortList)
    def list_ports() -> dict[str, Any]:
        return {"portAttr": [p.wire() for p in net.ports()]}

    # --- routes

    @router.get("/route/all", summary="List the routes of the main table",
                response_model=RouteList)
    def list_routes() -> dict[str, Any]:
        return {"routeAttr": [r.wire() for r in net.routes()]}

    @router.post("/route", summary="Add a route", openapi_extra=_body_openapi(RouteEntry))
    async def create_route(request: Request) -> dict[str, str]:
        entry = await _body(request, RouteEntry)
        if (":" in entry.gateway) != (":" in entry.destination_ip_net):
            raise InvalidInput(f"invalid gateway: {entry.gateway} is not of the family of "
                               f"{entry.destination_ip_net}")
        await run_in_threadpool(net.add_route, entry)
        return SUCCESS

    @router.delete("/route/destinationIPNet/{ip_address}/{mask}", summary="Delete a route")
    def delete_route(ip_address: str, mask: str) -> dict[str, str]:
        ip = _param(_IP, "ip_address", ip_address)
        net.delete_route(_param(_PREFIX, "destinationIPNet", _mask(ip, mask)))
        return SUCCESS

    # --- addresses

    @router.get("/ipv4address/all", summary="List the addresses of every interface",
                response_model=IpList)
    def list_addresses() -> dict[str, Any]:
        return {"ipAttr": [a.wire() for a in net.addresses()]}

    @router.post("/ipv4address", summary="Add an address to an interface",
                 openapi_extra=_body_openapi(Ipv4AddressEntry))
    async def create_address(request: Request) -> dict[str, str]:
        entry = await _body(request, Ipv4AddressEntry)
        await run_in_threadpool(net.add_address, entry)
        return SUCCESS

    @router.delete("/ipv4address/{ip_address}/{mask}/dev/{if_name}",
                   summary="Delete an address from an interface")
    def delete_address(ip_address: str, mask: str, if_name: str) -> dict[str, str]:
        ip = _param(_IP, "ip_address", ip_address)
        address = _param(_IFADDR, "ipAddress", _mask(ip, mask))
        net.delete_address(address, _param(_DEV, "if_name", if_name))
        return SUCCESS

    # --- neighbours

    @router.get("/neighbor/all", summary="List the neighbours (ARP/NDP entries)",
                response_model=NeighborList)
    def list_neighbors() -> dict[str, Any]:
        return {"neighborAttr": [n.wire() for n in net.neighbors()]}

    @router.post("/neighbor", summary="Add a permanent neighbour",
                 openapi_extra=_body_openapi(NeighborEntry))
    async def create_neighbor(request: Request) -> dict[str, str]:
        entry = await _body(request, NeighborEntry)
        await run_in_threadpool(net.add_neighbor, entry)
        return SUCCESS

    @router.delete("/neighbor/{ip_address}/dev/{if_name}", summary="Delete a neighbour")
    def delete_neighbor(ip_address: str, if_name: str) -> dict[str, str]:
        net.delete_neighbor(_param(_IP, "ip_address", ip_address),
                            _param(_DEV, "if_name", if_name))
        return SUCCESS

    # --- FDB

    @router.get("/fdb/all", summary="List the FDB entries of bridge ports",
                response_model=FdbList)
    def list_fdbs() -> dict[str, Any]:
        return {"fdbAttr": [f.wire() for f in net.fdbs()]}

    @router.post("/fdb", summary="Add a permanent FDB entry",
                 openapi_extra=_body_openapi(FDBEntry))
    async def create_fdb(request: Request) -> dict[str, str]:
        entry = await _body(request, FDBEntry)
        await run_in_threadpool(net.add_fdb, entry)
        return SUCCESS

    @router.delete("/fdb/{mac_address}/dev/{if_name}", summary="Delete an FDB entry")
    def delete_fdb(mac_address: str, if_name: str) -> dict[str, str]:
        net.delete_fdb(_param(_MAC, "mac_address", mac_address),
                       _param(_DEV, "if_name", if_name))
        return SUCCESS

    # --- VLAN

    @router.get("/vlan/all", summary="List the VLAN bridges (vlan<vid>) and their members",
                response_model=VlanList)
    def list_vlans() -> dict[str, Any]:
        return {"vlanAttr": [v.wire() for v in net.vlans()]}

    @router.post("/vlan", summary="Create the VLAN bridge vlan<vid>",
                 openapi_extra=_body_openapi(VlanBridgeEntry))
    async def create_vlan(request: Request) -> dict[str, str]:
        entry = await _body(request, VlanBridgeEntry)
        await run_in_threadpool(net.add_vlan, entry.vid)
        return SUCCESS

    @router.delete("/vlan/{vlan_id}", summary="Delete the VLAN bridge vlan<vid>")
    def delete_vlan(vlan_id: str) -> dict[str, str]:
        net.delete_vlan(_param(_VID, "vlan_id", _int("vlan_id", vlan_id)))
        return SUCCESS

    @router.post("/vlan/{vlan_id}/member", summary="Add an interface to a VLAN",
                 openapi_extra=_body_openapi(VlanMemberEntry))
    async def create_vlan_member(vlan_id: str, request: Request) -> dict[str, str]:
        vid = _param(_VID, "vlan_id", _int("vlan_id", vlan_id))
        entry = await _body(request, VlanMemberEntry)
        await run_in_threadpool(net.add_vlan_member, vid, entry.dev, entry.tagged)
        return SUCCESS

    @router.delete("/vlan/{vlan_id}/member/{if_name}/tagged/{tagged}",
                   summary="Remove an interface from a VLAN")
    def delete_vlan_member(vlan_id: str, if_name: str, tagged: str) -> dict[str, str]:
        vid = _param(_VID, "vlan_id", _int("vlan_id", vlan_id))
        net.delete_vlan_member(vid, _param(_DEV, "if_name", if_name), _bool("tagged", tagged))
        return SUCCESS

    # --- VXLAN

    @router.get("/tunnel/vxlan/all", summary="List the VXLAN devices and their peers",
                response_model=VxlanList)
    def list_vxlans() -> dict[str, Any]:
        return {"vxlanAttr": [v.wire() for v in net.vxlans()]}

    @router.post("/tunnel/vxlan", summary="Create the VXLAN device vxlan<vxlanID>",
                 openapi_extra=_body_openapi(VxlanBridgeEntry))
    async def create_vxlan(request: Request) -> dict[str, str]:
        entry = await _body(request, VxlanBridgeEntry)
        await run_in_threadpool(net.add_vxlan, entry.vxlan_id, entry.ep_intf)
        return SUCCESS

    @router.delete("/tunnel/vxlan/{vxlanID}", summary="Delete the VXLAN device vxlan<vxlanID>")
    def delete_vxlan(vxlanID: str) -> dict[str, str]:  # noqa: N803 - loxilb's parameter name
        net.delete_vxlan(_param(_VNI, "vxlanID", _int("vxlanID", vxlanID)))
        return SUCCESS

    @router.post("/tunnel/vxlan/{vxlanID}/peer", summary="Add a VXLAN peer (remote VTEP)",
                 openapi_extra=_body_openapi(VxlanPeerEntry))
    async def create_vxlan_peer(vxlanID: str, request: Request) -> dict[str, str]:  # noqa: N803
        vni = _param(_VNI, "vxlanID", _int("vxlanID", vxlanID))
        entry = await _body(request, VxlanPeerEntry)
        if ":" in entry.peer_ip:  # the VXLAN devices' source address is epIntf's IPv4 one
            raise InvalidInput(f"invalid peerIP: {entry.peer_ip} is not an IPv4 address")
        await run_in_threadpool(net.add_vxlan_peer, vni, entry.peer_ip)
        return SUCCESS

    @router.delete("/tunnel/vxlan/{vxlanID}/peer/{PeerIP}", summary="Delete a VXLAN peer")
    def delete_vxlan_peer(vxlanID: str, PeerIP: str) -> dict[str, str]:  # noqa: N803
        net.delete_vxlan_peer(_param(_VNI, "vxlanID", _int("vxlanID", vxlanID)),
                              _param(_IP, "PeerIP", PeerIP))
        return SUCCESS

    return router
