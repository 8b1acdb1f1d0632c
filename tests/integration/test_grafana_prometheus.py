"""The Grafana dashboard (deploy/grafana/pyloxi.json) against a real Prometheus scraping the real
daemon: with rules, probes (one failing), traffic through the VIPs and an API error, every
query of every panel, with Grafana's variables substituted, is evaluated through Prometheus's
query_range API by scripts/render_dashboard.py. No query may be refused, and every panel must
show the data it should. The page the script draws is loaded in headless Chromium; with
PYLOXI_DASHBOARD_SCREENSHOT set, its screenshot is written there (README's docs/grafana.png)
after a longer run, so the lines have time to move."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyloxi.testing.lab.topology import ROUTED_VIP, backend_ip

from ..waiting import wait_until
from .browser import CHROMIUM, Browser
from .conftest import API_PORT, ROOT, DaemonHandle
from .traffic import _HTTP_LOOP, _UDP_LOOP

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="needs prometheus (apt-get install "
                                                           "prometheus; scripts/install-deps)")

RENDER = os.path.join(ROOT, "scripts", "render_dashboard.py")
PROM_PORT = 19090  # inside the LB namespace: nothing else listens there
SETTLE = 45  # seconds: a deadline for what the test waits for, not a bound it checks
SHOT = os.environ.get("PYLOXI_DASHBOARD_SCREENSHOT", "")
# only for the picture: traffic for longer than the panels' 1-minute rate windows, so that
# the lines are past their first minute's ramp and move with the traffic
DEMO_SECONDS = 80

WEB = {  # three live endpoints, probed
    "serviceArguments": {"externalIP": ROUTED_VIP, "port": 80, "protocol": "tcp", "name": "web",
                         "monitor": True, "probeTimeout": 1, "probeRetries": 1},
    "endpoints": [{"endpointIP": backend_ip(i), "targetPort": 80, "weight": 1}
                  for i in (1, 2, 3)],
}
API = {  # one live endpoint and one where nothing listens: its probe takes it out of rotation
    "serviceArguments": {"externalIP": ROUTED_VIP, "port": 8080, "protocol": "tcp",
                         "name": "api", "monitor": True, "probeTimeout": 1, "probeRetries": 1},
    "endpoints": [{"endpointIP": backend_ip(1), "targetPort": 80, "weight": 1},
                  {"endpointIP": backend_ip(3), "targetPort": 8081, "weight": 1}],
}
DNS = {  # probed by ping: the only probes with a round-trip time
    "serviceArguments": {"externalIP": ROUTED_VIP, "port": 5353, "protocol": "udp",
                         "name": "dns", "probetype": "ping", "probeTimeout": 1,
                         "probeRetries": 1},
    "endpoints": [{"endpointIP": backend_ip(i), "targetPort": 5353, "weight": 1}
                  for i in (1, 2)],
}
RULES = (f"{ROUTED_VIP}:80/tcp", f"{ROUTED_VIP}:8080/tcp", f"{ROUTED_VIP}:5353/udp")



@pytest.fixture
def metrics_on(lb: DaemonHandle) -> DaemonHandle:
    if lb.api("GET", "/config/metrics").json() != {"prometheus": True}:
        assert lb.api("POST", "/config/metrics").status_code == 200
    return lb


@pytest.fixture
def prometheus(metrics_on: DaemonHandle) -> Iterator[str]:
    """A Prometheus in the LB namespace scraping the daemon's API every second; its URL there."""
    tmp = tempfile.mkdtemp(prefix="pyloxi-prometheus-")
    config = os.path.join(tmp, "prometheus.yml")
    with open(config, "w") as f:
        f.write(f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: pyloxi
    metrics_path: /netlox/v1/metrics
    static_configs: [{{targets: ["127.0.0.1:{API_PORT}"]}}]
""")
    log = open(os.path.join(tmp, "prometheus.log"), "w")  # noqa: SIM115 - closed below
    proc = metrics_on.topo.lb.popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp}/data",
         f"--web.listen-address=127.0.0.1:{PROM_PORT}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{PROM_PORT}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def render(lb: DaemonHandle, url: str, out: Path, minutes: float) -> dict[str, Any]:
    """scripts/render_dashboard.py run in the LB namespace: what every panel's queries
    answered, by panel title (the page is written beside it)."""
    proc = lb.topo.lb.run([sys.executable, RENDER, "--prometheus", url, "--minutes", str(minutes),
                           "--scrape-interval", "1", "--json", str(out / "dash.json"),
                           "--html", str(out / "dash.html")], check=False, timeout=120)
    # exit 1 is "a query was refused": the caller reads which from the JSON
    assert proc.returncode in (0, 1), proc.stderr
    panels: dict[str, Any] = {p["title"]: p for p in
                              json.loads((out / "dash.json").read_text())["panels"]}
    return panels


def values(panel: dict[str, Any]) -> dict[str, list[float]]:
    """Every series' values, by legend."""
    return {s["legend"]: [v for _, v in s["points"]]
            for t in panel["targets"] for s in t["series"]}


def refused(panels: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(panel, query as sent, Prometheus's error) of every query Prometheus refused."""
    return [(title, t["expr"], t["error"]) for title, p in panels.items()
            for t in p["targets"] if t["error"]]


def missing(panels: dict[str, Any]) -> list[str]:
    """What the panels do not show yet, after rules, probes, traffic and an API error."""
    def peak(title: str) -> dict[str, float]:
        return {k: max(v) for k, v in values(panels[title]).items() if v}

    def last(title: str) -> list[float]:
        return [v[-1] for v in values(panels[title]).values() if v]

    wanted: dict[str, bool] = {
        "Rules": last("Rules") == [3],
        "Tracked flows": any(v > 0 for v in peak("Tracked flows").values()),
        "New flows/s": any(v > 0 for v in peak("New flows/s").values()),
        "Healthy endpoints": last("Healthy endpoints") == [5],
        "Unhealthy endpoints": last("Unhealthy endpoints") == [1],
        "Conntrack fill": any(v > 0 for v in peak("Conntrack fill").values()),
        "Traffic per rule (bits/s)": all(peak("Traffic per rule (bits/s)").get(r, 0) > 0
                                         for r in RULES),
        "Packets per endpoint (pkt/s)": all(
            peak("Packets per endpoint (pkt/s)").get(f"{RULES[0]} → {backend_ip(i)}:80", 0) > 0
            for i in (1, 2, 3)),
        "Active flows per endpoint": len(values(panels["Active flows per endpoint"])) == 7,
        "New flows per rule (flows/s)": all(peak("New flows per rule (flows/s)").get(r, 0) > 0
                                            for r in RULES),
        "Endpoints out of rotation": list(values(panels["Endpoints out of rotation"])) ==
        [f"{RULES[1]} → {backend_ip(3)}:8081"],
        "Endpoint share of its service's packets": any(
            v > 0 for v in peak("Endpoint share of its service's packets").values()),
        "Conntrack flows by protocol and state": any(
            k.startswith("udp") and v > 0
            for k, v in peak("Conntrack flows by protocol and state").items()),
        "Datapath drops and refusals by reason (pkt/s)": bool(
            values(panels["Datapath drops and refusals by reason (pkt/s)"])),
        # one probe per target (be1:80 serves two rules): five up, the closed port's down
        "Probe verdicts (1 up, 0 down)": sorted(last("Probe verdicts (1 up, 0 down)")) ==
        [0, 1, 1, 1, 1, 1],
        "Probe round-trip time": len(values(panels["Probe round-trip time"])) == 2,
        "REST API requests by route and status": bool(
            values(panels["REST API requests by route and status"])),
        "REST API errors": any(k.startswith("other 404")
                               for k in values(panels["REST API errors"])),
        "Conntrack aging": {"last sweep (s)", "flows aged/s"} <=
        set(values(panels["Conntrack aging"])),
        # no HA configured: the daemon's one default instance, serving
        "HA state per instance": len(values(panels["HA state per instance"])) == 2 and
        any(k.endswith(" serving") for k in values(panels["HA state per instance"])),
        "Processed traffic (loxilb names, bits/s)": all(
            peak("Processed traffic (loxilb names, bits/s)").get(p, 0) > 0
            for p in ("tcp", "udp")),
        "Scrape cost": bool(values(panels["Scrape cost"])),
    }
    assert set(wanted) == set(panels), "a panel is not covered by this test"
    return [title for title, ok in wanted.items() if not ok]


def test_every_panel_query_runs_on_prometheus_and_shows_the_traffic(
        metrics_on: DaemonHandle, prometheus: str) -> None:
    lb = metrics_on
    for rule in (WEB, API, DNS):
        resp = lb.api("POST", "/config/loadbalancer", rule)
        assert resp.status_code == 200, resp.text
    assert lb.api("GET", "/no/such/path").status_code == 404  # one API error to count
    # batches of short requests to both TCP rules and of UDP queries, until stopped
    client = lb.topo.client
    began = time.monotonic()
    loops = [client.popen(["bash", "-c", f'while :; do {sys.executable} -c "$LOOP" {ROUTED_VIP} '
                           f'{port} 20; sleep 0.5; done'], env={**os.environ, "LOOP": loop})
             for loop, port in ((_HTTP_LOOP, 80), (_HTTP_LOOP, 8080), (_UDP_LOOP, 5353))]
    out = Path(tempfile.mkdtemp(prefix="pyloxi-dashboard-"))
    try:
        panels: dict[str, Any] = {}
        gaps: list[str] = []

        def shown() -> bool:
            panels.update(render(lb, prometheus, out, 2))
            assert not refused(panels)  # a query Prometheus rejects will not heal: fail now
            gaps[:] = missing(panels)
            return not gaps

        try:
            wait_until(shown, SETTLE, interval=1, what="data in every panel that must have it")
        except TimeoutError:
            shows = {t: {k: v[-3:] for k, v in values(panels[t]).items()} for t in gaps}
            raise AssertionError(f"panels without their data: {shows}") from None
        if SHOT:
            time.sleep(DEMO_SECONDS)
            panels = render(lb, prometheus, out, (time.monotonic() - began + 10) / 60)
        assert not refused(panels)
        assert len(panels) == 22

        # the page, in a real browser: every panel drawn, none with an error
        if CHROMIUM is not None:
            browser = Browser([])
            try:
                browser.goto(f"file://{out / 'dash.html'}")
                wait_until(lambda: browser.evaluate(
                    "document.querySelectorAll('.panel').length") == 22, SETTLE,
                    what="the page's panels")
                assert browser.evaluate("document.querySelectorAll('.panel .error').length") == 0
                assert browser.evaluate("document.querySelectorAll('.panel polyline').length") \
                    >= 10
                # the viewport (what a screenshot takes) made the size of the whole grid
                width, height = browser.evaluate(
                    "[document.body.scrollWidth, document.body.scrollHeight]")
                browser.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                             deviceScaleFactor=1, mobile=False)
                png = browser.screenshot()
                assert png.startswith(b"\x89PNG\r\n\x1a\n")
                if SHOT:
                    Path(SHOT).write_bytes(png)
            finally:
                browser.close()
    finally:
        for proc in loops:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        shutil.rmtree(out, ignore_errors=True)
