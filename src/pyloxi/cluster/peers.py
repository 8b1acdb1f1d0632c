"""The cluster's control channel: small JSON facts every node tells every peer.

Every node, whatever its HA role, sends each peer a control frame about once a second and
soon after a change, on the conntrack sync stream (TCP 22222; see pyloxi.cluster.ctsync for
the framing: a record size of 0 marks a JSON payload):

    {"node": <this node's index>, "sections": {<name>: <payload object>, ...}}

Parts of pyloxi own sections: `register(section, provide, receive)`. `provide()` gives this
node's payload (called when a frame is built, from the sync thread); `receive(node, payload)`
is called with each frame a peer sends (from a reader thread), and with `{}` once that peer
has been silent for `stale_s` (3 s): it counts as gone. `peers()` is the view with ages.
Callbacks must be quick and thread-safe; one that raises is logged and the others still run.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

PERIOD_S = 1.0
STALE_S = 3.0
MAX_PAYLOAD = 1 << 20  # a control frame is small; a bigger one is a bug or an attack

Provide = Callable[[], dict[str, Any]]
Receive = Callable[[int, dict[str, Any]], None]


@dataclass
class PeerView:
    """What the last frame of a peer said, and when (this node's monotonic clock)."""

    node: int
    seen: float
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)

    def age(self, now: float | None = None) -> float:
        return (time.monotonic() if now is None else now) - self.seen


class ClusterPeers:
    """Registry of sections and the peers' last words. Thread-safe."""

    def __init__(self, self_index: int, *, period_s: float = PERIOD_S,
                 stale_s: float = STALE_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.self_index = self_index
        self.period_s = period_s
        self.stale_s = stale_s
        self._clock = clock
        self._sections: dict[str, tuple[Provide, Receive]] = {}
        self._peers: dict[int, PeerView] = {}
        self._lock = threading.Lock()
        self._dirty = threading.Event()
        self._last_sent = -1e18
        self.frames_in = 0
        self.frames_bad = 0

    # --- for the parts that own sections ---

    def register(self, section: str, provide: Provide, receive: Receive) -> None:
        with self._lock:
            if section in self._sections:
                raise ValueError(f"control section {section!r} registered twice")
            self._sections[section] = (provide, receive)
        self._dirty.set()

    def changed(self) -> None:
        """This node's facts changed: the next sync tick (≤ 50 ms) sends a frame."""
        self._dirty.set()

    def peers(self) -> dict[int, PeerView]:
        """Live peers (heard from within `stale_s`), by node index."""
        now = self._clock()
        with self._lock:
            return {n: PeerView(p.node, p.seen, dict(p.sections))
                    for n, p in self._peers.items() if now - p.seen < self.stale_s}

    # --- for the transport (CtSync) ---

    def due(self) -> bool:
        """Whether a frame should go out now (period elapsed, or a change)."""
        return self._dirty.is_set() or self._clock() - self._last_sent >= self.period_s

    def frame(self) -> bytes:
        """This node's frame (JSON), built from every section's provider."""
        self._dirty.clear()
        self._last_sent = self._clock()
        with self._lock:
            sections = list(self._sections.items())
        body: dict[str, dict[str, Any]] = {}
        for name, (provide, _) in sections:
            try:
                body[name] = provide()
            except Exception:  # noqa: BLE001 - one bad section must not silence the others
                log.exception("control section %s: provider failed", name)
        return json.dumps({"node": self.self_index, "sections": body},
                          separators=(",", ":")).encode()

    def on_frame(self, data: bytes, addr: object = None) -> None:
        """A peer's frame: remembered, and handed to each section's receiver."""
        try:
            msg = json.loads(data)
            node = msg["node"]
            sections = msg["sections"]
            if not isinstance(node, int) or not isinstance(sections, dict) \
                    or node == self.self_index:
                raise ValueError(f"node {node!r}")
        except (ValueError, KeyError, TypeError) as exc:
            self.frames_bad += 1
            log.warning("control frame from %s refused: %s", addr, exc)
            return
        with self._lock:
            known = dict(self._sections)
            self._peers[node] = PeerView(node, self._clock(), {
                k: v for k, v in sections.items() if isinstance(k, str) and isinstance(v, dict)})
            view = self._peers[node].sections
        self.frames_in += 1
        for name, (_, receive) in known.items():
            self._call(receive, name, node, view.get(name, {}))

    def expire(self) -> list[int]:
        """Peers silent for `stale_s` are gone: each section's receiver gets `{}` once.
        Called by the transport's tick; returns the nodes that went."""
        now = self._clock()
        with self._lock:
            gone = [n for n, p in self._peers.items() if now - p.seen >= self.stale_s]
            for n in gone:
                del self._peers[n]
            known = dict(self._sections)
        for n in gone:
            log.warning("cluster peer %d silent for %.0f s: gone", n, self.stale_s)
            for name, (_, receive) in known.items():
                self._call(receive, name, n, {})
        return gone

    @staticmethod
    def _call(receive: Receive, name: str, node: int, payload: dict[str, Any]) -> None:
        try:
            receive(node, payload)
        except Exception:  # noqa: BLE001
            log.exception("control section %s: receiver failed (peer %d)", name, node)
