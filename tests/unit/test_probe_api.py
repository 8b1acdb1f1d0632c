"""Endpoint REST routes and CLI commands against a ProbeManager (configured, not probing)."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from pyloxi.api import create_app
from pyloxi.api.endpoint import endpoint_router
from pyloxi.cli import client as cli_client
from pyloxi.cli.main import app as cli
from pyloxi.probes import ProbeManager


@pytest.fixture
def rig():
    mgr = ProbeManager()
    app = create_app(object(), version="0.0.0", extra_routers=[endpoint_router(mgr)])
    with TestClient(app) as http:
        yield mgr, http


def test_post_get_delete(rig):
    mgr, http = rig
    r = http.post("/netlox/v1/config/endpoint", json={
        "HostName": "31.31.31.1", "probeType": "tcp", "probePort": 8080,
        "probeDuration": 5, "INACTIVERETRIES": 3})
    assert (r.status_code, r.json()) == (200, {"result": "Success"})
    r = http.post("/netlox/v1/config/endpoint", json={
        "hostName": "31.31.31.2", "name": "web", "probeType": "http", "probePort": 80,
        "probeReq": "health", "probeResp": "ok"})
    assert r.status_code == 200
    attr = http.get("/netlox/v1/config/endpoint/all").json()["Attr"]
    by_name = {a["name"]: a for a in attr}
    e = by_name["31.31.31.1_tcp_8080"]
    assert (e["hostName"], e["probeType"], e["probePort"], e["probeDuration"],
            e["inactiveReTries"], e["currState"]) == ("31.31.31.1", "tcp", 8080, 5, 3, "ok")
    assert by_name["web"]["probeReq"] == "health" and by_name["web"]["probeResp"] == "ok"
    r = http.delete("/netlox/v1/config/endpoint/epipaddress/31.31.31.1",
                    params={"probe_type": "tcp", "probe_port": 8080})
    assert (r.status_code, r.json()) == (200, {"result": "Success"})
    r = http.delete("/netlox/v1/config/endpoint/epipaddress/31.31.31.2", params={"name": "web"})
    assert r.status_code == 200
    assert http.get("/netlox/v1/config/endpoint/all").json() == {"Attr": []}
    r = http.delete("/netlox/v1/config/endpoint/epipaddress/31.31.31.2", params={"name": "web"})
    assert r.status_code == 404 and r.json()["code"] == 404
    assert "host-notfound" in r.json()["message"]


@pytest.mark.parametrize("body", [
    {"probeType": "tcp", "probePort": 80},  # no hostName
    {"hostName": "not-an-ip", "probeType": "ping"},
    {"hostName": "10.0.0.1", "probeType": "icmp"},
    {"hostName": "10.0.0.1", "probeType": "tcp"},  # no port
    {"hostName": "10.0.0.1", "probeType": "ping", "inactiveReTries": 101},
    {"hostName": "10.0.0.1", "probeType": "ping", "probeDuration": "soon"},
    [1, 2],
])
def test_bad_input_is_400_and_changes_nothing(rig, body):
    mgr, http = rig
    r = http.post("/netlox/v1/config/endpoint", json=body)
    assert r.status_code == 400, r.text
    assert set(r.json()) == {"code", "message", "result"} and r.json()["code"] == 400
    assert mgr.keys() == []
    r = http.post("/netlox/v1/config/endpoint", content=b"{nope",
                  headers={"content-type": "application/json"})
    assert r.status_code == 400


def test_host_state(rig):
    mgr, http = rig
    http.post("/netlox/v1/config/endpoint", json={"hostName": "10.0.0.1", "probeType": "tcp",
                                                  "probePort": 80})
    r = http.post("/netlox/v1/config/endpointhoststate",
                  json={"hostName": "10.0.0.1", "epPort": 80, "epProto": "tcp", "state": "red"})
    assert r.status_code == 200
    (e,) = http.get("/netlox/v1/config/endpoint/all").json()["Attr"]
    assert e["currState"] == "red"
    r = http.post("/netlox/v1/config/endpointhoststate", json={"hostName": "10.0.0.1",
                                                                "epPort": 80, "state": "green"})
    assert r.status_code == 400
    r = http.post("/netlox/v1/config/endpointhoststate", json={"hostName": "10.0.0.7",
                                                                "state": "red"})
    assert r.status_code == 404
    r = http.post("/netlox/v1/config/endpointhoststate", json={"hostName": "10.0.0.1",
                                                                "state": "green"})
    assert r.status_code == 200 and mgr.status("10.0.0.1_tcp_80").state == "ok"


def test_delete_bad_port_is_400(rig):
    _, http = rig
    r = http.delete("/netlox/v1/config/endpoint/epipaddress/10.0.0.1",
                    params={"probe_port": "x"})
    assert r.status_code == 400
    r = http.delete("/netlox/v1/config/endpoint/epipaddress/bogus")
    assert r.status_code == 400


@pytest.fixture
def cli_rig(rig, monkeypatch):
    mgr, http = rig
    monkeypatch.setattr(cli_client, "transport_override", http._transport)
    monkeypatch.delenv("PYLOXI_API", raising=False)
    return mgr, CliRunner()


def test_cli_create_get_delete(cli_rig):
    mgr, runner = cli_rig
    r = runner.invoke(cli, ["create", "endpoint", "10.0.0.5", "--probetype=tcp",
                            "--probeport=8080", "--period=5", "--retries=3"])
    assert r.exit_code == 0, r.output
    assert "created endpoint" in r.output
    t = mgr.status("10.0.0.5_tcp_8080").target
    assert (t.period, t.retries) == (5.0, 3)
    r = runner.invoke(cli, ["create", "endpoint", "10.0.0.6", "--name=web", "--probetype=https",
                            "--probeport=443", "--probereq=health", "--proberesp=ok"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["get", "ep", "-o", "json"])
    assert r.exit_code == 0, r.output
    names = {e["name"] for e in json.loads(r.output)["Attr"]}
    assert names == {"10.0.0.5_tcp_8080", "web"}
    r = runner.invoke(cli, ["get", "endpoint"])
    assert r.exit_code == 0 and "10.0.0.5_tcp_8080" in r.output and "State" in r.output
    r = runner.invoke(cli, ["get", "ep", "-o", "wide"])
    assert r.exit_code == 0 and "LastProbe" in r.output
    r = runner.invoke(cli, ["delete", "endpoint", "10.0.0.5", "--probetype=tcp",
                            "--probeport=8080"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["delete", "endpoint", "10.0.0.6", "--name=web"])
    assert r.exit_code == 0, r.output
    assert mgr.keys() == []
    r = runner.invoke(cli, ["delete", "endpoint", "10.0.0.6", "--name=web"])
    assert r.exit_code == 1


def test_cli_bad_input_sends_nothing(cli_rig):
    mgr, runner = cli_rig
    for args in (["create", "endpoint", "nope"],
                 ["create", "endpoint", "10.0.0.1", "--probetype=tcp"],
                 ["create", "endpoint", "10.0.0.1", "--probetype=gopher"],
                 ["create", "endpoint", "10.0.0.1", "--retries=0"]):
        r = runner.invoke(cli, args)
        assert r.exit_code == 2, (args, r.output)
    assert mgr.keys() == []
