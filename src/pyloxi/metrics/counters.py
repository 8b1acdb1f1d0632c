"""Counters the control plane feeds as things happen (the datapath's are read at scrape time):
REST API requests (fed by the API's middleware) and conntrack aging sweeps (fed by the
daemon's aging loop). Both are cheap, thread-safe increments."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass


class ApiStats:
    """REST API requests by (method, route template, status code). The route is the template
    ("/netlox/v1/config/loadbalancer/name/{lb_name}"), never the raw path, so a client cannot
    grow the label set; requests no route matched count under route "other"."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[tuple[str, str, str]] = Counter()

    def observe(self, method: str, route: str | None, status: int) -> None:
        key = (method.upper(), route or "other", str(status))
        with self._lock:
            self._requests[key] += 1

    def snapshot(self) -> dict[tuple[str, str, str], int]:
        with self._lock:
            return dict(self._requests)


@dataclass
class AgingSample:
    sweeps: int = 0
    seconds_total: float = 0.0
    last_seconds: float = 0.0
    flows_removed: int = 0


class AgingStats:
    """Conntrack aging sweeps: how many, how long, how many flows they removed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._s = AgingSample()

    def observe(self, seconds: float, removed: int) -> None:
        with self._lock:
            self._s.sweeps += 1
            self._s.seconds_total += seconds
            self._s.last_seconds = seconds
            self._s.flows_removed += removed

    def snapshot(self) -> AgingSample:
        with self._lock:
            return AgingSample(**vars(self._s))
