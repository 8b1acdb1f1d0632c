"""HA (cluster instance) state as loxilb's `/config/cistate` speaks it (handler/cluster.go).

    POST /config/cistate        CIStatusEntry    {"instance", "state", "vip"}
    GET  /config/cistate/all    {"Attr": [CIStatusGetEntry]}

States are loxilb's strings (common.go): MASTER, BACKUP, FAULT, STOP and NOT_DEFINED, the state
of an instance nobody has set yet. Rules belong to an instance by their name's suffix
`<svc>:<instance>`; a rule with no suffix belongs to the default instance `llb-inst0`.
"""

from __future__ import annotations

from pydantic import Field

from pyloxi.model.base import Address, Name, WireModel, Word, wire_names

DEFAULT_INSTANCE = "llb-inst0"

MASTER = "MASTER"
BACKUP = "BACKUP"
FAULT = "FAULT"
STOP = "STOP"
NOT_DEFINED = "NOT_DEFINED"
# loxilb's StateMap: the strings a client may send (anything else: "invalid cluster-state")
STATES = (MASTER, BACKUP, FAULT, STOP, NOT_DEFINED)
# loxilb's AdvRuleVIP: the VIPs of an instance are local on MASTER and, before any state was
# set, NOT_DEFINED; BACKUP, FAULT and STOP withdraw them.
SERVING_STATES = frozenset({MASTER, NOT_DEFINED})


def instance_of(rule_name: str) -> str:
    """The HA instance a rule belongs to, as loxilb's AddLbRule: the second ':'-separated part
    of its name (`svc:inst` -> `inst`, `a:b:c` -> `b`, `svc:` -> ``); no ':' -> the default."""
    parts = rule_name.split(":")
    return parts[1] if len(parts) >= 2 else DEFAULT_INSTANCE


class CIStatusEntry(WireModel):
    """The POST body. A missing vip is loxilb's nil address: stored as 0.0.0.0."""

    model_config = wire_names(instance="instance", state="state", vip="vip")

    instance: Name = DEFAULT_INSTANCE
    state: Word = ""
    vip: Address = ""


class CIStatusGetEntry(WireModel):
    model_config = wire_names(instance="instance", state="state", vip="vip", sync="sync")

    instance: str
    state: str
    vip: str
    sync: int = 0


class CIStatusList(WireModel):
    model_config = wire_names(attr="Attr")

    attr: list[CIStatusGetEntry] = Field(default_factory=list)
