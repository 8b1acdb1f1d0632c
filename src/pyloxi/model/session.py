"""loxilb's GTP user sessions and ULCL filters (handler/session.go, swagger SessionEntry /
SessionUlClEntry). pyloxi has no GTP-U datapath: these models only validate what a client
sends (the API answers 501 for a valid request, see pyloxi.api.session).

    POST /config/session       {ident, sessionIP, accessNetworkTunnel{TeID, tunnelIP},
                                coreNetworkTunnel{teID, tunnelIP}}
    POST /config/sessionulcl   {ulclIdent, ulclArgument{qfi, ulclIP}}
"""

from __future__ import annotations

from pydantic import Field

from pyloxi.model.base import Name, WireModel, wire_names
from pyloxi.model.fields import IPAddress, UInt32

MAX_QFI = 63  # a QoS Flow Identifier is 6 bits (3GPP TS 38.415)


class NetworkTunnel(WireModel):
    model_config = wire_names(teid="TeID", tunnel_ip="tunnelIP")

    teid: UInt32 = 0
    tunnel_ip: IPAddress = "0.0.0.0"


class SessionEntry(WireModel):
    model_config = wire_names(ident="ident", session_ip="sessionIP", an_tun="accessNetworkTunnel",
                              cn_tun="coreNetworkTunnel")

    ident: Name = Field(min_length=1)
    session_ip: IPAddress = "0.0.0.0"
    an_tun: NetworkTunnel = Field(default_factory=NetworkTunnel)
    cn_tun: NetworkTunnel = Field(default_factory=NetworkTunnel)


class SessionList(WireModel):
    model_config = wire_names(attr="sessionAttr")

    attr: list[SessionEntry] = Field(default_factory=list)


class UlclArgument(WireModel):
    model_config = wire_names(qfi="qfi", ulcl_ip="ulclIP")

    qfi: int = Field(default=0, ge=0, le=MAX_QFI)
    ulcl_ip: IPAddress = "0.0.0.0"


class SessionUlClEntry(WireModel):
    model_config = wire_names(ident="ulclIdent", args="ulclArgument")

    ident: Name = Field(min_length=1)
    args: UlclArgument = Field(default_factory=UlclArgument)


class UlclList(WireModel):
    model_config = wire_names(attr="ulclAttr")

    attr: list[SessionUlClEntry] = Field(default_factory=list)
