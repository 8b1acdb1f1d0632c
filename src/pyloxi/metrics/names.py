"""Metric names: loxilb's (each under its legacy name and its canonical `loxilb_*` name, as
loxilb's api/prometheus/metric_names.go exports them) and pyloxi's own `pyloxi_*`.

`CATALOG` lists every family the collector can export, with its type, labels and help: the
Grafana dashboard test checks its queries against it, and docs/operations.md tabulates it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Family:
    name: str  # as exposed; counters without the "_total" suffix prometheus_client adds
    kind: str  # "gauge" | "counter"
    labels: tuple[str, ...]
    help: str

    @property
    def series(self) -> str:
        """The name samples carry in the exposition (counters end in _total)."""
        return f"{self.name}_total" if self.kind == "counter" else self.name


# loxilb: (legacy name, canonical name or None, kind of the canonical one, labels, help).
# loxilb's legacy metrics are gauges (it resets and re-adds them every period); the canonical
# ones are counters where the name says _total.
_LOXILB: tuple[tuple[str, str | None, str, tuple[str, ...], str], ...] = (
    ("active_conntrack_count", "loxilb_active_conntrack_entries", "gauge", (),
     "Tracked flows (one per connection)."),
    ("active_flow_count_tcp", "loxilb_active_flow_count_tcp", "gauge", (), "Tracked TCP flows."),
    ("active_flow_count_udp", "loxilb_active_flow_count_udp", "gauge", (), "Tracked UDP flows."),
    ("active_flow_count_sctp", "loxilb_active_flow_count_sctp", "gauge", (),
     "Tracked SCTP associations."),
    ("inactive_flow_count", None, "gauge", (), "Tracked flows in a closed state."),
    ("consumed_lcus", None, "gauge", (), "Load balancer capacity units (loxilb's formula)."),
    ("new_flow_count", "loxilb_new_flows", "gauge", (),
     "New flows since the previous collection."),
    ("lb_rule_count", "loxilb_lb_rules", "gauge", (), "Load-balancer rules."),
    ("total_requests", "loxilb_requests", "counter", (),
     "Flows (requests) balanced by the rules."),
    ("total_requests_per_service", "loxilb_service_requests", "counter", ("service",),
     "Flows (requests) balanced per service."),
    ("total_errors", "loxilb_errors", "counter", (),
     "Packets the datapath dropped or refused (every drop reason)."),
    ("total_errors_per_service", "loxilb_service_errors", "counter", ("service",),
     "Errors per service (not tracked per service by pyloxi's datapath: no samples)."),
    ("healthy_host_count", "loxilb_healthy_endpoints", "gauge", (),
     "Probed endpoints whose probe state is ok."),
    ("unhealthy_host_count", "loxilb_unhealthy_endpoints", "gauge", (),
     "Probed endpoints whose probe state is nok or red."),
    ("total_fw_drops", "loxilb_fw_drop_packets", "counter", (),
     "Packets dropped by the firewall."),
    ("total_fw_drops_per_rule", "loxilb_fw_rule_drop_packets", "counter", ("fw_rule",),
     "Packets dropped per firewall rule."),
    ("processed_bytes", "loxilb_processed_bytes", "counter", (),
     "Bytes forwarded by the rules, both directions."),
    ("processed_packets", "loxilb_processed_packets", "counter", (),
     "Packets forwarded by the rules, both directions."),
    ("processed_tcp_bytes", "loxilb_processed_tcp_bytes", "counter", (), "TCP bytes forwarded."),
    ("processed_udp_bytes", "loxilb_processed_udp_bytes", "counter", (), "UDP bytes forwarded."),
    ("processed_sctp_bytes", "loxilb_processed_sctp_bytes", "counter", (),
     "SCTP bytes forwarded."),
    ("lb_rule_interaction_bytes", "loxilb_lb_rule_interaction_bytes", "counter",
     ("service", "sip", "dip"), "Bytes per service and endpoint (sip: all clients, empty)."),
    ("lb_rule_interaction_packets", "loxilb_lb_rule_interaction_packets", "counter",
     ("service", "sip", "dip"), "Packets per service and endpoint (sip: all clients, empty)."),
    ("endpoint_load_dists_per_service", None, "gauge", ("service", "dip"),
     "Share of its service's packets each endpoint took (0..1)."),
    ("total_load_dists_per_service", None, "gauge", ("service",),
     "Share of all packets each service took (0..1)."),
)

_LOXILB_CANONICAL_ONLY: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("loxilb_conntrack_max_entries", "gauge", (), "Entries the conntrack table holds (two per "
     "flow)."),
    ("loxilb_conntrack_stat_resets", "counter", (), "Counter resets (pyloxi never resets: 0)."),
    ("loxilb_closed_connections_processed", "counter", (),
     "Flows removed by conntrack aging."),
    ("loxilb_firewall_rules", "gauge", (), "Firewall rules."),
    ("loxilb_system_cpu_utilization_percent", "gauge", (),
     "CPU busy since the previous collection, percent."),
    ("loxilb_system_memory_utilization_percent", "gauge", (), "Memory in use, percent."),
    ("loxilb_system_disk_utilization_percent", "gauge", (),
     "Disk in use on the state directory's filesystem, percent."),
    ("loxilb_processed_tcp_packets", "counter", (), "TCP packets forwarded."),
    ("loxilb_processed_udp_packets", "counter", (), "UDP packets forwarded."),
    ("loxilb_processed_sctp_packets", "counter", (), "SCTP packets forwarded."),
    ("loxilb_service_traffic_bytes", "counter", ("service",), "Bytes per service."),
    ("loxilb_service_traffic_packets", "counter", ("service",), "Packets per service."),
    ("loxilb_endpoint_traffic_bytes", "counter", ("service", "dip"),
     "Bytes per service endpoint."),
    ("loxilb_client_traffic_packets", "counter", ("sip",),
     "Packets per client (needs a conntrack walk per scrape: not exported, no samples)."),
)

_RULE = ("rule", "name", "proto")
_EP = ("rule", "name", "endpoint")
_PROBE = ("probe", "ip", "type", "port")

_PYLOXI: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("pyloxi_lb_rules", "gauge", (), "Load-balancer rules installed."),
    ("pyloxi_rule_packets", "counter", _RULE, "Packets forwarded by a rule, both directions."),
    ("pyloxi_rule_bytes", "counter", _RULE, "Bytes forwarded by a rule, both directions."),
    ("pyloxi_rule_new_flows", "counter", _RULE, "Flows a rule balanced."),
    ("pyloxi_rule_active_flows", "gauge", _RULE, "Established flows of a rule."),
    ("pyloxi_endpoint_packets", "counter", _EP, "Packets to and from an endpoint."),
    ("pyloxi_endpoint_bytes", "counter", _EP, "Bytes to and from an endpoint."),
    ("pyloxi_endpoint_active_flows", "gauge", _EP, "Established flows of an endpoint."),
    ("pyloxi_endpoint_active", "gauge", _EP,
     "1 if the endpoint takes new flows, 0 if its probe marked it down."),
    ("pyloxi_new_flows", "counter", (), "Flows the datapath created."),
    ("pyloxi_new_flows_per_second", "gauge", (),
     "Flows created per second since the previous collection."),
    ("pyloxi_conntrack_flows", "gauge", ("proto", "state"),
     "Tracked flows by protocol and state (as of the last aging sweep)."),
    ("pyloxi_conntrack_capacity_entries", "gauge", (),
     "Entries the established conntrack table holds (two per flow)."),
    ("pyloxi_datapath_drops", "counter", ("reason",),
     "Packets the datapath dropped or refused, by reason."),
    ("pyloxi_datapath_events", "counter", ("event",), "Every datapath event counter."),
    ("pyloxi_probe_up", "gauge", _PROBE, "1 if the endpoint probe's verdict is up."),
    ("pyloxi_probe_rtt_seconds", "gauge", _PROBE,
     "Average round-trip time of the recent successful probes."),
    ("pyloxi_probe_consecutive_failures", "gauge", _PROBE, "Failed probes in a row."),
    ("pyloxi_probes", "counter", _PROBE, "Probes sent."),
    ("pyloxi_mirror_packets", "counter", ("mirror",),
     "Packets a mirror copied to its mirror port."),
    ("pyloxi_mirror_bytes", "counter", ("mirror",), "Bytes a mirror copied to its mirror port."),
    ("pyloxi_api_requests", "counter", ("method", "route", "code"), "REST API requests."),
    ("pyloxi_api_errors", "counter", ("method", "route", "code"),
     "REST API requests answered with a 4xx or 5xx status."),
    ("pyloxi_aging_sweeps", "counter", (), "Conntrack aging sweeps."),
    ("pyloxi_aging_last_sweep_seconds", "gauge", (),
     "Duration of the last conntrack aging sweep."),
    ("pyloxi_aging_sweep_seconds", "counter", (), "Time spent in conntrack aging sweeps."),
    ("pyloxi_aged_flows", "counter", (), "Flows removed by conntrack aging."),
    ("pyloxi_ha_state", "gauge", ("instance", "state"),
     "1 for the HA state this node is in, per instance."),
    ("pyloxi_ha_serving", "gauge", ("instance",),
     "1 if this node serves the instance's VIPs (MASTER, or no state set)."),
    ("pyloxi_policer_packets", "counter", ("policy", "result"),
     "Packets a QoS policer let through (result ok) or dropped (result dropped)."),
    ("pyloxi_policer_bytes", "counter", ("policy", "result"),
     "IP bytes a QoS policer let through (result ok) or dropped (result dropped)."),
    ("pyloxi_scrape_duration_seconds", "gauge", (),
     "Time the previous collection took to read the state and build the samples."),
)

# Datapath event counters (bpf/include/pyloxi/maps.h enum pl_stat) that count a packet the
# datapath dropped, or refused to balance (handed to the kernel, which answers RST/ICMP),
# with the reason's label. Counters not named here are events only (pyloxi_datapath_events).
DROP_REASONS: dict[str, str] = {
    "drop_source": "source_not_allowed",
    "no_endpoint": "no_endpoint",
    "nat_exhausted": "nat_exhausted",
    "ct_insert_fail": "conntrack_insert_failed",
    "ct_full": "conntrack_full",
    "reply_miss": "reply_without_flow",
    "pickup_refused": "midstream_refused",
    "out_of_window": "out_of_window",
    "icmp_limited": "icmp_rate_limited",
    "xlate_refused": "nat64_untranslatable",
    "dsr_too_big": "dsr_too_big",
    "sync_drop": "sync_event_lost",
    "fw_drop": "firewall",
    "egress_refused": "egress_midstream",
    "policer_drop": "policer",
}
FW_DROP = "fw_drop"


def _families() -> dict[str, Family]:
    out: dict[str, Family] = {}
    for legacy, canonical, kind, labels, help_ in _LOXILB:
        # legacy names are gauges in loxilb, whatever they count
        out[legacy] = Family(legacy, "gauge", labels, help_)
        if canonical is not None:
            out[canonical] = Family(canonical, kind, labels, help_)
    for name, kind, labels, help_ in (*_LOXILB_CANONICAL_ONLY, *_PYLOXI):
        out[name] = Family(name, kind, labels, help_)
    return out


CATALOG: dict[str, Family] = _families()


def series_names() -> frozenset[str]:
    """Every metric name a sample may carry in the exposition."""
    return frozenset(f.series for f in CATALOG.values())
