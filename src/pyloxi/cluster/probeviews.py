"""Agreed probe views: an endpoint leaves the tables by the majority of nodes, not by one probe.

Every node probes the endpoints itself. If each applied only its own verdicts, a failure seen
from one node alone (its link to the endpoint, its own overload) would take the endpoint out of
that node's tables only: the nodes' Maglev tables would differ and a flow moving between nodes
would change endpoint. So the verdicts pass through this filter on their way to the engine:

    ProbeManager --on_change--> ProbeViews.local_changed --(effective change)--> sink (engine)
    peer channel section "probes": provide() / receive(node, payload)

- **Views.** Each node sends `{"v": 1, "eps": {endpoint: "up"|"down"}}` for every endpoint it
  probes now (its verdict in force, an external red included; "up" until probed, as the probe
  manager assumes). The endpoint is named as the verdict applies to it, by identity across nodes:
  `<proto> <ip>:<targetPort>` (a verdict applies to every rule holding that endpoint, as
  Engine.set_endpoint_state does).
- **Decision.** The live voters for an endpoint are this node (if it probes it) and every peer
  heard from (the channel reports a peer silent for 3 s as gone, with an empty payload) whose view
  names it. The endpoint is down when more voters say down than up. **A tie keeps it up**: in a
  two-node cluster a disagreement says one node cannot reach the endpoint, not that the endpoint
  is dead, and taking it out on one node only is exactly the divergence this prevents (the cost:
  the node that cannot reach it keeps sending it its share of new flows until the other agrees).
- Alone (no live peer) the local view decides: the sink sees exactly what it saw without this
  filter. A peer joining, changing its view or going silent re-decides every endpoint.
- The sink is called only when an endpoint's effective state changes, in decision order, from
  whichever thread made the decision (a probe verdict: the event loop; a peer: the channel's
  thread): give it something quick (the daemon submits to its verdict worker).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from pyloxi.probes import ProbeTarget

log = logging.getLogger(__name__)

SECTION = "probes"
VERSION = 1

Sink = Callable[[ProbeTarget, bool, str], object]
LocalViews = Callable[[], Iterable[tuple[ProbeTarget, bool]]]


def endpoint_id(target: ProbeTarget) -> str:
    """The endpoint a verdict applies to, named the same on every node."""
    ip = f"[{target.ip}]" if ":" in target.ip else target.ip
    return f"{target.ep_proto} {ip}:{target.ep_port}"


@dataclass(frozen=True, slots=True)
class Disagreement:
    endpoint: str
    effective: bool
    views: tuple[tuple[int, bool], ...]  # (node, up) of every voter; this node included


class ProbeViews:
    """`local` lists this node's probed endpoints with their verdict in force (target, up);
    `sink` gets the effective verdicts (target, up, reason); `self_index` names this node."""

    def __init__(self, local: LocalViews, sink: Sink, self_index: int = 0) -> None:
        self._local = local
        self._sink = sink
        self.self_index = self_index
        self._lock = threading.Lock()
        self._peers: dict[int, dict[str, bool]] = {}
        # what the sink was last told, by endpoint (absent: never told, i.e. up, as the engine
        # starts every endpoint)
        self._applied: dict[str, bool] = {}
        self._overrides = 0  # times the majority began overruling a local verdict
        self._overruled: set[str] = set()  # endpoints it overrules now
        # the channel's "send soon" (ClusterPeers.changed): peers hear a new verdict at once
        self.announce: Callable[[], None] | None = None

    def _snapshot(self) -> list[tuple[ProbeTarget, bool]]:
        """The local views, read from any thread. The probe manager's table belongs to the event
        loop; a peer's thread reading it while the loop adds a target can see the dict change
        size mid-iteration: read again (it is rare and short)."""
        for _ in range(9):
            try:
                return list(self._local())
            except RuntimeError:
                continue
        return list(self._local())

    # ------------------------------------------------------------ inputs

    def local_changed(self, target: ProbeTarget, up: bool, reason: str) -> None:
        """The ProbeManager's on_change: this node's verdict on `target` moved."""
        if not target.ep_proto:
            return  # an API-only host: no LB endpoint to decide on
        with self._lock:
            self._decide(changed=(target, up, reason))
        if self.announce is not None:
            self.announce()

    def provide(self) -> dict[str, object]:
        eps = {endpoint_id(t): "up" if up else "down" for t, up in self._snapshot() if t.ep_proto}
        return {"v": VERSION, "eps": eps}

    def receive(self, node: int, payload: Mapping[str, object]) -> None:
        eps = payload.get("eps") if payload.get("v") == VERSION else None
        with self._lock:
            if isinstance(eps, dict):
                view = {str(k): v == "up" for k, v in eps.items() if v in ("up", "down")}
                if self._peers.get(node) == view:
                    return
                self._peers[node] = view
            elif self._peers.pop(node, None) is None:
                return  # gone, and we had nothing from it
            else:
                log.info("node %d gone: its probe view no longer counts", node)
            self._decide()

    # ------------------------------------------------------------ decision

    def _votes(self, ep: str, mine: bool) -> tuple[int, int]:
        up = 1 if mine else 0
        down = 1 - up
        for view in self._peers.values():
            v = view.get(ep)
            if v is not None:
                up += v
                down += not v
        return up, down

    def _decide(self, changed: tuple[ProbeTarget, bool, str] | None = None) -> None:
        """Under the lock: re-decide every local endpoint; tell the sink what moved."""
        local: dict[str, tuple[ProbeTarget, bool]] = {
            endpoint_id(t): (t, up) for t, up in self._snapshot() if t.ep_proto}
        if changed is not None:  # the manager may not show it yet: trust the event
            local[endpoint_id(changed[0])] = changed[:2]
        for ep in self._applied.keys() - local.keys():
            del self._applied[ep]  # no longer probed here: a new target starts up again
        for ep, (target, mine) in local.items():
            up, down = self._votes(ep, mine)
            effective = down <= up  # tie: up
            self._note_overruled(ep, mine, effective, up, down)
            if self._applied.get(ep, True) == effective:
                continue
            self._applied[ep] = effective
            if up + down == 1:
                reason = changed[2] if changed is not None and changed[0] == target else \
                    "no peer view any more: the local verdict decides"
            else:
                reason = f"cluster: {down} of {up + down} live nodes see it down"
            try:
                self._sink(target, effective, reason)
            except Exception:
                log.exception("probe verdict sink failed for %s", ep)
        self._overruled &= local.keys()

    def _note_overruled(self, ep: str, mine: bool, effective: bool, up: int, down: int) -> None:
        """Count (and log, once) each time the majority starts overruling this node's verdict."""
        if mine == effective:
            self._overruled.discard(ep)
            return
        if ep in self._overruled:
            return
        self._overruled.add(ep)
        self._overrides += 1
        log.warning("endpoint %s is %s from here, but %d of %d live nodes see it %s: kept %s",
                    ep, "UP" if mine else "DOWN", up if effective else down, up + down,
                    "up" if effective else "down", "UP" if effective else "DOWN")

    # ------------------------------------------------------------ reads

    @property
    def overrides(self) -> int:
        return self._overrides

    def effective(self) -> dict[str, bool]:
        """Effective state of every local endpoint (what the sink was told; up if never)."""
        with self._lock:
            return {endpoint_id(t): self._applied.get(endpoint_id(t), True)
                    for t, _ in self._snapshot() if t.ep_proto}

    def disagreements(self) -> list[Disagreement]:
        """Endpoints whose voters do not all agree (the local verdict included)."""
        out: list[Disagreement] = []
        with self._lock:
            for t, mine in self._snapshot():
                if not t.ep_proto:
                    continue
                ep = endpoint_id(t)
                views = [(self.self_index, mine)] + [
                    (node, view[ep]) for node, view in sorted(self._peers.items()) if ep in view]
                if len({up for _, up in views}) > 1:
                    out.append(Disagreement(ep, self._applied.get(ep, True), tuple(views)))
        return sorted(out, key=lambda d: d.endpoint)
