"""Token authentication (loxilb's --manualtoken mode) of the REST API, and the CLI's side of it.

Each refused request is checked for its status, loxilb's error body, and that the rule table
and datapath are as before; each accepted one for the rule it made.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from pyloxi.api import create_app
from pyloxi.api.endpoint import endpoint_router
from pyloxi.api.guard import MAX_BODY_BYTES
from pyloxi.api.security import TokenFile, parse_tokens, presented_token
from pyloxi.cli import client as cli_client
from pyloxi.cli.main import app as cli
from pyloxi.client import Client, Unauthorized
from pyloxi.datapath.memory import MemoryDatapath
from pyloxi.engine.engine import Engine
from pyloxi.probes import ProbeManager

B = "/netlox/v1"
LB = f"{B}/config/loadbalancer"
TOKEN = "s3cr3t-t0ken-0123456789abcdef"
OTHER = "another-token-9876543210"


def rule(port: int = 2020) -> dict[str, Any]:
    return {
        "serviceArguments": {"externalIP": "20.20.20.1", "port": port, "protocol": "tcp"},
        "endpoints": [{"endpointIP": "31.31.31.1", "targetPort": 8080, "weight": 1}],
    }


def write_tokens(path: Path, *lines: str) -> None:
    """Replace the file as editors and config managers do (a new inode, atomically)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(f"{line}\n" for line in lines))
    tmp.chmod(0o600)
    os.replace(tmp, path)


class Rig:
    def __init__(self, http: TestClient, engine: Engine, dp: MemoryDatapath,
                 tokens: TokenFile, path: Path) -> None:
        self.http = http
        self.engine = engine
        self.dp = dp
        self.tokens = tokens
        self.path = path

    def snapshot(self) -> tuple[Any, ...]:
        return ([r.model_dump() for r in self.engine.list_rules()], list(self.dp.calls))


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    path = tmp_path / "manual_token"
    write_tokens(path, "# API tokens", TOKEN, "", OTHER)
    tokens = TokenFile(path)
    dp = MemoryDatapath()
    engine = Engine(dp)
    app = create_app(engine, version="0", tokens=tokens,
                     extra_routers=[endpoint_router(ProbeManager())])
    with TestClient(app, raise_server_exceptions=False) as http:
        yield Rig(http, engine, dp, tokens, path)


def assert_401(resp: httpx.Response, message: str) -> None:
    assert resp.status_code == 401, resp.text
    assert resp.json() == {"code": 401, "message": message, "result": message}
    assert resp.headers["www-authenticate"].startswith("Bearer")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# ------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("headers, message", [
    ({}, "unauthenticated for invalid credentials"),
    ({"Authorization": ""}, "unauthenticated for invalid credentials"),
    ({"Authorization": "Bearer wrong"}, "invalid token"),
    ({"Authorization": "wrong"}, "invalid token"),
    ({"Authorization": f"Bearer {TOKEN}x"}, "invalid token"),  # a longer guess
    ({"Authorization": f"Bearer {TOKEN[:-1]}"}, "invalid token"),  # a prefix
    ({"Authorization": f"Basic {TOKEN}"}, "invalid token"),  # not our scheme
    ({"Authorization": "Bearer " + "a" * 10000}, "invalid token"),
])
def test_post_without_an_accepted_token_is_401_and_changes_nothing(
        rig: Rig, headers: dict[str, str], message: str) -> None:
    before = rig.snapshot()
    assert_401(rig.http.post(LB, json=rule(), headers=headers), message)
    assert rig.snapshot() == before
    assert rig.engine.list_rules() == []


@pytest.mark.parametrize("method, path", [
    ("GET", f"{LB}/all"),
    ("DELETE", f"{LB}/all"),
    ("DELETE", f"{LB}/name/x"),
    ("GET", f"{B}/config/conntrack/all"),
    ("GET", f"{B}/config/endpoint/all"),
    ("GET", f"{B}/no/such/route"),  # no route: still 401, the API's shape is not disclosed
    ("POST", f"{B}/version"),  # only GET/HEAD of the exempt paths are open
])
def test_every_route_needs_the_token(rig: Rig, method: str, path: str) -> None:
    assert rig.http.post(LB, json=rule(), headers=bearer(TOKEN)).status_code == 200
    before = rig.snapshot()
    assert_401(rig.http.request(method, path), "unauthenticated for invalid credentials")
    assert rig.snapshot() == before


def test_an_unauthenticated_body_is_refused_before_it_is_read(rig: Rig) -> None:
    """401 (not 413): nobody without a token can make the server buffer a megabyte."""
    resp = rig.http.post(LB, content=b"x" * (MAX_BODY_BYTES + 1),
                         headers={"content-type": "application/json"})
    assert_401(resp, "unauthenticated for invalid credentials")
    # with the token, the size limit answers
    resp = rig.http.post(LB, content=b"x" * (MAX_BODY_BYTES + 1),
                         headers={"content-type": "application/json", **bearer(TOKEN)})
    assert resp.status_code == 413


@pytest.mark.parametrize("path", [f"{B}/version", f"{B}/swagger.json", f"{B}/docs"])
def test_version_and_the_openapi_document_stay_open(rig: Rig, path: str) -> None:
    """loxilb's `security: []` routes: keepalived's health check curls /version."""
    assert rig.http.get(path).status_code == 200


# ------------------------------------------------------------------------- acceptance


@pytest.mark.parametrize("header", [f"Bearer {TOKEN}", f"bearer  {TOKEN} ", TOKEN, OTHER])
def test_an_accepted_token_works_bare_or_bearer(rig: Rig, header: str) -> None:
    resp = rig.http.post(LB, json=rule(), headers={"Authorization": header})
    assert resp.status_code == 200, resp.text
    listed = rig.http.get(f"{LB}/all", headers={"Authorization": header}).json()["lbAttr"]
    assert [r["serviceArguments"]["port"] for r in listed] == [2020]


def test_a_changed_file_is_read_again_without_a_restart(rig: Rig) -> None:
    write_tokens(rig.path, OTHER)  # TOKEN revoked, OTHER kept
    assert_401(rig.http.get(f"{LB}/all", headers=bearer(TOKEN)), "invalid token")
    assert rig.http.get(f"{LB}/all", headers=bearer(OTHER)).status_code == 200
    write_tokens(rig.path, "new-token-abcdefgh")
    assert rig.http.get(f"{LB}/all", headers=bearer("new-token-abcdefgh")).status_code == 200


def test_reload_reads_an_in_place_rewrite(rig: Rig) -> None:
    """SIGHUP's path: even a rewrite the stat check could miss (same size, same inode)."""
    st = rig.path.stat()
    rig.path.write_text(f"{OTHER[::-1]}\n")  # OTHER reversed: same length as OTHER's line
    os.utime(rig.path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert rig.tokens.reload() == 1
    assert_401(rig.http.get(f"{LB}/all", headers=bearer(OTHER)), "invalid token")
    assert rig.http.get(f"{LB}/all", headers=bearer(OTHER[::-1])).status_code == 200


def test_a_deleted_token_file_refuses_everyone(rig: Rig) -> None:
    rig.path.unlink()
    assert_401(rig.http.post(LB, json=rule(), headers=bearer(TOKEN)), "invalid token")
    assert rig.engine.list_rules() == []
    write_tokens(rig.path, TOKEN)
    assert rig.http.post(LB, json=rule(), headers=bearer(TOKEN)).status_code == 200


def test_an_emptied_token_file_refuses_everyone(rig: Rig) -> None:
    write_tokens(rig.path, "# nobody")
    assert_401(rig.http.get(f"{LB}/all", headers=bearer(TOKEN)), "invalid token")


# ------------------------------------------------------------------------- the file


def test_parse_tokens_skips_comments_and_refuses_what_no_header_can_carry() -> None:
    text = "# c\n\n  tok-1  \ntwo words\ntök\nctl\x01x\n" + "a" * 5000 + "\ntok-2\n"
    tokens, bad = parse_tokens(text)
    assert tokens == [b"tok-1", b"tok-2"]
    assert bad == [4, 5, 6, 7]


@pytest.mark.parametrize("content", [None, "", "# only a comment\n\n"])
def test_a_start_without_tokens_is_refused(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "tokens"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match="token file"):
        TokenFile(path)


def test_the_tokens_never_show(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"{TOKEN}\nbad token\n")
    path.chmod(0o644)
    tokens = TokenFile(path)
    assert TOKEN not in repr(tokens)
    assert "bad token" not in caplog.text and TOKEN not in caplog.text
    assert "line 2" in caplog.text
    assert "readable by others" in caplog.text


def test_presented_token() -> None:
    assert presented_token(b"Bearer abc") == b"abc"
    assert presented_token(b"BEARER  abc ") == b"abc"
    assert presented_token(b"abc") == b"abc"
    assert presented_token(b"Bearer") == b"Bearer"  # a bare token that happens to be "Bearer"


# ------------------------------------------------------------------------- OpenAPI


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                yield v
            else:
                yield from _refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v)


def test_openapi_declares_loxilbs_bearer_auth(rig: Rig) -> None:
    doc = rig.http.get(f"{B}/swagger.json").json()
    assert doc["components"]["securitySchemes"]["BearerAuth"] == {
        "type": "apiKey", "name": "Authorization", "in": "header"}
    assert doc["security"] == [{"BearerAuth": []}]
    assert doc["paths"][f"{B}/version"]["get"]["security"] == []
    assert "401" in doc["paths"][LB]["post"]["responses"]
    # every reference resolves inside the document (request bodies' $defs were hoisted)
    components = doc["components"]["schemas"]
    for ref in _refs(doc):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in components


def test_openapi_without_tokens_declares_no_security() -> None:
    app = create_app(Engine(MemoryDatapath()), version="0")
    doc = app.openapi()
    assert "security" not in doc and "securitySchemes" not in doc["components"]


# ------------------------------------------------------------------------- clients


def test_client_sends_the_token_and_maps_401() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return httpx.Response(401, json={"code": 401, "message": "invalid token"})
        return httpx.Response(200, json={"version": "1", "buildInfo": ""})

    with Client("http://api", transport=httpx.MockTransport(handler), token=TOKEN) as api:
        assert api.version()["version"] == "1"
    with Client("http://api", transport=httpx.MockTransport(handler)) as api, \
            pytest.raises(Unauthorized, match="invalid token"):
        api.version()
    assert seen == [f"Bearer {TOKEN}", None]


@pytest.fixture
def cli_seen(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"version": "1", "buildInfo": ""})

    monkeypatch.setattr(cli_client, "transport_override", httpx.MockTransport(handler))
    for var in ("PYLOXI_TOKEN", "PYLOXI_TOKEN_FILE", "PYLOXI_CACERT", "PYLOXI_API"):
        monkeypatch.delenv(var, raising=False)
    yield seen


def test_cli_token_from_a_file_option(cli_seen: list[httpx.Request], tmp_path: Path) -> None:
    path = tmp_path / "tok"
    path.write_text(f"# mine\n{TOKEN}\n")
    result = CliRunner().invoke(cli, ["version", "--token-file", str(path)])
    assert result.exit_code == 0, result.output
    assert cli_seen[0].headers["authorization"] == f"Bearer {TOKEN}"


def test_cli_token_from_the_environment(cli_seen: list[httpx.Request], tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["version"], env={"PYLOXI_TOKEN": TOKEN})
    assert result.exit_code == 0, result.output
    path = tmp_path / "tok"
    path.write_text(OTHER)
    result = CliRunner().invoke(cli, ["version"], env={"PYLOXI_TOKEN_FILE": str(path)})
    assert result.exit_code == 0, result.output
    assert [r.headers["authorization"] for r in cli_seen] == [f"Bearer {TOKEN}",
                                                             f"Bearer {OTHER}"]


def test_cli_without_a_token_sends_none(cli_seen: list[httpx.Request]) -> None:
    assert CliRunner().invoke(cli, ["version"]).exit_code == 0
    assert "authorization" not in cli_seen[0].headers


@pytest.mark.parametrize("args, env, words", [
    (["--token-file", "/nonexistent/tok"], {}, "--token-file"),
    (["--cacert", "/nonexistent/ca.pem"], {}, "--cacert"),
    ([], {"PYLOXI_TOKEN": "two words"}, "PYLOXI_TOKEN"),
])
def test_cli_bad_credentials_input_is_exit_2_and_sends_nothing(
        cli_seen: list[httpx.Request], args: list[str], env: dict[str, str],
        words: str) -> None:
    result = CliRunner().invoke(cli, ["version", *args], env=env)
    assert result.exit_code == 2, result.output
    assert words in result.output
    assert cli_seen == []


def test_cli_settings_never_show_the_token() -> None:
    settings = cli_client.make_settings(None, None, None, None, env={"PYLOXI_TOKEN": TOKEN})
    assert settings.token == TOKEN
    assert TOKEN not in repr(settings)


def test_cli_401_is_one_line_exit_1(monkeypatch: pytest.MonkeyPatch) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = {"code": 401, "message": "invalid token", "result": "invalid token"}
        return httpx.Response(401, content=json.dumps(body).encode())

    monkeypatch.setattr(cli_client, "transport_override", httpx.MockTransport(handler))
    result = CliRunner().invoke(cli, ["get", "lb"], env={"PYLOXI_TOKEN": "wrong"})
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == ["Error: invalid token"]
