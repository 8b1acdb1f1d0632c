"""Operational routes over ASGI: /config/params, /logs and /log-archives, /status/*, /meta,
/nodegraph, /config/cors (with the CORS headers they control, and the CSRF rule kept)."""

from __future__ import annotations

import base64
import gzip
import logging
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter
from pydantic import BaseModel

from pyloxi.api import create_app
from pyloxi.api.errors import SUCCESS
from pyloxi.api.logs import logs_router
from pyloxi.api.params import params_router
from pyloxi.api.security import TokenFile
from pyloxi.api.status import processes
from pyloxi.datapath.memory import MemoryDatapath
from pyloxi.engine.engine import Engine
from pyloxi.engine.program import EndpointCounters, Flow, ServiceCounters
from pyloxi.oplog import LOG_FORMAT, LogControl, LogFiles, LogRing, LogSource, collect

B = "/netlox/v1"


def assert_error(resp: httpx.Response, code: int, *words: str) -> None:
    assert resp.status_code == code, resp.text
    body = resp.json()
    assert set(body) == {"code", "message", "result"} and body["code"] == code
    for w in words:
        assert w.lower() in body["message"].lower(), body["message"]


def lb_rule(name: str = "web", eps: tuple[str, ...] = ("31.31.31.1", "32.32.32.1"),
            vip: str = "20.20.20.1") -> dict[str, Any]:
    return {"serviceArguments": {"externalIP": vip, "port": 2020, "protocol": "tcp",
                                 "name": name},
            "endpoints": [{"endpointIP": ip, "targetPort": 8080, "weight": 1} for ip in eps]}


class Env:
    def __init__(self, *, levels: LogControl | None = None, source: LogSource | None = None,
                 tokens: Any = None) -> None:
        self.dp = MemoryDatapath()
        self.engine = Engine(self.dp)
        routers = []
        if levels is not None:
            routers.append(params_router(levels))
        if source is not None:
            routers.append(logs_router(source))
        self.app = create_app(self.engine, version="1", extra_routers=routers, tokens=tokens)
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app),
                                      base_url="http://pyloxi")


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    e = Env()
    yield e
    await e.http.aclose()


# ------------------------------------------------------------------------------ params


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


async def test_params_set_the_pyloxi_loggers_level_for_real() -> None:
    top = logging.getLogger("pyloxi")
    before = top.level
    seen = Captured()
    top.addHandler(seen)
    env = Env(levels=LogControl("info"))
    try:
        assert (await env.http.get(f"{B}/config/params")).json() == {"logLevel": "info"}
        logging.getLogger("pyloxi.engine").debug("hidden at info")
        resp = await env.http.post(f"{B}/config/params", json={"logLevel": "debug"})
        assert resp.status_code == 200 and resp.json() == SUCCESS
        logging.getLogger("pyloxi.engine").debug("shown at debug")
        assert seen.messages == ["shown at debug"]
        assert (await env.http.get(f"{B}/config/params")).json() == {"logLevel": "debug"}
        # loxilb's extra levels: trace is more verbose than debug, alert quieter than critical
        await env.http.post(f"{B}/config/params", json={"LOGLEVEL": "trace"})
        logging.getLogger("pyloxi.x").log(5, "a trace line")
        await env.http.post(f"{B}/config/params", json={"logLevel": "alert"})
        logging.getLogger("pyloxi.x").critical("not loud enough for alert")
        assert seen.messages == ["shown at debug", "a trace line"]
    finally:
        top.removeHandler(seen)
        top.setLevel(before)
        await env.http.aclose()


@pytest.mark.parametrize("body,words", [
    ({"logLevel": "verbose"}, ("logLevel",)),
    ({"logLevel": "DEBUG"}, ("logLevel",)),  # loxilb's enum is exact
    ({"logLevel": 3}, ("logLevel",)),
    ({}, ("logLevel", "required")),
])
async def test_params_invalid_level_is_400_and_changes_nothing(body: Any,
                                                               words: tuple[str, ...]) -> None:
    levels = LogControl("warning", logger="pyloxi.test-params")
    env = Env(levels=levels)
    resp = await env.http.post(f"{B}/config/params", json=body)
    assert_error(resp, 400, *words)
    assert levels.level() == "warning"
    assert logging.getLogger("pyloxi.test-params").level == logging.WARNING
    await env.http.aclose()


# ------------------------------------------------------------------------------ logs


def ring_with(lines: list[tuple[int, str]]) -> tuple[LogSource, logging.Logger]:
    ring = LogRing(capacity=100)
    ring.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger(f"pyloxi.test-ring-{id(ring)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(ring)
    for level, text in lines:
        logger.log(level, text)
    return LogSource(ring=ring), logger


async def test_logs_from_memory_newest_first_paged_with_a_cursor() -> None:
    source, _ = ring_with([(logging.INFO, f"line {i}") for i in range(5)])
    env = Env(source=source)
    first = (await env.http.get(f"{B}/logs", params={"lines": "2"})).json()
    assert first["logs"] == ["INFO line 4", "INFO line 3"]
    assert first["log_file"] == "memory" and first["log_count"] == 2 and first["has_more"]
    second = (await env.http.get(f"{B}/logs", params={"lines": "2",
                                                       "cursor": first["next_cursor"]})).json()
    assert second["logs"] == ["INFO line 2", "INFO line 1"]
    third = (await env.http.get(f"{B}/logs", params={"lines": "2",
                                                      "cursor": second["next_cursor"]})).json()
    assert third["logs"] == ["INFO line 0"]
    assert third["has_more"] is False and "next_cursor" not in third
    # a full read: the sizes add up
    assert first["total_size"] == sum(len(f"INFO line {i}") + 1 for i in range(5))
    await env.http.aclose()


async def test_logs_filter_by_level_and_keyword_across_pages() -> None:
    source, logger = ring_with([(logging.INFO, "probe ok")] * 3 + [(logging.ERROR, "probe down")]
                               + [(logging.INFO, "noise")] * 50)
    env = Env(source=source)
    body = (await env.http.get(f"{B}/logs", params={"level": "ERROR", "lines": "5"})).json()
    assert body["logs"] == ["ERROR probe down"] and body["has_more"] is False
    assert body["scanned_bytes"] == body["total_size"]
    body = (await env.http.get(f"{B}/logs", params={"keyword": "probe", "lines": "2"})).json()
    assert body["logs"] == ["ERROR probe down", "INFO probe ok"] and body["has_more"]
    logger.info("probe back")  # new lines do not move an older page
    body = (await env.http.get(f"{B}/logs", params={"keyword": "probe", "lines": "5",
                                                     "cursor": body["next_cursor"]})).json()
    assert body["logs"] == ["INFO probe ok", "INFO probe ok"]
    await env.http.aclose()


async def test_logs_bad_queries() -> None:
    source, _ = ring_with([(logging.INFO, "x")])
    env = Env(source=source)
    assert_error(await env.http.get(f"{B}/logs", params={"cursor": "not base64!"}), 400,
                 "cursor")
    bad = base64.b64encode(b"memory:nope:0:0").decode()
    assert_error(await env.http.get(f"{B}/logs", params={"cursor": bad}), 400, "cursor")
    # no log file: only the memory log exists
    assert_error(await env.http.get(f"{B}/logs", params={"file": "pyloxi.log"}), 404)
    # lines: loxilb's leniency, and a cap
    body = (await env.http.get(f"{B}/logs", params={"lines": "zero"})).json()
    assert body["logs"] == ["INFO x"]
    assert (await env.http.get(f"{B}/log-archives")).json() == {"archives": [],
                                                                "archive_info": []}
    await env.http.aclose()


def test_filtered_scan_stops_at_its_cap_and_resumes() -> None:
    records = [(i * 10, f"line {i}") for i in range(100)][::-1]  # newest first
    page, nxt, scanned = collect(iter(records), 1000, 5, "", "nomatch", scan_cap=200)
    assert page == [] and 0 < nxt < 1000 and scanned == 1000 - nxt <= 210
    page, nxt, _ = collect(iter(r for r in records if r[0] < nxt), nxt, 5, "", "line 1",
                           scan_cap=10_000)
    assert page[0] == "line 19"


@pytest.fixture
def logdir(tmp_path: Path) -> Path:
    d = tmp_path / "log"
    d.mkdir()
    (d / "pyloxi.log").write_text("".join(f"2026 INFO live {i}\n" for i in range(10)))
    with gzip.open(d / "pyloxi.log.1.gz", "wt") as f:
        f.write("".join(f"2026 INFO old {i}\n" for i in range(3)))
    (d / "secret.txt").write_text("do not serve\n")
    (tmp_path / "outside.log").write_text("outside\n")
    os.symlink(tmp_path / "outside.log", d / "pyloxi.log.2")
    return d


async def test_log_files_archives_and_download(logdir: Path) -> None:
    env = Env(source=LogSource(files=LogFiles(logdir / "pyloxi.log")))
    body = (await env.http.get(f"{B}/logs", params={"lines": "3"})).json()
    assert body["log_file"] == "pyloxi.log"
    assert body["logs"] == ["2026 INFO live 9", "2026 INFO live 8", "2026 INFO live 7"]
    assert body["total_size"] == (logdir / "pyloxi.log").stat().st_size
    nxt = (await env.http.get(f"{B}/logs", params={"lines": "100",
                                                    "cursor": body["next_cursor"]})).json()
    assert nxt["logs"][0] == "2026 INFO live 6" and nxt["logs"][-1] == "2026 INFO live 0"
    # a rotated, gzipped archive is read decompressed
    body = (await env.http.get(f"{B}/logs", params={"file": "pyloxi.log.1.gz"})).json()
    assert body["logs"] == ["2026 INFO old 2", "2026 INFO old 1", "2026 INFO old 0"]
    listing = (await env.http.get(f"{B}/log-archives")).json()
    assert sorted(listing["archives"]) == ["pyloxi.log", "pyloxi.log.1.gz"]  # no link, no other
    assert [i["name"] for i in listing["archive_info"]] == listing["archives"]
    resp = await env.http.get(f"{B}/log-archives/pyloxi.log.1.gz")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/octet-stream"
    assert resp.content == (logdir / "pyloxi.log.1.gz").read_bytes()
    await env.http.aclose()


TRAVERSALS = ["../outside.log", "..%2Foutside.log", "%2e%2e%2foutside.log", "/etc/passwd",
              "pyloxi.log/../../outside.log", "..\\outside.log", "secret.txt", "pyloxi.log%00",
              "....//outside.log"]


@pytest.mark.parametrize("name", TRAVERSALS)
async def test_no_path_traversal_through_file_or_filename(logdir: Path, name: str) -> None:
    env = Env(source=LogSource(files=LogFiles(logdir / "pyloxi.log")))
    for resp in (await env.http.get(f"{B}/logs?file={name}"),
                 await env.http.get(f"{B}/log-archives/{name}")):
        assert resp.status_code in (400, 404), (name, resp.status_code, resp.text)
        assert b"outside" not in resp.content and b"do not serve" not in resp.content
        assert b"root:" not in resp.content
    await env.http.aclose()


async def test_a_symlink_named_like_an_archive_is_not_followed(logdir: Path) -> None:
    env = Env(source=LogSource(files=LogFiles(logdir / "pyloxi.log")))
    assert_error(await env.http.get(f"{B}/log-archives/pyloxi.log.2"), 404)
    assert_error(await env.http.get(f"{B}/logs", params={"file": "pyloxi.log.2"}), 404)
    await env.http.aclose()


async def test_rotation_keeps_lines_readable(tmp_path: Path) -> None:
    files = LogFiles(tmp_path / "pyloxi.log")
    handler = files.handler(max_mb=1, backups=2, compress=True)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger = logging.getLogger("pyloxi.test-rotation")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        logger.info("before rotation")
        handler.doRollover()
        logger.info("after rotation")
    finally:
        logger.removeHandler(handler)
        handler.close()
    env = Env(source=LogSource(files=files))
    listing = (await env.http.get(f"{B}/log-archives")).json()
    assert sorted(listing["archives"]) == ["pyloxi.log", "pyloxi.log.1.gz"]
    live = (await env.http.get(f"{B}/logs")).json()["logs"]
    old = (await env.http.get(f"{B}/logs", params={"file": "pyloxi.log.1.gz"})).json()["logs"]
    assert [line.endswith("after rotation") for line in live] == [True]
    assert [line.endswith("before rotation") for line in old] == [True]
    await env.http.aclose()


def test_log_file_name_must_be_plain() -> None:
    with pytest.raises(ValueError):
        LogFiles("/tmp/bad name.log")


# ------------------------------------------------------------------------------ status


async def test_status_process_lists_this_process(env: Env) -> None:
    resp = await env.http.get(f"{B}/status/process")
    assert resp.status_code == 200
    rows = resp.json()["processAttr"]
    keys = {"pid", "user", "priority", "nice", "virtMemory", "residentSize", "sharedMemory",
            "status", "CPUUsage", "MemoryUsage", "time", "command"}
    assert all(set(r) == keys and all(isinstance(v, str) for v in r.values()) for r in rows)
    [me] = [r for r in rows if r["pid"] == str(os.getpid())]
    assert int(me["residentSize"]) > 0 and me["status"] in "RS"
    assert float(me["CPUUsage"]) >= 0 and ":" in me["time"]
    cpu = [float(r["CPUUsage"]) for r in rows]
    assert cpu == sorted(cpu, reverse=True)


def test_process_parsing_survives_odd_command_names(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    (proc / "42").mkdir(parents=True)
    (proc / "uptime").write_text("1000.00 500.00\n")
    (proc / "meminfo").write_text("MemTotal:       1000000 kB\n")
    stat = "42 (we ird) (x) S 1 42 42 0 -1 0 0 0 0 0 250 50 0 0 20 -5 1 0 10000 0 0"
    (proc / "42" / "stat").write_text(stat + " 0" * 30 + "\n")
    (proc / "42" / "statm").write_text("1000 250 100 0 0 0 0\n")
    (proc / "43").mkdir()  # vanished: no files
    [p] = processes(proc)
    page_kib = os.sysconf("SC_PAGE_SIZE") // 1024
    assert (p.pid, p.command, p.status, p.priority, p.nice) == ("42", "we ird) (x", "S", "20",
                                                                "-5")
    assert p.resident_size == str(250 * page_kib)
    hz = os.sysconf("SC_CLK_TCK")
    assert p.time == f"{300 // hz // 60}:{300 // hz % 60:02d}.{300 * 100 // hz % 100:02d}"


async def test_status_device(env: Env) -> None:
    d = (await env.http.get(f"{B}/status/device")).json()
    assert set(d) == {"hostName", "machineID", "bootID", "OS", "kernel", "architecture",
                      "uptime"}
    assert d["hostName"] == socket.gethostname()
    assert d["bootID"] == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert d["architecture"] == os.uname().machine and os.uname().release in d["kernel"]
    assert float(d["uptime"]) > 0


async def test_status_filesystem_has_the_root(env: Env) -> None:
    rows = (await env.http.get(f"{B}/status/filesystem")).json()["filesystemAttr"]
    [root] = [r for r in rows if r["mountedOn"] == "/"]
    assert root["usePercent"].endswith("%") and root["size"][-1] in "KMGTPE"
    assert not any(r["type"] in ("proc", "sysfs") for r in rows)


# ------------------------------------------------------------------------------ meta


class Widget(BaseModel):
    size: int
    colour: str = "red"


async def test_meta_is_derived_from_the_openapi_document(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("secret-token\n")
    extra = APIRouter()

    @extra.post("/config/widget")
    def make_widget(w: Widget) -> dict[str, str]:
        return SUCCESS

    app = create_app(Engine(MemoryDatapath()), version="1", extra_routers=[
        extra, params_router(LogControl(logger="pyloxi.test-meta"))],
        tokens=TokenFile(tokens))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://pyloxi") as http:
        resp = await http.get(f"{B}/meta")  # no token: open, as loxilb's security: []
        assert resp.status_code == 200, resp.text
        meta = resp.json()
    assert meta["/config/widget"]["method"] == "POST"
    assert meta["/config/widget"]["fields"]["size"] == {"type": "integer", "required": True}
    assert meta["/config/widget"]["fields"]["colour"]["required"] is False
    lb = meta["/config/loadbalancer"]["fields"]
    assert lb["serviceArguments"]["externalIP"]["required"] is True
    assert lb["endpoints"]["type"] == "array"
    assert lb["endpoints"]["items"]["endpointIP"]["required"] is True
    level = meta["/config/params"]["fields"]["logLevel"]
    assert level["required"] is True and "emergency" in level["enum"]
    assert meta["/config/cors"]["fields"]["cors"]["type"] == "array"
    assert not any(k.startswith(B) for k in meta)


# ------------------------------------------------------------------------------ nodegraph


async def test_nodegraph_rules_endpoints_health_and_clients(env: Env) -> None:
    assert (await env.http.post(f"{B}/config/loadbalancer", json=lb_rule())).status_code == 200
    other = lb_rule(name="", eps=("33.33.33.1",), vip="20.20.20.2")
    assert (await env.http.post(f"{B}/config/loadbalancer", json=other)).status_code == 200
    web = next(p for p in env.engine.programs() if p.vip == "20.20.20.1")
    env.dp.counters[web.svc_id] = ServiceCounters(
        packets=15, bytes=1500, endpoints=(EndpointCounters(10, 1000), EndpointCounters(5, 500)))
    env.engine.set_endpoint_state("32.32.32.1", up=False)
    env.dp.flow_table.append(Flow(
        src="10.0.0.9", dst="20.20.20.1", sport=40000, dport=2020, proto=6, state="est",
        svc_id=web.svc_id, ep_ip="31.31.31.1", ep_port=8080, snat_ip=None, snat_port=0,
        packets=12, bytes=3400))
    g = (await env.http.get(f"{B}/nodegraph/all")).json()
    assert g["schemaVersion"] == 37 and g["meta"] == {"preferredVisualisationType": "nodeGraph"}
    nodes = {n["id"]: n for n in g["nodes"]}
    edges = {(e["source"], e["target"]): e for e in g["edges"]}
    svc = "svc:20.20.20.1:2020:tcp"
    assert nodes[svc]["title"] == "web" and nodes[svc]["mainstat"] == 1500
    assert nodes["ep:31.31.31.1:8080"]["color"] == "green"
    assert nodes["ep:32.32.32.1:8080"]["color"] == "red"
    assert edges[(svc, "ep:31.31.31.1:8080")]["mainstat"] == 1000
    assert edges[("client:10.0.0.9", svc)]["mainstat"] == 3400
    assert "svc:20.20.20.2:2020:tcp" in nodes
    assert all(set(e) == {"id", "source", "target", "mainstat", "secondarystat", "thickness",
                          "color"} for e in g["edges"])
    # per service: by name, or by key for an unnamed rule; unknown: empty
    one = (await env.http.get(f"{B}/nodegraph/web")).json()
    assert {n["id"] for n in one["nodes"]} == {svc, "ep:31.31.31.1:8080", "ep:32.32.32.1:8080",
                                               "client:10.0.0.9"}
    by_key = (await env.http.get(f"{B}/nodegraph/20.20.20.2:2020:tcp")).json()
    assert {n["id"] for n in by_key["nodes"]} == {"svc:20.20.20.2:2020:tcp",
                                                  "ep:33.33.33.1:8080"}
    empty = (await env.http.get(f"{B}/nodegraph/nosuch")).json()
    assert empty["nodes"] == [] and empty["edges"] == []


# ------------------------------------------------------------------------------ cors

SITE = "http://ui.example:3000"
PREFLIGHT = {"Origin": SITE, "Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "content-type"}


async def test_cors_off_by_default_no_headers_preflight_fails(env: Env) -> None:
    assert (await env.http.get(f"{B}/config/cors/all")).json() == {"corsAttr": []}
    resp = await env.http.options(f"{B}/config/loadbalancer", headers=PREFLIGHT)
    assert resp.status_code == 405
    assert "access-control-allow-origin" not in resp.headers
    resp = await env.http.get(f"{B}/version", headers={"Origin": SITE})
    assert "access-control-allow-origin" not in resp.headers


async def test_cors_allowed_origin_gets_headers_and_preflight(env: Env) -> None:
    resp = await env.http.post(f"{B}/config/cors", json={"cors": ["HTTP://UI.example:3000/"]})
    assert resp.status_code == 200 and resp.json() == SUCCESS
    assert (await env.http.get(f"{B}/config/cors/all")).json() == {"corsAttr": [SITE]}
    resp = await env.http.options(f"{B}/config/loadbalancer", headers=PREFLIGHT)
    assert resp.status_code == 204
    assert resp.headers["access-control-allow-origin"] == SITE
    assert "POST" in resp.headers["access-control-allow-methods"]
    assert "content-type" in resp.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in resp.headers
    resp = await env.http.post(f"{B}/config/loadbalancer", json=lb_rule(),
                               headers={"Origin": SITE})
    assert resp.status_code == 200 and resp.headers["access-control-allow-origin"] == SITE
    assert "Origin" in resp.headers["vary"]
    # another origin: nothing
    other = {**PREFLIGHT, "Origin": "http://evil.example"}
    resp = await env.http.options(f"{B}/config/loadbalancer", headers=other)
    assert resp.status_code == 405 and "access-control-allow-origin" not in resp.headers
    resp = await env.http.get(f"{B}/config/loadbalancer/all",
                              headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in resp.headers


async def test_cors_allowed_origin_does_not_lift_the_csrf_rule(env: Env) -> None:
    await env.http.post(f"{B}/config/cors", json={"cors": [SITE]})
    # a "simple" cross-site POST (text/plain, no preflight) is still refused, nothing changes
    import json as _json
    resp = await env.http.post(f"{B}/config/loadbalancer", content=_json.dumps(lb_rule()),
                               headers={"Origin": SITE, "Content-Type": "text/plain"})
    assert_error(resp, 415)
    assert env.engine.list_rules() == []


async def test_cors_management_errors(env: Env) -> None:
    for bad in (["*"], [""], ["ftp://x"], ["http://x/path"], ["http://u@x"], ["x"]):
        assert_error(await env.http.post(f"{B}/config/cors", json={"cors": bad}), 400)
    assert (await env.http.get(f"{B}/config/cors/all")).json() == {"corsAttr": []}
    await env.http.post(f"{B}/config/cors", json={"cors": [SITE, "https://b.example:443"]})
    # all or nothing: one already there refuses the whole body
    resp = await env.http.post(f"{B}/config/cors", json={"cors": ["http://c.example", SITE]})
    assert_error(resp, 409, "exists")
    assert (await env.http.get(f"{B}/config/cors/all")).json() == {
        "corsAttr": [SITE, "https://b.example"]}
    assert_error(await env.http.delete(f"{B}/config/cors/http%3A%2F%2Fnone.example"), 404)
    resp = await env.http.delete(f"{B}/config/cors/http%3A%2F%2Fui.example%3A3000")
    assert resp.status_code == 200
    resp = await env.http.delete(f"{B}/config/cors/https://b.example")
    assert resp.status_code == 200
    assert (await env.http.get(f"{B}/config/cors/all")).json() == {"corsAttr": []}
    resp = await env.http.options(f"{B}/config/loadbalancer", headers=PREFLIGHT)
    assert "access-control-allow-origin" not in resp.headers


async def test_cors_with_tokens_preflight_needs_none_requests_do(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("secret-token\n")
    env = Env(tokens=TokenFile(tokens))
    auth = {"Authorization": "secret-token"}
    resp = await env.http.post(f"{B}/config/cors", json={"cors": [SITE]}, headers=auth)
    assert resp.status_code == 200
    resp = await env.http.options(f"{B}/config/loadbalancer", headers=PREFLIGHT)
    assert resp.status_code == 204 and resp.headers["access-control-allow-origin"] == SITE
    resp = await env.http.post(f"{B}/config/loadbalancer", json=lb_rule(),
                               headers={"Origin": SITE})
    assert_error(resp, 401)  # the page must still hold a token...
    assert resp.headers["access-control-allow-origin"] == SITE  # ...and can read why it failed
    assert env.engine.list_rules() == []
    await env.http.aclose()


# ------------------------------------------------------------------------------ daemon wiring


def test_daemon_log_flags() -> None:
    from pyloxi.daemon import parse_args

    assert parse_args([]).log_level == "info" and parse_args([]).log_file is None
    args = parse_args(["--loglevel", "NOTICE", "--log-file", "/tmp/x/pyloxi.log",
                       "--log-max-size", "10", "--log-max-backups", "2", "--log-no-compress"])
    assert (args.log_level, args.log_file, args.log_max_size, args.log_max_backups,
            args.log_no_compress) == ("notice", "/tmp/x/pyloxi.log", 10, 2, True)
    assert parse_args(["--log-level", "trace"]).log_level == "trace"
    with pytest.raises(SystemExit):
        parse_args(["--log-level", "loud"])


@pytest.mark.parametrize("with_file", [False, True])
def test_setup_logs_to_stderr_and_the_file_or_the_ring(tmp_path: Path, with_file: bool) -> None:
    import io

    from pyloxi import oplog

    root = logging.getLogger()
    before = (list(root.handlers), root.level, logging.getLogger("pyloxi").level)
    stream = io.StringIO()
    path = tmp_path / "logs" / "pyloxi.log" if with_file else None
    try:
        levels, source = oplog.setup("warning", log_file=str(path) if path else None,
                                     stream=stream)
        logging.getLogger("pyloxi.test-setup").info("not at warning")
        logging.getLogger("pyloxi.test-setup").warning("kept %d", 1)
        levels.set("info")
        logging.getLogger("pyloxi.test-setup").info("now at info")
    finally:
        for handler in root.handlers[:]:
            if handler not in before[0]:
                root.removeHandler(handler)
                handler.close()
        root.setLevel(before[1])
        logging.getLogger("pyloxi").setLevel(before[2])
    assert "kept 1" in stream.getvalue() and "not at warning" not in stream.getvalue()
    page = source.page(lines=10)
    assert [line.rsplit(": ", 1)[1] for line in page.logs] == ["now at info", "kept 1"]
    assert page.log_file == ("pyloxi.log" if with_file else "memory")
    assert " WARNING pyloxi.test-setup: kept 1" in page.logs[1]
    if path is not None:
        assert "kept 1" in path.read_text()


def test_the_memory_log_is_bounded() -> None:
    source, logger = ring_with([])
    ring = source.ring
    assert ring is not None
    for i in range(150):  # capacity 100 lines
        logger.info("x" * 10_000 if i == 149 else f"line {i}")
    lines, total = ring.snapshot()
    assert len(lines) == 100 and lines[0][1].endswith("line 50")
    assert len(lines[-1][1]) <= 4096 + 3 and total > lines[-1][0]
    page = source.page(lines=10_000)
    assert page.logs[-1] == "INFO line 50" and page.next_offset == 0
