"""API objects shared by the REST server, the CLI, the config store and the Kubernetes agent."""

from pyloxi.model.conntrack import ConntrackEntry, ConntrackList
from pyloxi.model.errors import CapacityExceeded, Conflict, InvalidInput, NotFound, PyloxiError
from pyloxi.model.lb import (
    PROTO_NUMBERS,
    PROTOCOLS,
    AllowedSource,
    Endpoint,
    LoadBalancerEntry,
    LoadBalancerList,
    NatMode,
    Oper,
    SecondaryIP,
    Selection,
    ServiceArguments,
)

__all__ = [
    "PROTOCOLS",
    "PROTO_NUMBERS",
    "AllowedSource",
    "CapacityExceeded",
    "Conflict",
    "ConntrackEntry",
    "ConntrackList",
    "Endpoint",
    "InvalidInput",
    "LoadBalancerEntry",
    "LoadBalancerList",
    "NatMode",
    "NotFound",
    "Oper",
    "PyloxiError",
    "SecondaryIP",
    "Selection",
    "ServiceArguments",
]
