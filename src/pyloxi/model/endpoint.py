"""Endpoint liveness wire objects: loxilb's `EndPoint`, `EndPointGetEntry`, `EndPointHostState`.

Field spellings follow loxilb's swagger.yml. `EndPointGetEntry` carries a few extra keys
(`lastProbeTime`, `lastProbeResult`, `reason`, `retriesLeft`) that loxilb does not have; clients
that do not know them ignore them.

`EndPoint`'s fields carry the same enums and limits as every other wire object; what only
the combination can tell (a tcp/udp/sctp probe needs a port) is checked by the REST adapter.
"""

from __future__ import annotations

from pydantic import Field

from pyloxi.model.base import Name, ProbeText, WireModel, Word, wire_names
from pyloxi.model.enums import HOST_STATES, PROBE_TYPES
from pyloxi.model.fields import IPAddress, Port, ProbePeriod, ProbeRetries, RuleProbeType
from pyloxi.model.limits import MAX_PROBE_PERIOD as MAX_PERIOD
from pyloxi.model.limits import MAX_PROBE_RETRIES as MAX_RETRIES

__all__ = [
    "HOST_STATES",
    "MAX_PERIOD",
    "MAX_RETRIES",
    "PROBE_TYPES",
    "EndPoint",
    "EndPointGetEntry",
    "EndPointHostState",
    "EndPointList",
]

_ENDPOINT_NAMES = {
    "host_name": "hostName", "name": "name", "inactive_retries": "inactiveReTries",
    "probe_type": "probeType", "probe_req": "probeReq", "probe_resp": "probeResp",
    "probe_duration": "probeDuration", "probe_port": "probePort",
}  # fmt: skip


class EndPoint(WireModel):
    """POST /config/endpoint: a host to monitor (or an override of a rule-made probe)."""

    model_config = wire_names(**_ENDPOINT_NAMES)

    host_name: IPAddress
    name: Name = ""
    inactive_retries: ProbeRetries = 0
    probe_type: RuleProbeType = ""  # "" = ping
    probe_req: ProbeText = ""
    probe_resp: ProbeText = ""
    probe_duration: ProbePeriod = 0
    probe_port: Port = 0


class EndPointGetEntry(WireModel):
    model_config = wire_names(
        **_ENDPOINT_NAMES, min_delay="minDelay", avg_delay="avgDelay", max_delay="maxDelay",
        curr_state="currState", last_probe_time="lastProbeTime",
        last_probe_result="lastProbeResult", reason="reason",
    )

    host_name: str = ""
    name: str = ""
    inactive_retries: int = 0
    probe_type: str = ""
    probe_req: str = ""
    probe_resp: str = ""
    probe_duration: int = 0
    probe_port: Port = 0
    min_delay: str = ""
    avg_delay: str = ""
    max_delay: str = ""
    curr_state: str = ""  # ok | nok | red
    # pyloxi additions
    last_probe_time: str = ""  # RFC 3339, UTC
    last_probe_result: str = ""  # success | failure
    reason: str = ""


class EndPointList(WireModel):
    model_config = wire_names(attr="Attr")

    attr: list[EndPointGetEntry] = Field(default_factory=list)


class EndPointHostState(WireModel):
    """POST /config/endpointhoststate: an external verdict. Only "red" forces a host down."""

    model_config = wire_names(host_name="hostName", ep_port="epPort", ep_proto="epProto",
                              state="state")

    host_name: IPAddress
    ep_port: Port = 0  # with epProto: only that endpoint port of the host
    ep_proto: Word = ""
    state: Word = ""  # green | yellow | red (HOST_STATES)
