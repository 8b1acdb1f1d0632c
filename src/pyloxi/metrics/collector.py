"""The Prometheus collector: reads the engine, datapath, probe and cluster state when scraped.

Nothing polls the packet path in the background. A collection is one `read()` (the rule table,
then every service's counters in one batch call of the datapath, the event counters, the
conntrack summary the last aging sweep left, probe verdicts, HA states) and one pass that turns
that reading into metric families. The datapath's counters are per-CPU and only summed here,
so reading them costs the packet path nothing.

The sources are callables handed in by the daemon (this package may not import the datapath,
probes or cluster packages, which sit beside it): see `Sources`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from pyloxi.engine.program import ServiceCounters, ServiceProgram
from pyloxi.engine.rules import Rule
from pyloxi.metrics.counters import AgingSample, AgingStats, ApiStats
from pyloxi.metrics.names import CATALOG, DROP_REASONS, FW_DROP
from pyloxi.model.firewall import FirewallEntry
from pyloxi.model.policy import PolicyEntry, PolicyStats

# family name -> [(label values in the family's label order, value)]
Samples = dict[str, list[tuple[tuple[str, ...], float]]]

PROTO_NAMES = {6: "tcp", 17: "udp", 1: "icmp", 132: "sctp"}
UNHEALTHY_STATES = frozenset({"nok", "red"})
_NONE = ServiceCounters()
CLOSED_STATES = frozenset({"closed", "closed-wait", "fini", "abort", "shut-complete"})


class TargetView(Protocol):
    @property
    def ip(self) -> str: ...
    @property
    def ptype(self) -> str: ...
    @property
    def port(self) -> int: ...


class ProbeView(Protocol):
    """The part of pyloxi.probes' ProbeStatus read here."""

    @property
    def key(self) -> str: ...
    @property
    def target(self) -> TargetView: ...
    @property
    def up(self) -> bool: ...
    @property
    def state(self) -> str: ...
    @property
    def failures(self) -> int: ...
    @property
    def probes(self) -> int: ...
    @property
    def rtt_avg(self) -> float | None: ...


class InstanceView(Protocol):
    """The part of pyloxi.cluster's Instance read here."""

    @property
    def name(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def serving(self) -> bool: ...


def _no_stats() -> Mapping[str, int]:
    return {}


def _no_conntrack() -> Mapping[tuple[int, str], int]:
    return {}


def _zero() -> int:
    return 0


def _no_firewall() -> Sequence[FirewallEntry]:
    return ()


def _no_probes() -> Sequence[ProbeView]:
    return ()


def _no_ha() -> Sequence[InstanceView]:
    return ()


def _no_mirrors() -> Sequence[tuple[str, int, int]]:
    return ()


@dataclass
class Sources:
    """Where a collection reads from. `probes` is called in the event loop's thread (the probe
    manager lives there); everything else in a worker thread."""

    rules: Callable[[], Sequence[Rule]]
    counters: Callable[[Sequence[ServiceProgram]], Mapping[int, ServiceCounters]]
    datapath_stats: Callable[[], Mapping[str, int]] = _no_stats
    conntrack: Callable[[], Mapping[tuple[int, str], int]] = _no_conntrack
    conntrack_capacity: Callable[[], int] = _zero
    probes: Callable[[], Sequence[ProbeView]] = _no_probes
    firewall: Callable[[], Sequence[FirewallEntry]] = _no_firewall  # with their counters
    ha: Callable[[], Sequence[InstanceView]] = _no_ha
    mirrors: Callable[[], Sequence[tuple[str, int, int]]] = _no_mirrors  # (ident, pkts, bytes)
    api: ApiStats = field(default_factory=ApiStats)
    aging: AgingStats = field(default_factory=AgingStats)
    disk_path: str = "/"
    # QoS policers with their counters (pyloxi.engine.policer.Policers.list)
    policers: Callable[[], Sequence[PolicyEntry]] = tuple


@dataclass(frozen=True, slots=True)
class RuleLabels:
    """One rule as metrics label it (cached while the rule object stays the same)."""

    rule: str  # "vip:port[-max]/proto[ block N][ host H]"
    name: str  # the rule's name ("" if none)
    service: str  # loxilb's service label: the name, else "vip:port"
    proto: str
    endpoints: tuple[tuple[str, str, bool], ...]  # (label "ip:port", ip, active), per index


@dataclass(frozen=True, slots=True)
class RuleRow:
    labels: RuleLabels
    counters: ServiceCounters


@dataclass
class Reading:
    rules: list[RuleRow]
    stats: Mapping[str, int]
    conntrack: Mapping[tuple[int, str], int]
    capacity: int
    probes: Sequence[ProbeView]
    ha: Sequence[InstanceView]
    firewall: Sequence[FirewallEntry]
    api: dict[tuple[str, str, str], int]
    aging: AgingSample
    new_flows: int  # since the previous reading
    new_flows_rate: float
    cpu_percent: float
    memory_percent: float
    disk_percent: float
    seconds: float = 0.0  # time read() took
    policers: Sequence[PolicyEntry] = ()
    mirrors: Sequence[tuple[str, int, int]] = ()  # (ident, packets, bytes) per mirror

    @property
    def new_flows_total(self) -> int:
        return self.stats.get("new_flow", sum(r.counters.new_flows for r in self.rules))

    @property
    def drops(self) -> dict[str, int]:
        """Drop counters by reason, for the reasons this datapath counts."""
        return {reason: self.stats[stat] for stat, reason in DROP_REASONS.items()
                if stat in self.stats}

    def flows_by_proto(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for (proto, _state), n in self.conntrack.items():
            name = PROTO_NAMES.get(proto, str(proto))
            out[name] = out.get(name, 0) + n
        return out

    @property
    def closed_flows(self) -> int:
        return sum(n for (_p, state), n in self.conntrack.items() if state in CLOSED_STATES)


def _rule_labels(rule: Rule) -> RuleLabels:
    a = rule.spec.entry.service_arguments
    proto = str(a.protocol)
    ports = f"{a.port}-{a.port_max}" if a.port_max and a.port_max != a.port else str(a.port)
    vip = f"[{a.external_ip}]" if ":" in a.external_ip else a.external_ip
    eps = []
    for ep in rule.eps:
        ip = f"[{ep.ip}]" if ":" in ep.ip else ep.ip
        # holes (removed endpoints kept while their flows finish) are left out
        eps.append((f"{ip}:{ep.target_port}", ep.ip, ep.active) if not ep.removed else
                   ("", ep.ip, False))
    # the rule's key: with block and host, it tells apart rules on one VIP, port and protocol
    return RuleLabels(rule=str(rule.spec.key), name=a.name, service=a.name or f"{vip}:{ports}",
                      proto=proto, endpoints=tuple(eps))


def fw_rule_label(fw: FirewallEntry) -> str:
    """A firewall rule as the `fw_rule` label names it: its match, as compact as it goes."""
    a = fw.rule_arguments
    parts = [f"{a.source_ip or 'any'}->{a.destination_ip or 'any'}"]
    if a.protocol:
        parts.append(f"proto {a.protocol}")
    if a.min_source_port or a.max_source_port:
        parts.append(f"sport {a.min_source_port}-{a.max_source_port}")
    if a.min_destination_port or a.max_destination_port:
        parts.append(f"dport {a.min_destination_port}-{a.max_destination_port}")
    if a.port_name:
        parts.append(f"in {a.port_name}")
    parts.append(f"pref {a.preference}")
    return " ".join(parts)


class _Cpu:
    """Busy share of all CPUs between two readings of /proc/stat."""

    def __init__(self) -> None:
        self._last: tuple[int, int] | None = None

    def percent(self) -> float:
        try:
            with open("/proc/stat") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return 0.0
        idle, total = fields[3] + (fields[4] if len(fields) > 4 else 0), sum(fields)
        last, self._last = self._last, (idle, total)
        if last is None or total <= last[1]:
            return 0.0
        return 100.0 * (1 - (idle - last[0]) / (total - last[1]))


def _memory_percent() -> float:
    try:
        info = {}
        with open("/proc/meminfo") as f:
            for line in f:
                k, v = line.split(":", 1)
                info[k] = int(v.split()[0])
        return 100.0 * (1 - info["MemAvailable"] / info["MemTotal"])
    except (OSError, KeyError, ValueError, ZeroDivisionError):
        return 0.0


def _disk_percent(path: str) -> float:
    try:
        st = os.statvfs(path)
    except OSError:
        return 0.0
    if not st.f_blocks:
        return 0.0
    return 100.0 * (1 - st.f_bavail / st.f_blocks)


class Collector:
    """`read()` then `families(reading)`; `collect()` does both (a prometheus_client
    Collector). Thread-safe enough for one scrape at a time; the rate state is per collector."""

    def __init__(self, sources: Sources) -> None:
        self.sources = sources
        self._cpu = _Cpu()
        self._last_new: tuple[float, int] | None = None
        self._last_seconds = 0.0
        # svc_id -> (the Rule object, its labels): a rule changes by being replaced
        self._labels: dict[int, tuple[Rule, RuleLabels]] = {}

    def _labels_of(self, rule: Rule) -> RuleLabels:
        cached = self._labels.get(rule.svc_id)
        if cached is not None and cached[0] is rule:
            return cached[1]
        labels = _rule_labels(rule)
        self._labels[rule.svc_id] = (rule, labels)
        return labels

    def read(self, probes: Sequence[ProbeView] | None = None) -> Reading:
        t0 = time.perf_counter()
        src = self.sources
        rules = list(src.rules())
        counters = src.counters([r.program for r in rules]) if rules else {}
        rows = [RuleRow(self._labels_of(r), counters.get(r.svc_id, _NONE)) for r in rules]
        reading = Reading(
            rules=rows, stats=src.datapath_stats(), conntrack=src.conntrack(),
            capacity=src.conntrack_capacity(),
            probes=probes if probes is not None else src.probes(), ha=src.ha(),
            firewall=src.firewall(),
            api=src.api.snapshot(), aging=src.aging.snapshot(), new_flows=0,
            new_flows_rate=0.0, cpu_percent=self._cpu.percent(),
            memory_percent=_memory_percent(), disk_percent=_disk_percent(src.disk_path),
            mirrors=src.mirrors())
        now, total = time.monotonic(), reading.new_flows_total
        if self._last_new is not None:
            then, before = self._last_new
            reading.new_flows = max(0, total - before)
            if now > then:
                reading.new_flows_rate = reading.new_flows / (now - then)
        self._last_new = (now, total)
        if len(self._labels) > 2 * len(rules) + 64:  # forget removed rules now and then
            live = {r.svc_id for r in rules}
            self._labels = {k: v for k, v in self._labels.items() if k in live}
        reading.policers = src.policers()
        reading.seconds = time.perf_counter() - t0
        return reading

    def collect(self) -> Iterator[Metric]:
        """prometheus_client's Collector interface (a registry may hold this collector)."""
        yield from self.families(self.read())

    def families(self, r: Reading) -> Iterator[Metric]:
        """The reading as prometheus_client metric families."""
        for name, rows in self.samples(r).items():
            fam = CATALOG[name]
            cls = CounterMetricFamily if fam.kind == "counter" else GaugeMetricFamily
            out = cls(name, fam.help, labels=fam.labels)
            for labels, value in rows:
                out.add_metric(labels, value)
            yield out

    def samples(self, r: Reading) -> Samples:
        """The reading as samples per family (CATALOG order; every family present)."""
        t0 = time.perf_counter()
        out: Samples = {name: [] for name in CATALOG}

        def put(name: str, value: float, *labels: str) -> None:
            out[name].append((labels, value))

        def both(legacy: str, canonical: str | None, value: float, *labels: str) -> None:
            out[legacy].append((labels, value))
            if canonical is not None:
                out[canonical].append((labels, value))

        self._rule_metrics(r, put, both)
        self._flow_metrics(r, put, both)
        self._probe_ha_api(r, put, both)
        self._last_seconds = r.seconds + time.perf_counter() - t0
        put("pyloxi_scrape_duration_seconds", self._last_seconds)
        return out

    @staticmethod
    def _rule_metrics(r: Reading, put: _Put, both: _Both) -> None:
        by_service: dict[str, list[int]] = {}  # service -> [packets, bytes, new flows]
        by_ep: dict[tuple[str, str], list[int]] = {}  # (service, dip) -> [packets, bytes]
        by_proto: dict[str, list[int]] = {}
        for full in r.rules:
            row, c = full.labels, full.counters
            labels = (row.rule, row.name, row.proto)
            put("pyloxi_rule_packets", c.packets, *labels)
            put("pyloxi_rule_bytes", c.bytes, *labels)
            put("pyloxi_rule_new_flows", c.new_flows, *labels)
            put("pyloxi_rule_active_flows", sum(e.active_flows for e in c.endpoints), *labels)
            s = by_service.setdefault(row.service, [0, 0, 0])
            s[0] += c.packets
            s[1] += c.bytes
            s[2] += c.new_flows
            p = by_proto.setdefault(row.proto, [0, 0])
            p[0] += c.packets
            p[1] += c.bytes
            for i, (label, ip, active) in enumerate(row.endpoints):
                if not label:
                    continue
                e = c.endpoints[i] if i < len(c.endpoints) else None
                pk, by, af = (e.packets, e.bytes, e.active_flows) if e else (0, 0, 0)
                el = (row.rule, row.name, label)
                put("pyloxi_endpoint_packets", pk, *el)
                put("pyloxi_endpoint_bytes", by, *el)
                put("pyloxi_endpoint_active_flows", af, *el)
                put("pyloxi_endpoint_active", 1 if active else 0, *el)
                d = by_ep.setdefault((row.service, ip), [0, 0])
                d[0] += pk
                d[1] += by
        put("pyloxi_lb_rules", len(r.rules))
        both("lb_rule_count", "loxilb_lb_rules", len(r.rules))
        all_packets = sum(v[0] for v in by_service.values())
        for service, (pk, by, new) in by_service.items():
            both("total_requests_per_service", "loxilb_service_requests", new, service)
            put("loxilb_service_traffic_bytes", by, service)
            put("loxilb_service_traffic_packets", pk, service)
            put("total_load_dists_per_service", pk / all_packets if all_packets else 0, service)
        for (service, dip), (pk, by) in by_ep.items():
            both("lb_rule_interaction_bytes", "loxilb_lb_rule_interaction_bytes", by,
                 service, "", dip)
            both("lb_rule_interaction_packets", "loxilb_lb_rule_interaction_packets", pk,
                 service, "", dip)
            put("loxilb_endpoint_traffic_bytes", by, service, dip)
            total = by_service[service][0]
            put("endpoint_load_dists_per_service", pk / total if total else 0, service, dip)
        packets = sum(v[0] for v in by_proto.values())
        nbytes = sum(v[1] for v in by_proto.values())
        both("processed_packets", "loxilb_processed_packets", packets)
        both("processed_bytes", "loxilb_processed_bytes", nbytes)
        for proto in ("tcp", "udp", "sctp"):
            pk, by = by_proto.get(proto, (0, 0))
            both(f"processed_{proto}_bytes", f"loxilb_processed_{proto}_bytes", by)
            put(f"loxilb_processed_{proto}_packets", pk)
        requests = sum(v[2] for v in by_service.values())
        both("total_requests", "loxilb_requests", requests)
        # loxilb's LCU: flows/2160000 + rules/1000 + processed Gbit per hour (10 s periods)
        flows = sum(r.conntrack.values())
        put("consumed_lcus", flows / 2160000 + len(r.rules) / 1000 + nbytes * 8 / 360e9)

    @staticmethod
    def _flow_metrics(r: Reading, put: _Put, both: _Both) -> None:
        flows = sum(r.conntrack.values())
        both("active_conntrack_count", "loxilb_active_conntrack_entries", flows)
        per = r.flows_by_proto()
        for pname in ("tcp", "udp", "sctp"):
            both(f"active_flow_count_{pname}", f"loxilb_active_flow_count_{pname}",
                 per.get(pname, 0))
        put("inactive_flow_count", r.closed_flows)
        for (pnum, state), n in sorted(r.conntrack.items()):
            put("pyloxi_conntrack_flows", n, PROTO_NAMES.get(pnum, str(pnum)), state)
        put("pyloxi_conntrack_capacity_entries", r.capacity)
        put("loxilb_conntrack_max_entries", r.capacity)
        put("loxilb_conntrack_stat_resets", 0)
        both("new_flow_count", "loxilb_new_flows", r.new_flows)
        put("pyloxi_new_flows", r.new_flows_total)
        put("pyloxi_new_flows_per_second", r.new_flows_rate)
        drops = r.drops
        for reason, n in drops.items():
            put("pyloxi_datapath_drops", n, reason)
        both("total_errors", "loxilb_errors", sum(drops.values()))
        both("total_fw_drops", "loxilb_fw_drop_packets", r.stats.get(FW_DROP, 0))
        put("loxilb_firewall_rules", len(r.firewall))
        for fw in r.firewall:
            if fw.opts.drop:
                dropped = fw.opts.counter.partition(":")[0]
                both("total_fw_drops_per_rule", "loxilb_fw_rule_drop_packets",
                     int(dropped or 0), fw_rule_label(fw))
        for pol in r.policers:
            st = pol.stats or PolicyStats()
            for result, pk, by in (("ok", st.packets_ok, st.bytes_ok),
                                   ("dropped", st.packets_dropped, st.bytes_dropped)):
                put("pyloxi_policer_packets", pk, pol.policy_ident, result)
                put("pyloxi_policer_bytes", by, pol.policy_ident, result)
        for event, n in r.stats.items():
            put("pyloxi_datapath_events", n, event)
        a = r.aging
        put("pyloxi_aging_sweeps", a.sweeps)
        put("pyloxi_aging_sweep_seconds", a.seconds_total)
        put("pyloxi_aging_last_sweep_seconds", a.last_seconds)
        put("pyloxi_aged_flows", a.flows_removed)
        put("loxilb_closed_connections_processed", a.flows_removed)

    @staticmethod
    def _probe_ha_api(r: Reading, put: _Put, both: _Both) -> None:
        healthy = unhealthy = 0
        for s in r.probes:
            t = s.target
            labels = (s.key, t.ip, t.ptype, str(t.port))
            put("pyloxi_probe_up", 1 if s.up else 0, *labels)
            if s.rtt_avg is not None:
                put("pyloxi_probe_rtt_seconds", s.rtt_avg, *labels)
            put("pyloxi_probe_consecutive_failures", s.failures, *labels)
            put("pyloxi_probes", s.probes, *labels)
            healthy += s.state == "ok"
            unhealthy += s.state in UNHEALTHY_STATES
        both("healthy_host_count", "loxilb_healthy_endpoints", healthy)
        both("unhealthy_host_count", "loxilb_unhealthy_endpoints", unhealthy)
        for inst in r.ha:
            put("pyloxi_ha_state", 1, inst.name, inst.state)
            put("pyloxi_ha_serving", 1 if inst.serving else 0, inst.name)
        for (method, route, code), n in sorted(r.api.items()):
            put("pyloxi_api_requests", n, method, route, code)
            if int(code) >= 400:
                put("pyloxi_api_errors", n, method, route, code)
        put("loxilb_system_cpu_utilization_percent", r.cpu_percent)
        put("loxilb_system_memory_utilization_percent", r.memory_percent)
        put("loxilb_system_disk_utilization_percent", r.disk_percent)
        for ident, packets, nbytes in r.mirrors:
            put("pyloxi_mirror_packets", packets, ident)
            put("pyloxi_mirror_bytes", nbytes, ident)


class _Put(Protocol):
    def __call__(self, name: str, value: float, *labels: str) -> None: ...


class _Both(Protocol):
    def __call__(self, legacy: str, canonical: str | None, value: float,
                 *labels: str) -> None: ...
