"""The web view's files: served at /ui with the right types, from the package, without a token
(the data behind them still needs one), and absent from the API's OpenAPI document."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pyloxi.api import create_app
from pyloxi.api.security import TokenFile
from pyloxi.api.ui import STATIC_FILES
from pyloxi.datapath.memory import MemoryDatapath
from pyloxi.engine.engine import Engine

TOKEN = "s3cret-for-the-ui"


def client(tokens: TokenFile | None = None) -> TestClient:
    return TestClient(create_app(Engine(MemoryDatapath()), version="0", tokens=tokens),
                      raise_server_exceptions=False)


@pytest.mark.parametrize("path", ["/ui", "/ui/"])
def test_page_is_html_that_loads_only_its_own_files(path: str) -> None:
    resp = client().get(path)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "text/html; charset=utf-8"
    assert "script-src 'self'" in resp.headers["content-security-policy"]
    assert resp.headers["x-content-type-options"] == "nosniff"
    page = resp.text
    assert '<script src="/ui/static/ui.js"' in page and 'href="/ui/static/ui.css"' in page
    # no CDN: the machine may reach nothing outside it
    assert "http://" not in page and "https://" not in page


@pytest.mark.parametrize("name, media", [("ui.js", "text/javascript; charset=utf-8"),
                                         ("ui.css", "text/css; charset=utf-8")])
def test_static_files_have_their_types(name: str, media: str) -> None:
    resp = client().get(f"/ui/static/{name}")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == media
    assert resp.content == (Path(__file__).parents[2] / "src/pyloxi/ui" / name).read_bytes()


@pytest.mark.parametrize("name", ["index.html", "nope.js", "..%2f__init__.py", "ui.js.map"])
def test_only_the_listed_files_are_served(name: str) -> None:
    resp = client().get(f"/ui/static/{name}")
    assert resp.status_code == 404
    assert resp.json()["code"] == 404


def test_the_script_fetches_nothing_outside_the_api() -> None:
    js = client().get("/ui/static/ui.js").text
    assert "http://" not in js.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in js
    assert 'const API = "/netlox/v1"' in js


def test_page_needs_no_token_but_the_data_does(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(TOKEN + "\n")
    http = client(TokenFile(path))
    for p in ["/ui", "/ui/", *(f"/ui/static/{n}" for n in STATIC_FILES)]:
        assert http.get(p).status_code == 200, p
    assert http.get("/netlox/v1/config/loadbalancer/all").status_code == 401
    ok = http.get("/netlox/v1/config/loadbalancer/all",
                  headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200
    # exempt means GET/HEAD only, and only these paths
    assert http.post("/ui", json={}).status_code == 401
    assert http.get("/ui/static/other.js").status_code == 401


def test_not_in_the_openapi_document() -> None:
    paths = client().get("/netlox/v1/swagger.json").json()["paths"]
    assert not any(p.startswith("/ui") for p in paths)


def test_request_metrics_name_the_page_by_its_own_path() -> None:
    seen: list[tuple[str, str | None, int]] = []

    class Observer:
        def observe(self, method: str, route: str | None, status: int) -> None:
            seen.append((method, route, status))

    http = TestClient(create_app(Engine(MemoryDatapath()), version="0",
                                 request_observer=Observer()))
    http.get("/ui")
    http.get("/ui/static/ui.js")
    http.get("/netlox/v1/version")
    assert seen == [("GET", "/ui", 200), ("GET", "/ui/static/{name}", 200),
                    ("GET", "/netlox/v1/version", 200)]
