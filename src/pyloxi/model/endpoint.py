"""Endpoint liveness wire objects: loxilb's `EndPoint`, `EndPointGetEntry`, `EndPointHostState`.

Field spellings follow loxilb's swagger.yml. `EndPointGetEntry` carries a few extra keys
(`lastProbeTime`, `lastProbeResult`, `reason`, `retriesLeft`) that loxilb does not have; clients
that do not know them ignore them.
"""

from __future__ import annotations

from pydantic import Field

from pyloxi.model.base import Address, Name, ProbeText, WireModel, Word

PROBE_TYPES = ("tcp", "udp", "sctp", "ping", "http", "https", "none")
HOST_STATES = ("green", "yellow", "red")
MAX_RETRIES = 100  # loxilb MaxDflLbaInactiveTries
MAX_PERIOD = 86400  # loxilb MaxHostProbeTime


class EndPoint(WireModel):
    """POST /config/endpoint: a host to monitor (or an override of a rule-made probe)."""

    host_name: Address = Field(alias="hostName")
    name: Name = Field(default="", alias="name")
    inactive_retries: int = Field(default=0, alias="inactiveReTries")
    probe_type: Word = Field(default="", alias="probeType")
    probe_req: ProbeText = Field(default="", alias="probeReq")
    probe_resp: ProbeText = Field(default="", alias="probeResp")
    probe_duration: int = Field(default=0, alias="probeDuration")
    probe_port: int = Field(default=0, alias="probePort")


class EndPointGetEntry(WireModel):
    host_name: str = Field(default="", alias="hostName")
    name: str = Field(default="", alias="name")
    inactive_retries: int = Field(default=0, alias="inactiveReTries")
    probe_type: str = Field(default="", alias="probeType")
    probe_req: str = Field(default="", alias="probeReq")
    probe_resp: str = Field(default="", alias="probeResp")
    probe_duration: int = Field(default=0, alias="probeDuration")
    probe_port: int = Field(default=0, alias="probePort")
    min_delay: str = Field(default="", alias="minDelay")
    avg_delay: str = Field(default="", alias="avgDelay")
    max_delay: str = Field(default="", alias="maxDelay")
    curr_state: str = Field(default="", alias="currState")  # ok | nok | red
    # pyloxi additions
    last_probe_time: str = Field(default="", alias="lastProbeTime")  # RFC 3339, UTC
    last_probe_result: str = Field(default="", alias="lastProbeResult")  # success | failure
    reason: str = Field(default="", alias="reason")


class EndPointList(WireModel):
    attr: list[EndPointGetEntry] = Field(default_factory=list, alias="Attr")


class EndPointHostState(WireModel):
    """POST /config/endpointhoststate: an external verdict. Only "red" forces a host down."""

    host_name: Address = Field(default="", alias="hostName")
    ep_port: int = Field(default=0, alias="epPort")
    ep_proto: Word = Field(default="", alias="epProto")
    state: Word = Field(default="", alias="state")
