"""Load-balancer rule: the loxilb `LoadbalanceEntry` wire object and its enums."""

from __future__ import annotations

from enum import IntEnum

from pydantic import Field

from pyloxi.model.base import WireModel


class Selection(IntEnum):
    """Endpoint selection (`sel`), numbered as loxilb numbers it."""

    RR = 0
    HASH = 1
    PRIORITY = 2
    PERSIST = 3
    LC = 4
    N2 = 5
    N3 = 6


class NatMode(IntEnum):
    """NAT mode (`mode`), numbered as loxilb numbers it."""

    DEFAULT = 0
    ONEARM = 1
    FULLNAT = 2
    DSR = 3
    FULLPROXY = 4
    HOSTONEARM = 5


class Oper(IntEnum):
    CREATE = 0
    ATTACH = 1
    DETACH = 2


PROTOCOLS = ("tcp", "udp", "sctp", "icmp")
PROTO_NUMBERS = {"tcp": 6, "udp": 17, "sctp": 132, "icmp": 1}


class ServiceArguments(WireModel):
    external_ip: str = Field(alias="externalIP")
    private_ip: str = Field(default="", alias="privateIP")
    port: int = Field(alias="port")
    port_max: int = Field(default=0, alias="portMax")
    protocol: str = Field(default="tcp", alias="protocol")
    sel: int = Field(default=0, alias="sel")
    mode: int = Field(default=0, alias="mode")
    bgp: bool = Field(default=False, alias="bgp")
    monitor: bool = Field(default=False, alias="monitor")
    probe_type: str = Field(default="", alias="probetype")
    probe_port: int = Field(default=0, alias="probeport")
    probe_req: str = Field(default="", alias="probereq")
    probe_resp: str = Field(default="", alias="proberesp")
    probe_timeout: int = Field(default=0, alias="probeTimeout")
    probe_retries: int = Field(default=0, alias="probeRetries")
    managed: bool = Field(default=False, alias="managed")
    security: int = Field(default=0, alias="security")
    block: int = Field(default=0, alias="block")
    inactive_timeout: int = Field(default=0, alias="inactiveTimeOut")
    name: str = Field(default="", alias="name")
    snat: bool = Field(default=False, alias="snat")
    oper: int = Field(default=0, alias="oper")
    host: str = Field(default="", alias="host")
    proxy_protocol_v2: bool = Field(default=False, alias="proxyprotocolv2")
    egress: bool = Field(default=False, alias="egress")


class Endpoint(WireModel):
    endpoint_ip: str = Field(alias="endpointIP")
    target_port: int = Field(default=0, alias="targetPort")
    weight: int = Field(default=1, alias="weight")
    state: str = Field(default="", alias="state")  # output only: active | inactive
    counter: str = Field(default="", alias="counter")  # output only: "<packets>:<bytes>"


class SecondaryIP(WireModel):
    secondary_ip: str = Field(alias="secondaryIP")


class AllowedSource(WireModel):
    prefix: str = Field(alias="prefix")


class LoadBalancerEntry(WireModel):
    service_arguments: ServiceArguments = Field(alias="serviceArguments")
    endpoints: list[Endpoint] = Field(default_factory=list, alias="endpoints")
    secondary_ips: list[SecondaryIP] | None = Field(default=None, alias="secondaryIPs")
    allowed_sources: list[AllowedSource] | None = Field(default=None, alias="allowedSources")


class LoadBalancerList(WireModel):
    lb_attr: list[LoadBalancerEntry] = Field(default_factory=list, alias="lbAttr")
