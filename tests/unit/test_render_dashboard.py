"""scripts/render_dashboard.py without a real Prometheus (tests/integration/
test_grafana_prometheus.py runs it against one): Grafana's substitutions, and the whole
dashboard drawn from a fake Prometheus on loopback that refuses one query."""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "render_dashboard.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("render_dashboard", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


rd = _load()


def test_grafana_variables_are_substituted() -> None:
    expr = 'rate(x{rule=~"$rule"}[$__rate_interval]) + y{r=~"${rule}"}[$__interval] * ' \
           "$__interval_ms + $__range_s"
    out = rd.substitute(expr, {"rule": ".*"}, 15, 0, 3600, 15)
    # $__rate_interval: max($__interval + scrape interval, 4 * scrape interval)
    assert out == 'rate(x{rule=~".*"}[60s]) + y{r=~".*"}[15s] * 15000 + 3600'
    assert rd.substitute("$__rate_interval", {}, 1, 0, 60, 1) == "4s"
    assert rd.substitute("$unknown", {}, 1, 0, 60, 1) == "$unknown"


def test_the_step_follows_the_panel_width_and_the_scrape_interval() -> None:
    assert rd.panel_step(800, 0, 3600, 1) == 5  # one point per pixel
    assert rd.panel_step(800, 0, 60, 15) == 15  # never below the scrape interval


def test_a_multi_value_variable_without_all_value_is_an_escaped_alternation() -> None:
    assert rd._regex_escape("20.0.0.1:80/tcp") == r"20\.0\.0\.1:80\/tcp"


class _FakePrometheus(BaseHTTPRequestHandler):
    queries: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        url = urllib.parse.urlparse(self.path)
        args = urllib.parse.parse_qs(url.query)
        body: dict[str, Any] = {"status": "success", "data": ["20.0.0.100:80/tcp"]}
        code = 200
        if url.path == "/api/v1/query_range":
            expr = args["query"][0]
            self.queries.append(expr)
            start = float(args["start"][0])
            series = {"metric": {"rule": "20.0.0.100:80/tcp", "endpoint": "10.0.11.2:80"},
                      "values": [[start + i, str(i)] for i in range(5)]}
            body = {"status": "success", "data": {"resultType": "matrix", "result": [series]}}
            if "pyloxi_scrape_duration_seconds" in expr:  # one query refused, as Prometheus
                code, body = 400, {"status": "error", "errorType": "bad_data",
                                   "error": "parse error"}
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def prometheus() -> Iterator[str]:
    _FakePrometheus.queries = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakePrometheus)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_every_panel_is_queried_and_drawn_and_a_refusal_is_shown(
        prometheus: str, tmp_path: Path) -> None:
    code = rd.main(["--prometheus", prometheus, "--minutes", "5", "--scrape-interval", "1",
                    "--html", str(tmp_path / "d.html"), "--json", str(tmp_path / "d.json")])
    assert code == 1  # the refused query
    dash = json.loads(rd.DASHBOARD.read_text())
    sent = _FakePrometheus.queries
    assert len(sent) == sum(len(p["targets"]) for p in dash["panels"])
    assert not [q for q in sent if "$" in q]  # every variable substituted
    assert 'rule=~".*"' in sent[6]  # the rule variable at "All"
    panels = json.loads((tmp_path / "d.json").read_text())["panels"]
    errors = {p["title"]: t["error"] for p in panels for t in p["targets"] if t["error"]}
    assert errors == {"Scrape cost": "bad_data: parse error"}
    page = (tmp_path / "d.html").read_text()
    assert page.count('class="panel"') == len(dash["panels"])
    assert page.count('class="error"') == 1
    assert "http://" not in page.replace(prometheus, "").replace(
        "http://www.w3.org/2000/svg", "")  # nothing loaded from elsewhere
    assert "20.0.0.100:80/tcp → 10.0.11.2:80" in page  # legendFormat applied
