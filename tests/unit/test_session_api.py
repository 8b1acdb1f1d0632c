"""GTP user sessions and ULCL filters: pyloxi has no GTP-U datapath, so a valid request is
refused with 501 (a malformed one with 400, as by loxilb), and the lists are empty."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from pyloxi.api.app import create_app
from pyloxi.api.session import session_router
from pyloxi.cli import client as cli_client
from pyloxi.cli.main import app as cli

B = "/netlox/v1/config"
SESSION = {"ident": "user1", "sessionIP": "192.168.20.1",
           "accessNetworkTunnel": {"TeID": 1, "tunnelIP": "1.232.16.1"},
           "coreNetworkTunnel": {"teID": 1, "tunnelIP": "1.233.16.1"}}
ULCL = {"ulclIdent": "user1", "ulclArgument": {"qfi": 16, "ulclIP": "192.33.125.1"}}


@pytest.fixture
def http() -> Any:
    with TestClient(create_app(object(), version="0", extra_routers=[session_router()])) as c:
        yield c


def test_lists_are_empty_in_loxilbs_shape(http: Any) -> None:
    assert http.get(f"{B}/session/all").json() == {"sessionAttr": []}
    assert http.get(f"{B}/sessionulcl/all").json() == {"ulclAttr": []}


def test_valid_requests_are_501_with_a_clear_message(http: Any) -> None:
    for method, path, body in (("POST", "/session", SESSION), ("POST", "/sessionulcl", ULCL),
                               ("DELETE", "/session/ident/user1", None),
                               ("DELETE", "/sessionulcl/ident/user1/ulclAddress/192.33.125.1",
                                None)):
        r = http.request(method, f"{B}{path}", json=body)
        assert r.status_code == 501, (path, r.text)
        assert r.json()["code"] == 501 and "no GTP-U datapath" in r.json()["message"]
    assert http.get(f"{B}/session/all").json() == {"sessionAttr": []}


@pytest.mark.parametrize(("path", "body", "words"), [
    ("/session", {"sessionIP": "192.168.20.1"}, "ident"),
    ("/session", SESSION | {"sessionIP": "300.1.1.1"}, "sessionIP"),
    ("/session", SESSION | {"accessNetworkTunnel": {"TeID": -1}}, "TeID"),
    ("/session", SESSION | {"coreNetworkTunnel": {"teID": 2**32}}, "TeID"),
    ("/sessionulcl", {"ulclArgument": {"qfi": 1}}, "ulclIdent"),
    ("/sessionulcl", ULCL | {"ulclArgument": {"qfi": 64, "ulclIP": "1.1.1.1"}}, "qfi"),
    ("/sessionulcl", ULCL | {"ulclArgument": {"qfi": 1, "ulclIP": "x"}}, "ulclIP"),
])
def test_malformed_requests_are_400(http: Any, path: str, body: Any, words: str) -> None:
    r = http.post(f"{B}{path}", json=body)
    assert r.status_code == 400, r.text
    assert words in r.json()["message"]
    r = http.delete(f"{B}/sessionulcl/ident/user1/ulclAddress/not-an-ip")
    assert r.status_code == 400


def test_cli_verbs(http: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_client, "transport_override", http._transport)
    monkeypatch.delenv("PYLOXI_API", raising=False)
    runner = CliRunner()
    r = runner.invoke(cli, ["create", "session", "user1", "192.168.20.1",
                            "--accessNetworkTunnel=1:1.232.16.1",
                            "--coreNetworkTunnel=1:1.233.16.1"])
    assert r.exit_code == 1 and "not supported" in r.output
    r = runner.invoke(cli, ["create", "sessionulcl", "user1", "--ulclArgs=16:192.33.125.1"])
    assert r.exit_code == 1 and "not supported" in r.output
    r = runner.invoke(cli, ["create", "sessionulcl", "user1", "--ulclArgs=99:192.33.125.1"])
    assert r.exit_code == 2                                    # QFI 0-63: refused locally
    r = runner.invoke(cli, ["get", "session"])
    assert r.exit_code == 0 and "Ident" in r.output
    assert json.loads(runner.invoke(cli, ["get", "sessionulcl", "-o", "json"]).output) == {
        "ulclAttr": []}
    r = runner.invoke(cli, ["delete", "sessionulcl", "user1", "--ulclAddress=192.33.125.1"])
    assert r.exit_code == 1 and "not supported" in r.output
