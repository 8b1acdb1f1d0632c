"""The web view in a real headless browser (Debian's chromium over the DevTools protocol),
inside the LB namespace beside the daemon: the page shows a VIP created through the API with
its endpoints, live packets/s and flows while a download runs, filters conntrack by address,
and shows an endpoint going down (its backend silenced) as down, with an event."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pyloxi.testing.lab.topology import CLIENT_IP, ROUTED_VIP, backend_ip

from ..waiting import wait_until
from .browser import CHROMIUM, Browser
from .conftest import API_PORT, DaemonHandle
from .test_liveness import blackhole
from .traffic import _HTTP_LOOP

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install "
                                                         "chromium; scripts/install-deps)")

VIP_KEY = f"{ROUTED_VIP}:80/tcp"
EPS = [f"{backend_ip(1)}:80", f"{backend_ip(2)}:80"]
SETTLE = 30  # seconds: a deadline for what the test waits for, not a bound it checks
# where to keep the page's screenshot (README's docs/ui.png is made with this set)
SHOT = os.environ.get("PYLOXI_UI_SCREENSHOT", "")

RULE = {
    "serviceArguments": {"externalIP": ROUTED_VIP, "port": 80, "protocol": "tcp",
                         "name": "web", "monitor": True, "probeTimeout": 1, "probeRetries": 2},
    "endpoints": [{"endpointIP": backend_ip(1), "targetPort": 80, "weight": 2},
                  {"endpointIP": backend_ip(2), "targetPort": 80, "weight": 1}],
}

# what the page shows, read from its DOM
SERVICES_JS = """[...document.querySelectorAll('.vip')].map(v => ({
  vip: v.dataset.vip,
  endpoints: Object.fromEntries([...v.querySelectorAll('tr.endpoint')].map(r => [
    r.dataset.endpoint, {state: r.dataset.state, weight: r.children[1].textContent,
                         pps: Number(r.querySelector('.pps').textContent),
                         flows: Number(r.querySelector('.flows').textContent)}]))}))"""
EVENTS_JS = "[...document.querySelectorAll('#events li')].map(li => li.textContent)"


@pytest.fixture
def browser(lb: DaemonHandle) -> Iterator[Browser]:
    b = Browser(lb.topo.lb.argv([]))
    try:
        yield b
    finally:
        b.close()


def shown(browser: Browser) -> dict[str, Any]:
    return {s["vip"]: s["endpoints"] for s in browser.evaluate(SERVICES_JS) or []}


def test_page_shows_the_vip_its_traffic_and_an_endpoint_going_down(
        lb: DaemonHandle, browser: Browser) -> None:
    browser.goto(f"http://127.0.0.1:{API_PORT}/ui")
    wait_until(lambda: "no load-balancer rules" in (browser.evaluate(
        "document.getElementById('vips')?.textContent") or ""), SETTLE, what="the empty page")

    assert lb.api("POST", "/config/loadbalancer", RULE).status_code == 200
    wait_until(lambda: VIP_KEY in shown(browser), SETTLE, what="the VIP on the page")
    eps = shown(browser)[VIP_KEY]
    assert sorted(eps) == EPS
    assert [eps[e]["weight"] for e in EPS] == ["2", "1"]
    wait_until(lambda: {e["state"] for e in shown(browser)[VIP_KEY].values()} == {"active"},
               SETTLE, what="both endpoints up on the page")

    # a slow download (one long flow) and a stream of short requests (packets) through the VIP
    download = lb.topo.client.popen(
        ["curl", "-s", "-o", "/dev/null", "--limit-rate", "1M",
         f"http://{ROUTED_VIP}/big.bin"])
    requests = lb.topo.client.popen([sys.executable, "-c", _HTTP_LOOP, ROUTED_VIP, "80",
                                     "1000000"], stdout=subprocess.DEVNULL)
    try:
        wait_until(lambda: any(e["pps"] > 0 and e["flows"] >= 1
                               for e in shown(browser)[VIP_KEY].values()),
                   SETTLE, what="packets/s and a flow on an endpoint")
        # the conntrack table, filtered by the client's address
        browser.evaluate(f"(() => {{ const s = document.getElementById('ct-search');"
                         f"s.value = '{CLIENT_IP}:'; s.dispatchEvent(new Event('input')); }})()")
        rows = browser.evaluate(
            "[...document.querySelectorAll('#ct tbody tr')].map(r => r.textContent)")
        assert rows and all(f"{CLIENT_IP}:" in r for r in rows)
        browser.evaluate("(() => { const s = document.getElementById('ct-search');"
                         "s.value = '192.0.2.77'; s.dispatchEvent(new Event('input')); })()")
        assert browser.evaluate("document.querySelectorAll('#ct tbody tr').length") == 0
        browser.evaluate("(() => { const s = document.getElementById('ct-search');"
                         "s.value = ''; s.dispatchEvent(new Event('input')); })()")

        if SHOT:
            time.sleep(20)  # only for the picture: let the charts fill
        blackhole(lb, 2, True)  # be2 stops answering: its probes fail
        try:
            wait_until(lambda: shown(browser)[VIP_KEY][EPS[1]]["state"] == "inactive",
                       SETTLE, what="the silenced endpoint shown down")
            assert shown(browser)[VIP_KEY][EPS[0]]["state"] == "active"
            events = browser.evaluate(EVENTS_JS)
            assert any(f"endpoint {EPS[1]} down" in e for e in events), events
            assert any(f"service {VIP_KEY} added" in e for e in events), events
            if SHOT:
                time.sleep(10)  # only for the picture: traffic resumes on the live endpoint
            png = browser.screenshot()
            assert png.startswith(b"\x89PNG\r\n\x1a\n")
            if SHOT:
                with open(SHOT, "wb") as f:
                    f.write(png)
        finally:
            blackhole(lb, 2, False)
        wait_until(lambda: shown(browser)[VIP_KEY][EPS[1]]["state"] == "active", SETTLE,
                   what="the endpoint back up on the page")
    finally:
        for proc in (download, requests):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)

    assert lb.api("DELETE", f"/config/loadbalancer/externalipaddress/{ROUTED_VIP}/port/80/"
                            "protocol/tcp").status_code == 200
    wait_until(lambda: VIP_KEY not in shown(browser), SETTLE, what="the VIP gone from the page")
    assert any(f"service {VIP_KEY} deleted" in e for e in browser.evaluate(EVENTS_JS))
