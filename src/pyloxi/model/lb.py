"""Load-balancer rule: the loxilb `LoadbalanceEntry` wire object and its enums."""

from __future__ import annotations

from enum import IntEnum

from pydantic import Field

from pyloxi.model.base import Address, CounterText, HostText, Name, ProbeText, WireModel, Word


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


MAX_ENDPOINTS_WIRE = 1024
MAX_SECONDARY_IPS_WIRE = 16
MAX_ALLOWED_SOURCES_WIRE = 256

PROTOCOLS = ("tcp", "udp", "sctp", "icmp")
PROTO_NUMBERS = {"tcp": 6, "udp": 17, "sctp": 132, "icmp": 1}


class ServiceArguments(WireModel):
    external_ip: Address = Field(alias="externalIP")
    private_ip: Address = Field(default="", alias="privateIP")
    port: int = Field(alias="port")
    port_max: int = Field(default=0, alias="portMax")
    protocol: Word = Field(default="tcp", alias="protocol")
    sel: int = Field(default=0, alias="sel")
    mode: int = Field(default=0, alias="mode")
    bgp: bool = Field(default=False, alias="bgp")
    monitor: bool = Field(default=False, alias="monitor")
    probe_type: Word = Field(default="", alias="probetype")
    probe_port: int = Field(default=0, alias="probeport")
    probe_req: ProbeText = Field(default="", alias="probereq")
    probe_resp: ProbeText = Field(default="", alias="proberesp")
    probe_timeout: int = Field(default=0, alias="probeTimeout")
    probe_retries: int = Field(default=0, alias="probeRetries")
    managed: bool = Field(default=False, alias="managed")
    security: int = Field(default=0, alias="security")
    block: int = Field(default=0, alias="block")
    inactive_timeout: int = Field(default=0, alias="inactiveTimeOut")
    name: Name = Field(default="", alias="name")
    snat: bool = Field(default=False, alias="snat")
    oper: int = Field(default=0, alias="oper")
    host: HostText = Field(default="", alias="host")
    proxy_protocol_v2: bool = Field(default=False, alias="proxyprotocolv2")
    egress: bool = Field(default=False, alias="egress")


class Endpoint(WireModel):
    endpoint_ip: Address = Field(alias="endpointIP")
    target_port: int = Field(default=0, alias="targetPort")
    weight: int = Field(default=1, alias="weight")
    state: Word = Field(default="", alias="state")  # output only: active | inactive
    counter: CounterText = Field(default="", alias="counter")  # output only: "<packets>:<bytes>"


class SecondaryIP(WireModel):
    secondary_ip: Address = Field(alias="secondaryIP")


class AllowedSource(WireModel):
    prefix: Address = Field(alias="prefix")


class LoadBalancerEntry(WireModel):
    service_arguments: ServiceArguments = Field(alias="serviceArguments")
    # Bounds on the work one request can ask for; the engine's own limits (endpoints per
    # service, 3 secondary IPs) are tighter and say so in their messages.
    endpoints: list[Endpoint] = Field(
        default_factory=list, alias="endpoints", max_length=MAX_ENDPOINTS_WIRE
    )
    secondary_ips: list[SecondaryIP] | None = Field(
        default=None, alias="secondaryIPs", max_length=MAX_SECONDARY_IPS_WIRE
    )
    allowed_sources: list[AllowedSource] | None = Field(
        default=None, alias="allowedSources", max_length=MAX_ALLOWED_SOURCES_WIRE
    )


class LoadBalancerList(WireModel):
    lb_attr: list[LoadBalancerEntry] = Field(default_factory=list, alias="lbAttr")
