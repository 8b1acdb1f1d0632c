"""Instance IPs in an active-active cluster (loxilb's fullnat way).

Each node has its own instance IP per HA instance: the cistate `vip` posted for it. fullnat
and onearm flows are source-NATed to it (pyloxi.engine.rules.snat_planner), so an endpoint's
replies go to an address that BGP routes to this node. The node announces its own instance
IPs with the MASTER attributes while the instance is served here (MASTER, NOT_DEFINED), and
every peer's with the BACKUP attributes (MED 20): when a node dies its routes go and the
router sends the replies for its instance IP to the survivors, which have its flows from
conntrack sync.

The peers' instance IPs arrive on the control channel (pyloxi.cluster.peers, section
"instance": `{instance name: ip}`). A peer that goes silent is exactly the one whose IP must
stay announced, so the last IPs each peer told are kept (in memory) until it tells others.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable
from typing import Any

from pyloxi.bgp.speaker import HA_ATTRIBUTES
from pyloxi.cluster.state import ClusterState

log = logging.getLogger(__name__)

SECTION = "instance"


def _ip(text: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An instance IP, or None for loxilb's nil (0.0.0.0, ::) and anything malformed."""
    try:
        ip = ipaddress.ip_address(str(text))
    except ValueError:
        return None
    return None if ip.is_unspecified else ip


class InstanceIPs:
    """This node's instance IPs (from the cluster state) and the peers' (from the control
    channel). `on_peers_changed` is called when a peer's IPs change (BGP re-reads `paths`)."""

    def __init__(self, cluster: ClusterState,
                 on_peers_changed: Callable[[], None] = lambda: None) -> None:
        self.cluster = cluster
        self._on_peers_changed = on_peers_changed
        self._peers: dict[int, dict[str, str]] = {}
        self._lock = threading.Lock()

    def ip(self, instance: str, fam: int) -> str | None:
        """The engine's question: the instance IP of `instance` of family 4|6, if any."""
        ip = _ip(self.cluster.instance(instance).vip)
        return str(ip) if ip is not None and ip.version == fam else None

    def own(self) -> dict[str, Any]:
        """The control section this node sends: {instance: ip}, set ones only."""
        return {i.name: str(ip) for i in self.cluster.instances() if (ip := _ip(i.vip))}

    def receive(self, node: int, payload: dict[str, Any]) -> None:
        if not payload:
            return  # gone (or tells nothing): its last IPs stay announced as BACKUP
        ips = {str(k): str(ip) for k, v in payload.items() if (ip := _ip(v)) is not None}
        with self._lock:
            if self._peers.get(node) == ips:
                return
            self._peers[node] = ips
        log.info("cluster peer %d: instance IPs %s", node, ips)
        self._on_peers_changed()

    def peer_ips(self) -> dict[int, dict[str, str]]:
        with self._lock:
            return {n: dict(v) for n, v in self._peers.items()}

    def paths(self) -> dict[str, tuple[int, int]]:
        """What BGP announces beside the VIPs: {ip: (local-pref, MED)}."""
        out = {ip: HA_ATTRIBUTES["BACKUP"]
               for ips in self.peer_ips().values() for ip in ips.values()}
        for inst in self.cluster.instances():
            ip = _ip(inst.vip)
            if ip is not None:
                out[str(ip)] = HA_ATTRIBUTES["MASTER" if inst.serving else "BACKUP"]
        return out
