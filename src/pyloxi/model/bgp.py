"""BGP wire objects (loxilb swagger.yml: BGPGlobalConfig, BGPNeigh, BGPNeighGetEntry)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from pyloxi.model.base import WireModel, wire_names
from pyloxi.model.fields import IPAddress, UInt32

__all__ = ["BGPGlobalConfig", "BGPNeigh", "BGPNeighGetEntry", "BGPNeighList"]

ASN = Annotated[int, Field(ge=1, le=4294967295)]
# -1: do not listen (pyloxi's default: gobgpd connects out and never takes the host's 179)
ListenPort = Annotated[int, Field(ge=-1, le=65535)]


class BGPGlobalConfig(WireModel):
    """POST /config/bgp/global."""

    model_config = wire_names(router_id="routerId", local_as="localAs",
                              set_next_hop_self="SetNextHopSelf", listen_port="listenPort")

    router_id: IPAddress
    local_as: ASN
    set_next_hop_self: bool = False  # pyloxi always announces next-hop-self (0.0.0.0)
    listen_port: ListenPort = 0  # 0: not given -> -1 (no listener)


class BGPNeigh(WireModel):
    """POST /config/bgp/neigh."""

    model_config = wire_names(ip_address="ipAddress", remote_as="remoteAs",
                              remote_port="remotePort", set_multi_hop="setMultiHop")

    ip_address: IPAddress
    remote_as: ASN
    remote_port: Annotated[int, Field(ge=0, le=65535)] = 0  # 0: 179
    set_multi_hop: bool = False


class BGPNeighGetEntry(WireModel):
    model_config = wire_names(ip_address="ipAddress", remote_as="remoteAs", state="state",
                              updowntime="updowntime")

    ip_address: str = ""
    remote_as: UInt32 = 0
    state: str = ""
    updowntime: str = ""


class BGPNeighList(WireModel):
    model_config = wire_names(attr="bgpNeiAttr")

    attr: list[BGPNeighGetEntry] = []
