"""`pyloxi set login|logout|refresh` against the daemon's app (--userservice) in memory: where
the token is kept (0600, never printed), that the next commands send it, that logout and
refresh revoke it on the server, and the refusals (wrong password, OAuth providers)."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner, Result

from pyloxi.api import create_app
from pyloxi.api.auth import AuthApi
from pyloxi.api.users import UserStore
from pyloxi.cli import client as cli_client
from pyloxi.cli.main import app as cli
from pyloxi.datapath.memory import MemoryDatapath
from pyloxi.engine.engine import Engine

ADMIN_PW = "Adm1n!pass-word"


class Rig:
    def __init__(self, http: TestClient, engine: Engine, users: UserStore, home: Path) -> None:
        self.http = http
        self.engine = engine
        self.users = users
        self.home = home
        self.seen: list[httpx.Request] = []

    @property
    def token_file(self) -> Path:
        return self.home / "pyloxi" / "token"

    def run(self, *args: str, input: str | None = None, env: dict[str, str] | None = None
            ) -> Result:
        environ = {"XDG_CONFIG_HOME": str(self.home), "PYLOXI_TOKEN": "",
                   "PYLOXI_TOKEN_FILE": "", **(env or {})}
        return CliRunner().invoke(cli, list(args), input=input, env=environ)

    def sessions(self) -> int:
        return len(self.users._sessions)


@pytest.fixture
def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    users = UserStore(tmp_path / "users.json", scrypt_n=2**4)
    users.add("admin", ADMIN_PW, "admin")
    auth = AuthApi(None, users)
    engine = Engine(MemoryDatapath())
    app = create_app(engine, version="0", tokens=auth.check, open_calls=auth.open_calls,
                     viewer_may=auth.viewer_may, extra_routers=auth.routers)
    with TestClient(app, raise_server_exceptions=False) as http:
        rig = Rig(http, engine, users, tmp_path / "config")

        def forward(request: httpx.Request) -> httpx.Response:
            rig.seen.append(request)
            resp = http.request(request.method, str(request.url.path),
                                params=request.url.params, content=request.content,
                                headers=dict(request.headers))
            return httpx.Response(resp.status_code, content=resp.content,
                                  headers=resp.headers)

        monkeypatch.setattr(cli_client, "transport_override", httpx.MockTransport(forward))
        yield rig


LB_ARGS = ("create", "lb", "20.20.20.1", "--tcp=2020:8080", "--endpoints=31.31.31.1:1")


def auth_header(request: httpx.Request) -> Any:
    return request.headers.get("authorization")


def test_login_keeps_the_token_the_next_commands_send_and_logout_revokes(rig: Rig) -> None:
    assert rig.run(*LB_ARGS).exit_code == 1  # no token yet: 401
    result = rig.run("set", "login", "--user", "admin", input=f"{ADMIN_PW}\n")
    assert result.exit_code == 0, result.output
    assert "Login Success" in result.output
    token = rig.token_file.read_text().strip()
    assert token and token not in result.output and ADMIN_PW not in result.output
    assert stat.S_IMODE(rig.token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(rig.token_file.parent.stat().st_mode) == 0o700
    # the login itself sent the password in the body, never a token
    assert rig.seen[-1].url.path == "/netlox/v1/auth/login"
    result = rig.run(*LB_ARGS)
    assert result.exit_code == 0, result.output
    assert auth_header(rig.seen[-1]) == f"Bearer {token}"
    assert [r.service_arguments.port for r in rig.engine.list_rules()] == [2020]
    assert rig.sessions() == 1
    result = rig.run("set", "logout")
    assert result.exit_code == 0, result.output
    assert "Logout Success" in result.output
    assert not rig.token_file.exists()
    assert rig.sessions() == 0  # the server forgot it, not only the file
    status = rig.http.get("/netlox/v1/config/loadbalancer/all",
                          headers={"Authorization": token})
    assert status.status_code == 401


def test_login_asks_for_the_name_on_stdin_too(rig: Rig) -> None:
    result = rig.run("set", "login", input=f"admin\n{ADMIN_PW}\n")
    assert result.exit_code == 0, result.output
    assert rig.token_file.exists()


def test_a_wrong_password_stores_nothing(rig: Rig) -> None:
    result = rig.run("set", "login", "-u", "admin", input="Wr0ng!password\n")
    assert result.exit_code == 1
    assert "invalid username or password" in result.output
    assert not rig.token_file.exists()


def test_refresh_replaces_the_stored_token(rig: Rig) -> None:
    assert rig.run("set", "login", "-u", "admin", input=f"{ADMIN_PW}\n").exit_code == 0
    old = rig.token_file.read_text().strip()
    result = rig.run("set", "refresh")
    assert result.exit_code == 0, result.output
    new = rig.token_file.read_text().strip()
    assert new != old and rig.sessions() == 1
    assert rig.http.get("/netlox/v1/config/loadbalancer/all",
                        headers={"Authorization": old}).status_code == 401
    assert rig.run(*LB_ARGS).exit_code == 0


def test_the_token_file_flag_and_env_name_where_it_goes(rig: Rig, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "tok"
    result = rig.run("set", "login", "-u", "admin", "--token-file", str(target),
                     input=f"{ADMIN_PW}\n")
    assert result.exit_code == 0, result.output
    assert target.exists() and not rig.token_file.exists()
    assert rig.run(*LB_ARGS, env={"PYLOXI_TOKEN_FILE": str(target)}).exit_code == 0
    assert rig.run("set", "logout", env={"PYLOXI_TOKEN_FILE": str(target)}).exit_code == 0
    assert not target.exists() and rig.sessions() == 0


def test_json_output_never_prints_the_token(rig: Rig) -> None:
    result = rig.run("set", "login", "-u", "admin", "-o", "json", input=f"{ADMIN_PW}\n")
    assert result.exit_code == 0, result.output
    assert rig.token_file.read_text().strip() not in result.output
    assert str(rig.token_file) in result.output


@pytest.mark.parametrize("verb", ["login", "logout", "refresh"])
@pytest.mark.parametrize("provider", ["google", "github"])
def test_oauth_providers_are_a_clear_error(rig: Rig, verb: str, provider: str) -> None:
    result = rig.run("set", verb, "--provider", provider, input="x\ny\n")
    assert result.exit_code == 2
    assert "not supported" in result.output and "OAuth2" in result.output
    assert rig.seen == [] and not rig.token_file.exists()


def test_manual_provider_stores_and_removes_a_given_token(rig: Rig) -> None:
    result = rig.run("set", "login", "--provider", "manual", input="my-manual-token-1\n")
    assert result.exit_code == 0, result.output
    assert rig.token_file.read_text() == "my-manual-token-1\n"
    assert rig.run("set", "logout", "--provider", "manual").exit_code == 0
    assert not rig.token_file.exists() and rig.seen == []
    assert rig.run("set", "login", "--provider", "manual", input="two words\n").exit_code == 2


def test_logout_or_refresh_without_a_token_says_so(rig: Rig) -> None:
    for verb in ("logout", "refresh"):
        result = rig.run("set", verb)
        assert result.exit_code == 2
        assert "not logged in" in result.output
    assert rig.seen == []
