"""Metrics of the real daemon: real TCP through a VIP shows in the scraped per-endpoint packet
counters, and a refused source in the drop-reason counter (issue 12)."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pyloxi.testing.lab.topology import ROUTED_VIP, backend_ip

from .conftest import DaemonHandle
from .traffic import http_answers, spread

Scrape = dict[str, list[tuple[dict[str, str], float]]]


def scrape(lb: DaemonHandle) -> Scrape:
    resp = lb.api("GET", "/metrics")
    assert resp.status_code == 200, resp.text
    out: Scrape = {}
    for fam in text_string_to_metric_families(resp.text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def value(s: Scrape, metric: str, /, **labels: str) -> float:
    """The one sample of `metric` with these labels; 0 if there is none yet."""
    hits = [v for lab, v in s.get(metric, []) if all(lab.get(k) == x for k, x in labels.items())]
    assert len(hits) <= 1, (metric, labels, hits)
    return hits[0] if hits else 0.0


@pytest.fixture
def metrics_on(lb: DaemonHandle) -> DaemonHandle:
    if lb.api("GET", "/config/metrics").json() != {"prometheus": True}:
        resp = lb.api("POST", "/config/metrics")
        assert resp.status_code == 200, resp.text
    return lb


def test_scrape_is_refused_while_metrics_are_off(lb: DaemonHandle) -> None:
    if lb.api("GET", "/config/metrics").json()["prometheus"]:
        assert lb.api("DELETE", "/config/metrics").status_code == 200
    assert lb.api("GET", "/metrics").status_code == 503
    assert lb.api("POST", "/config/metrics").status_code == 200
    assert lb.api("GET", "/metrics").status_code == 200


def test_traffic_through_the_vip_counts_per_endpoint(metrics_on: DaemonHandle) -> None:
    lb = metrics_on
    lb.cli("create", "lb", ROUTED_VIP, "--tcp=80:80", "--name=web",
           "--endpoints=" + ",".join(f"{backend_ip(i)}:1" for i in (1, 2, 3)))
    rule = f"{ROUTED_VIP}:80/tcp"
    before = scrape(lb)
    answers = http_answers(lb.topo.client, ROUTED_VIP, 30)
    assert spread([b for b, _ in answers]) == {"be1": 10, "be2": 10, "be3": 10}
    after = scrape(lb)
    for i in (1, 2, 3):
        ep = f"{backend_ip(i)}:80"
        grown = value(after, "pyloxi_endpoint_packets_total", rule=rule, endpoint=ep) - \
            value(before, "pyloxi_endpoint_packets_total", rule=rule, endpoint=ep)
        # ten connections, each at least SYN, ACK, request, FIN from the client
        assert grown >= 40, (ep, grown)
        assert value(after, "pyloxi_endpoint_bytes_total", rule=rule, endpoint=ep) > \
            value(before, "pyloxi_endpoint_bytes_total", rule=rule, endpoint=ep)
        # loxilb's name for the same counter
        assert value(after, "lb_rule_interaction_packets", service="web",
                     dip=backend_ip(i)) == value(after, "pyloxi_endpoint_packets_total",
                                                 rule=rule, endpoint=ep)
    new = value(after, "pyloxi_rule_new_flows_total", rule=rule) - \
        value(before, "pyloxi_rule_new_flows_total", rule=rule)
    assert new == 30
    assert value(after, "loxilb_service_requests_total", service="web") >= 30
    assert value(after, "pyloxi_lb_rules") == 1


def test_a_refused_source_counts_as_a_drop(metrics_on: DaemonHandle) -> None:
    lb = metrics_on
    resp = lb.api("POST", "/config/loadbalancer", {
        "serviceArguments": {"externalIP": ROUTED_VIP, "port": 81, "protocol": "tcp"},
        "endpoints": [{"endpointIP": backend_ip(1), "targetPort": 80, "weight": 1}],
        "allowedSources": [{"prefix": "192.0.2.0/24"}]})  # not the client
    assert resp.status_code == 200, resp.text
    before = value(scrape(lb), "pyloxi_datapath_drops_total", reason="source_not_allowed")
    answers = http_answers(lb.topo.client, ROUTED_VIP, 1, port=81)
    assert answers[0][0] == "ERR"  # the SYN was dropped: no answer
    after = scrape(lb)
    assert value(after, "pyloxi_datapath_drops_total", reason="source_not_allowed") > before
    assert value(after, "total_errors") >= value(after, "pyloxi_datapath_drops_total",
                                                 reason="source_not_allowed")
