"""API objects shared by the REST server, the CLI, the config store and the Kubernetes agent.

- `limits`: every limit (ports, endpoints per rule, timeouts, text lengths), defined once;
- `enums`: selection, NAT mode, oper, protocol, probe type, host state;
- `fields`: the typed field types built on those (Port, IPAddress, WireSelection, ...);
- `lb`, `endpoint`, `conntrack`: the loxilb wire objects.
"""

from pyloxi.model.conntrack import ConntrackEntry, ConntrackList
from pyloxi.model.enums import (
    HOST_STATES,
    PROBE_TYPES,
    PROTO_NUMBERS,
    PROTOCOLS,
    HostState,
    NatMode,
    Oper,
    ProbeType,
    Protocol,
    Selection,
)
from pyloxi.model.errors import CapacityExceeded, Conflict, InvalidInput, NotFound, PyloxiError
from pyloxi.model.lb import (
    AllowedSource,
    Endpoint,
    LoadBalancerEntry,
    LoadBalancerList,
    SecondaryIP,
    ServiceArguments,
)

__all__ = [
    "HOST_STATES",
    "PROBE_TYPES",
    "PROTOCOLS",
    "PROTO_NUMBERS",
    "AllowedSource",
    "CapacityExceeded",
    "Conflict",
    "ConntrackEntry",
    "ConntrackList",
    "Endpoint",
    "HostState",
    "InvalidInput",
    "LoadBalancerEntry",
    "LoadBalancerList",
    "NatMode",
    "NotFound",
    "Oper",
    "ProbeType",
    "Protocol",
    "PyloxiError",
    "SecondaryIP",
    "Selection",
    "ServiceArguments",
]
