"""The exporter behind loxilb's metric routes: the Prometheus text of `GET /metrics`, its
on/off switch (`/config/metrics`, daemon flag -p/--prometheus), and the JSON views of
`GET /metrics/*` with loxilb's field names.

A scrape reads the probe verdicts in the event loop's thread (where the probe manager lives)
and everything else in a worker thread, so a big rule table never stalls the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from pyloxi.engine.program import Flow
from pyloxi.metrics.collector import Collector, ProbeView, Samples, Sources
from pyloxi.metrics.counters import AgingStats, ApiStats
from pyloxi.metrics.names import CATALOG
from pyloxi.metrics.text import exposition
from pyloxi.model.errors import InvalidInput, PyloxiError

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# GET /metrics/<view> (loxilb's swagger): the families each view is made of
VIEWS = ("flowcount", "hostcount", "lbrulecount", "newflowcount", "requestcount", "errorcount",
         "processedtraffic", "lbprocessedtraffic", "epdisttraffic", "servicedisttraffic",
         "fwdrops", "reqcountperclient")


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """A scrape allocates some 10^5 short-lived tuples and strings, none in a cycle; the cyclic
    collector, triggered every 700 allocations, walked the whole heap (rule table included) and
    took half the time of a 10,000-rule scrape. Reference counting still frees everything."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class MetricsDisabled(PyloxiError):
    def __init__(self) -> None:
        super().__init__(503, "prometheus is turned off (POST /config/metrics turns it on)")


class MetricsExporter:
    def __init__(self, sources: Sources, *, enabled: bool = False,
                 flows: Callable[[], Sequence[Flow]] | None = None) -> None:
        self.collector = Collector(sources)
        self._flows = flows
        self._enabled = enabled
        # one collection at a time: readings update the new-flows rate
        self._lock = threading.Lock()

    @property
    def api(self) -> ApiStats:
        """Fed by the API's request-counting middleware."""
        return self.collector.sources.api

    @property
    def aging(self) -> AgingStats:
        """Fed by the daemon's conntrack aging loop."""
        return self.collector.sources.aging

    # --- /config/metrics (the API answers loxilb's 200 "already ..." without calling these) ---

    @property
    def enabled(self) -> bool:
        return self._enabled

    def turn_on(self) -> None:
        if self._enabled:
            raise InvalidInput("already prometheus turned on")
        self._enabled = True

    def turn_off(self) -> None:
        if not self._enabled:
            raise InvalidInput("already prometheus turned off")
        self._enabled = False

    # --- /metrics ---

    def render(self, probes: Sequence[ProbeView] | None = None) -> bytes:
        """The Prometheus exposition (blocking: call it off the event loop)."""
        with self._lock, _no_gc():
            return exposition(self.collector.samples(self.collector.read(probes)))

    async def scrape(self) -> bytes:
        if not self._enabled:
            raise MetricsDisabled()
        probes = list(self.collector.sources.probes())  # in the loop's thread
        return await asyncio.to_thread(self.render, probes)

    # --- /metrics/<view> ---

    def samples(self, probes: Sequence[ProbeView] | None = None) -> Samples:
        with self._lock, _no_gc():
            return self.collector.samples(self.collector.read(probes))

    async def view(self, name: str) -> dict[str, Any]:
        if name == "reqcountperclient":
            return await asyncio.to_thread(self.clients)
        probes = list(self.collector.sources.probes())
        samples = await asyncio.to_thread(self.samples, probes)
        return json_view(name, samples)

    def clients(self) -> dict[str, Any]:
        """Tracked flows per client address (a conntrack walk, so only on request)."""
        if self._flows is None:
            return {}
        return dict(Counter(f.src for f in self._flows()))


def json_view(name: str, samples: Samples) -> dict[str, Any]:
    """One of loxilb's /metrics/* JSON bodies (swagger definitions *Metrics), legacy names."""

    def labelled(metric: str) -> list[tuple[dict[str, str], float]]:
        keys = CATALOG[metric].labels
        return [(dict(zip(keys, labels, strict=True)), v) for labels, v in samples[metric]]

    def one(metric: str) -> float:
        return sum(v for _, v in samples[metric])

    def listed(metric: str, label: str) -> list[dict[str, Any]]:
        return [{"name": lab[label], "value": v} for lab, v in labelled(metric)]

    if name == "flowcount":
        return {k: one(k) for k in ("active_conntrack_count", "active_flow_count_tcp",
                                    "active_flow_count_udp", "active_flow_count_sctp",
                                    "inactive_flow_count")}
    if name == "hostcount":
        return {k: one(k) for k in ("healthy_host_count", "unhealthy_host_count")}
    if name == "lbrulecount":
        return {"lb_rule_count": one("lb_rule_count")}
    if name == "newflowcount":
        return {"new_flow_count": one("new_flow_count")}
    if name == "requestcount":
        return {"total_requests": one("total_requests"),
                "total_requests_per_service": listed("total_requests_per_service", "service")}
    if name == "errorcount":
        return {"total_errors": one("total_errors"),
                "total_errors_per_service": listed("total_errors_per_service", "service")}
    if name == "processedtraffic":
        return {k: one(k) for k in ("processed_bytes", "processed_tcp_bytes",
                                    "processed_sctp_bytes", "processed_udp_bytes",
                                    "processed_packets")}
    if name == "lbprocessedtraffic":
        return {m: [{"service": lab["service"], "sip": lab["sip"], "dip": lab["dip"], "value": v}
                    for lab, v in labelled(m)]
                for m in ("lb_rule_interaction_bytes", "lb_rule_interaction_packets")}
    if name == "epdisttraffic":
        packets = {(lab["service"], lab["dip"]): v
                   for lab, v in labelled("lb_rule_interaction_packets")}
        eps: dict[str, list[dict[str, Any]]] = {}
        for lab, ratio in labelled("endpoint_load_dists_per_service"):
            eps.setdefault(lab["service"], []).append(
                {"dip": lab["dip"], "value": packets.get((lab["service"], lab["dip"]), 0),
                 "ratio": ratio})
        return eps
    if name == "servicedisttraffic":
        per_service = {lab["service"]: v
                       for lab, v in labelled("loxilb_service_traffic_packets")}
        return {lab["service"]: {"value": per_service.get(lab["service"], 0), "ratio": ratio}
                for lab, ratio in labelled("total_load_dists_per_service")}
    if name == "fwdrops":
        return {"total_fw_drops": one("total_fw_drops"),
                "total_fw_drops_per_rule": [{"fw_rule": lab.get("fw_rule", ""), "value": v}
                                            for lab, v in
                                            labelled("total_fw_drops_per_rule")]}
    raise InvalidInput(f"no metrics view {name!r}")
