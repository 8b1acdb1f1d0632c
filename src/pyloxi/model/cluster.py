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


# ---- pyloxi extension: GET /netlox/v1/cluster/status (active-active agreement between nodes)


class ClusterPeer(WireModel):
    """A peer heard on the cluster channel: `lastSeen` seconds ago; `live` False once it has
    been silent for the channel's timeout (3 s)."""

    model_config = wire_names(index="index", last_seen="lastSeen", live="live")

    index: int
    last_seen: float
    live: bool


class MaglevMismatch(WireModel):
    """A hash-selected service whose Maglev table differs between this node and `peer`."""

    model_config = wire_names(service="service", peer="peer", local="local", remote="remote")

    service: str
    peer: int
    local: str
    remote: str


class ProbeView(WireModel):
    model_config = wire_names(node="node", state="state")

    node: int
    state: str  # up | down


class ProbeDisagreement(WireModel):
    """An endpoint the live nodes' probes do not agree on, and what the majority decided."""

    model_config = wire_names(endpoint="endpoint", effective="effective", views="views")

    endpoint: str
    effective: str  # up | down
    views: list[ProbeView] = Field(default_factory=list)


class ClusterStatus(WireModel):
    model_config = wire_names(self_index="self", peers="peers", mismatches="maglevMismatches",
                              mismatch_count="maglevMismatchCount",
                              disagreements="probeDisagreements",
                              overrides="probeOverrides")

    self_index: int = 0
    peers: list[ClusterPeer] = Field(default_factory=list)
    mismatches: list[MaglevMismatch] = Field(default_factory=list)
    mismatch_count: int = 0  # mismatches that began since the start
    disagreements: list[ProbeDisagreement] = Field(default_factory=list)
    overrides: int = 0  # local probe verdicts the cluster's majority overruled
