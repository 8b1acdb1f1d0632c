"""Prometheus exposition with loxilb's metric names (legacy and loxilb_*) and pyloxi_*.

`Sources` says where a collection reads from (callables the daemon wires in), `Collector`
reads and builds the families, `MetricsExporter` serves /metrics, /config/metrics and the JSON
/metrics/* views, `ApiStats`/`AgingStats` count what happens between scrapes.
"""

from pyloxi.metrics.collector import Collector, Reading, Sources
from pyloxi.metrics.counters import AgingStats, ApiStats
from pyloxi.metrics.exporter import CONTENT_TYPE, VIEWS, MetricsExporter
from pyloxi.metrics.names import CATALOG, series_names

__all__ = ["CATALOG", "CONTENT_TYPE", "VIEWS", "AgingStats", "ApiStats", "Collector",
           "MetricsExporter", "Reading", "Sources", "series_names"]
