"""VIP advertisement through gobgpd, driven over its gRPC API (as loxilb does).

`BgpSpeaker` holds the desired BGP state (global config, neighbours, the VIPs of rules with
`bgp: true`, the HA state of each instance), starts and supervises gobgpd (or attaches to a
running one) and keeps gobgpd's announced paths in step with it.
"""

from pyloxi.bgp.config import BgpGlobal, BgpNeighbor
from pyloxi.bgp.speaker import (
    BgpSpeaker,
    BgpUnavailable,
    Timers,
    path_attributes,
)

__all__ = ["BgpGlobal", "BgpNeighbor", "BgpSpeaker", "BgpUnavailable", "Timers",
           "path_attributes"]
