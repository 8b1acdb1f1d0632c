"""Active-active agreement: the Maglev fingerprints and the probe views on the peer channel.

    ActiveActive(MaglevFingerprints(engine.programs), ProbeViews(...), self_index)
        .attach(channel)        # sections "maglev" and "probes" (pyloxi.cluster.peers)
        .status()               # GET /netlox/v1/cluster/status, `pyloxi get cluster`

The channel (`register(section, provide, receive)`) sends each section's `provide()` to every
peer about every second and calls `receive(node, payload)` with a peer's, or `receive(node, {})`
once the peer has been silent for 3 s (and, in pyloxi.cluster.peers, when a peer's frame lacks
the section). If the channel has `changed()`, a new local probe verdict is sent at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from pyloxi.cluster import fingerprint, probeviews
from pyloxi.cluster.fingerprint import MaglevFingerprints
from pyloxi.cluster.probeviews import ProbeViews
from pyloxi.model.cluster import (
    ClusterPeer,
    ClusterStatus,
    MaglevMismatch,
    ProbeDisagreement,
    ProbeView,
)

Provide = Callable[[], dict[str, Any]]
Receive = Callable[[int, dict[str, Any]], None]


class PeerChannel(Protocol):
    def register(self, section: str, provide: Provide, receive: Receive) -> None: ...


def _word(up: bool) -> str:
    return "up" if up else "down"


class ActiveActive:
    def __init__(self, fingerprints: MaglevFingerprints, views: ProbeViews, self_index: int = 0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.fingerprints = fingerprints
        self.views = views
        self.self_index = self_index
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[int, tuple[float, bool]] = {}  # node -> (last heard, live)

    def attach(self, channel: PeerChannel) -> None:
        channel.register(fingerprint.SECTION, self.fingerprints.provide,
                         self._heard(self.fingerprints.receive))
        channel.register(probeviews.SECTION, self.views.provide, self._heard(self.views.receive))
        changed = getattr(channel, "changed", None)  # optional: "send a frame soon"
        if callable(changed):
            self.views.announce = changed

    def _heard(self, receive: Callable[[int, Mapping[str, object]], None]) -> Receive:
        def wrapped(node: int, payload: dict[str, Any]) -> None:
            with self._lock:
                if payload:
                    self._seen[node] = (self._clock(), True)
                elif node in self._seen:
                    self._seen[node] = (self._seen[node][0], False)
            receive(node, payload)
        return wrapped

    def status(self) -> ClusterStatus:
        now = self._clock()
        with self._lock:
            peers = [ClusterPeer(index=n, last_seen=round(now - t, 3), live=live)
                     for n, (t, live) in sorted(self._seen.items())]
        return ClusterStatus(
            self_index=self.self_index,
            peers=peers,
            mismatches=[MaglevMismatch(service=m.service, peer=m.node, local=m.local,
                                       remote=m.remote)
                        for m in self.fingerprints.mismatches()],
            mismatch_count=self.fingerprints.mismatches_seen,
            disagreements=[ProbeDisagreement(endpoint=d.endpoint, effective=_word(d.effective),
                                             views=[ProbeView(node=n, state=_word(up))
                                                    for n, up in d.views])
                           for d in self.views.disagreements()],
            overrides=self.views.overrides,
        )
