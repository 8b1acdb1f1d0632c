"""loxilb's user service (--userservice): login, logout, refresh, expiry, users CRUD, roles,
hashes at rest, the manual-token upgrade, OAuth's "not configured", and the paths without it.

The app is the daemon's composition (api/auth.py AuthApi) over the in-memory datapath; each
refusal is checked for its status, loxilb's error body, and that nothing changed.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pyloxi.api import create_app
from pyloxi.api.auth import AuthApi
from pyloxi.api.security import TokenFile
from pyloxi.api.users import UserStore, first_admin, hash_password, password_matches
from pyloxi.datapath.memory import MemoryDatapath
from pyloxi.engine.engine import Engine

B = "/netlox/v1"
LB = f"{B}/config/loadbalancer"
ADMIN_PW = "Adm1n!pass-word"
BOB_PW = "B0b!secret-pw"
MANUAL = "manual-token-0123456789abcdef"
FAST = 2**4  # scrypt cost for tests: the format and the checks are the same


def rule(port: int = 2020) -> dict[str, Any]:
    return {"serviceArguments": {"externalIP": "20.20.20.1", "port": port, "protocol": "tcp"},
            "endpoints": [{"endpointIP": "31.31.31.1", "targetPort": 8080, "weight": 1}]}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Rig:
    def __init__(self, http: TestClient, engine: Engine, users: UserStore, clock: Clock,
                 path: Path, manual: Path | None) -> None:
        self.http = http
        self.engine = engine
        self.users = users
        self.clock = clock
        self.path = path
        self.manual = manual

    def login(self, user: str = "admin", password: str = ADMIN_PW) -> str:
        resp = self.http.post(f"{B}/auth/login", json={"username": user, "password": password})
        assert resp.status_code == 200, resp.text
        token = resp.json()["token"]
        assert isinstance(token, str) and len(token) >= 40
        return token

    def post(self, path: str, body: Any, token: str | None) -> Any:
        headers = {"Authorization": token} if token else {}
        return self.http.post(f"{B}{path}", json=body, headers=headers)


def make_rig(tmp_path: Path, *, manual: bool = False) -> Iterator[Rig]:
    clock = Clock()
    users = UserStore(tmp_path / "users.json", clock=clock, ttl=3600, scrypt_n=FAST)
    users.add("admin", ADMIN_PW, "admin")
    manual_path = None
    check = None
    if manual:
        manual_path = tmp_path / "manual_token"
        manual_path.write_text(MANUAL + "\n")
        check = TokenFile(manual_path)
    auth = AuthApi(check, users, manual_path=manual_path)
    engine = Engine(MemoryDatapath())
    app = create_app(engine, version="0", tokens=auth.check, open_calls=auth.open_calls,
                     viewer_may=auth.viewer_may, extra_routers=auth.routers)
    with TestClient(app, raise_server_exceptions=False) as http:
        yield Rig(http, engine, users, clock, tmp_path / "users.json", manual_path)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    yield from make_rig(tmp_path)


def assert_error(resp: Any, code: int, message: str | None = None) -> None:
    assert resp.status_code == code, resp.text
    body = resp.json()
    assert body["code"] == code and body["message"] == body["result"]
    if message is not None:
        assert message in body["message"], body


# ------------------------------------------------------------------ login / logout / refresh


def test_a_login_token_makes_rules_and_logout_revokes_it(rig: Rig) -> None:
    assert_error(rig.post("/config/loadbalancer", rule(), None), 401)
    token = rig.login()
    assert rig.post("/config/loadbalancer", rule(), token).status_code == 200
    # "Bearer <t>" works as the bare form does
    assert rig.http.get(f"{LB}/all", headers={"Authorization": f"Bearer {token}"}).json()[
        "lbAttr"][0]["serviceArguments"]["port"] == 2020
    assert rig.post("/auth/logout", {}, token).json() == {"message": "Success"}
    assert_error(rig.post("/config/loadbalancer", rule(2021), token), 401, "invalid token")
    assert [r.service_arguments.port for r in rig.engine.list_rules()] == [2020]


@pytest.mark.parametrize("body", [
    {"username": "admin", "password": "Wr0ng!password"},
    {"username": "nobody", "password": ADMIN_PW},
    {"username": "ADMIN", "password": ADMIN_PW},
])
def test_a_wrong_name_or_password_is_401_and_issues_nothing(rig: Rig, body: Any) -> None:
    assert_error(rig.http.post(f"{B}/auth/login", json=body), 401,
                 "invalid username or password")
    assert json.loads(rig.path.read_text())["sessions"] == []


@pytest.mark.parametrize("body, why", [
    ({"username": "admin"}, "password: field required"),
    ({"password": ADMIN_PW}, "username: field required"),
    ({"username": 1, "password": ADMIN_PW}, "username"),
    ({"username": "admin", "password": "x" * 300}, "password"),
    ('{"username": "admin", "password": "Adm1n!\\ud800"}', "surrogate"),
    ('{"username": "admin", "password": "Adm1n!\\u0000x"}', "password"),
    ("[]", "must be a JSON object"),
    ("", "empty body"),
])
def test_a_malformed_login_is_400(rig: Rig, body: Any, why: str) -> None:
    if isinstance(body, str):
        resp = rig.http.post(f"{B}/auth/login", content=body,
                             headers={"content-type": "application/json"})
    else:
        resp = rig.http.post(f"{B}/auth/login", json=body)
    assert_error(resp, 400, why)


def test_json_keys_in_any_case_as_loxilb(rig: Rig) -> None:
    resp = rig.http.post(f"{B}/auth/login", json={"UserName": "admin", "PASSWORD": ADMIN_PW})
    assert resp.status_code == 200 and resp.json()["token"]


def test_a_token_expires(rig: Rig) -> None:
    token = rig.login()
    rig.clock.now += 3599
    assert rig.http.get(f"{LB}/all", headers={"Authorization": token}).status_code == 200
    rig.clock.now += 2
    assert_error(rig.http.get(f"{LB}/all", headers={"Authorization": token}), 401,
                 "invalid token")


def test_refresh_gives_a_new_token_and_revokes_the_old(rig: Rig) -> None:
    old = rig.login()
    rig.clock.now += 3000
    resp = rig.post("/auth/token/upgrade", {}, old)
    assert resp.status_code == 200, resp.text
    new = resp.json()["token"]
    assert new != old
    assert_error(rig.http.get(f"{LB}/all", headers={"Authorization": old}), 401)
    rig.clock.now += 3000  # past the old token's expiry, within the new one's
    assert rig.http.get(f"{LB}/all", headers={"Authorization": new}).status_code == 200
    # refreshing a revoked token gives nothing
    assert_error(rig.post("/auth/token/upgrade", {}, old), 401)


def test_tokens_survive_a_restart_and_are_stored_hashed(rig: Rig, tmp_path: Path) -> None:
    token = rig.login()
    text = rig.path.read_text()
    assert token not in text and ADMIN_PW not in text
    assert stat.S_IMODE(rig.path.stat().st_mode) == 0o600
    again = UserStore(rig.path, clock=rig.clock, ttl=3600, scrypt_n=FAST)
    who = again.identify(token.encode())
    assert who is not None and (who.name, who.role) == ("admin", "admin")


def test_passwords_are_salted_scrypt_hashes(rig: Rig) -> None:
    admin = rig.login()
    assert rig.post("/auth/users", {"username": "bob", "password": BOB_PW}, admin).json() == {
        "result": "Success"}
    assert rig.post("/auth/users", {"username": "carol", "password": BOB_PW + "x"},
                    admin).status_code == 200
    stored = {u["username"]: u["password"] for u in json.loads(rig.path.read_text())["users"]}
    assert BOB_PW not in rig.path.read_text()
    assert all(h.startswith("scrypt$") for h in stored.values())
    salts = {h.split("$")[4] for h in stored.values()}
    assert len(salts) == 3  # one salt per user
    assert password_matches(BOB_PW, stored["bob"])
    assert not password_matches(BOB_PW + "x", stored["bob"])
    # the default cost is what a real daemon stores
    assert hash_password("x").split("$")[1] == str(2**14)


# ------------------------------------------------------------------ users CRUD and roles


def test_users_crud(rig: Rig) -> None:
    admin = rig.login()
    h = {"Authorization": admin}
    assert rig.post("/auth/users", {"username": "bob", "password": BOB_PW, "role": "viewer"},
                    admin).status_code == 200
    users = rig.http.get(f"{B}/auth/users", headers=h).json()
    assert [(u["id"], u["username"], u["role"]) for u in users] == [
        (1, "admin", "admin"), (2, "bob", "viewer")]
    assert all("password" not in u and u["created_at"] for u in users)
    assert_error(rig.post("/auth/users", {"username": "bob", "password": BOB_PW}, admin), 409,
                 "already exists")
    resp = rig.http.put(f"{B}/auth/users/2", json={"role": "admin"}, headers=h)
    assert resp.status_code == 200, resp.text
    assert rig.users.list()[1].role == "admin"
    assert_error(rig.http.put(f"{B}/auth/users/2", json={"username": "admin"}, headers=h), 409)
    assert_error(rig.http.put(f"{B}/auth/users/99", json={"role": "viewer"}, headers=h), 404,
                 "user 99 not found")
    assert_error(rig.http.delete(f"{B}/auth/users/99", headers=h), 404)
    assert_error(rig.http.delete(f"{B}/auth/users/abc", headers=h), 400)
    bob = rig.login("bob", BOB_PW)
    assert rig.http.delete(f"{B}/auth/users/2", headers=h).json() == {"result": "Success"}
    assert_error(rig.http.get(f"{LB}/all", headers={"Authorization": bob}), 401)  # revoked
    assert [u.username for u in rig.users.list()] == ["admin"]


@pytest.mark.parametrize("body, why", [
    ({"username": "bob", "password": "Sh0rt!"}, "at least 9 characters"),
    ({"username": "bob", "password": "n0upper!case"}, "uppercase"),
    ({"username": "bob", "password": "N0LOWER!CASE"}, "lowercase"),
    ({"username": "bob", "password": "No!digits-here"}, "number"),
    ({"username": "bob", "password": "N0special1here"}, "special"),
    ({"username": "bob", "password": "Triple!aaa1"}, "more than twice"),
    ({"username": "Bob!pass12", "password": "Bob!pass12"}, "username"),
    ({"username": "", "password": BOB_PW}, "invalid username"),
    ({"username": "bo b", "password": BOB_PW}, "invalid username"),
    ({"username": "bob", "password": BOB_PW, "role": "root"}, "invalid role"),
    ({"username": "bob"}, "password: field required"),
    ({"username": ["bob"], "password": BOB_PW}, "username"),
])
def test_a_bad_user_is_400_and_not_stored(rig: Rig, body: Any, why: str) -> None:
    admin = rig.login()
    assert_error(rig.post("/auth/users", body, admin), 400, why)
    assert [u.username for u in rig.users.list()] == ["admin"]


def test_a_viewer_reads_but_changes_nothing(rig: Rig) -> None:
    admin = rig.login()
    assert rig.post("/auth/users", {"username": "bob", "password": BOB_PW}, admin).json() == {
        "result": "Success"}  # no role: a viewer
    bob = rig.login("bob", BOB_PW)
    assert rig.http.get(f"{LB}/all", headers={"Authorization": bob}).status_code == 200
    assert_error(rig.post("/config/loadbalancer", rule(), bob), 403, "Permission denied")
    assert_error(rig.post("/auth/users", {"username": "eve", "password": BOB_PW}, bob), 403)
    assert_error(rig.http.delete(f"{B}/auth/users/1", headers={"Authorization": bob}), 403)
    assert_error(rig.http.put(f"{B}/auth/users/2", json={"role": "admin"},
                              headers={"Authorization": bob}), 403)
    assert rig.engine.list_rules() == [] and len(rig.users.list()) == 2
    # a viewer renews and ends its own session
    new = rig.post("/auth/token/upgrade", {}, bob).json()["token"]
    assert rig.post("/auth/logout", {}, new).status_code == 200
    assert_error(rig.http.get(f"{LB}/all", headers={"Authorization": new}), 401)


def test_the_last_admin_stays(rig: Rig) -> None:
    admin = rig.login()
    h = {"Authorization": admin}
    assert_error(rig.http.delete(f"{B}/auth/users/1", headers=h), 409, "last admin")
    assert_error(rig.http.put(f"{B}/auth/users/1", json={"role": "viewer"}, headers=h), 409)
    assert rig.users.list()[0].role == "admin"


def test_a_new_password_logs_the_old_tokens_out(rig: Rig) -> None:
    admin = rig.login()
    h = {"Authorization": admin}
    assert_error(rig.http.put(f"{B}/auth/users/1", json={"password": ADMIN_PW}, headers=h), 400,
                 "previous password")
    assert rig.http.put(f"{B}/auth/users/1", json={"password": "N3w!admin-pw"},
                        headers=h).status_code == 200
    assert_error(rig.http.get(f"{LB}/all", headers=h), 401)
    assert_error(rig.http.post(f"{B}/auth/login",
                               json={"username": "admin", "password": ADMIN_PW}), 401)
    rig.login("admin", "N3w!admin-pw")


def test_user_creation_needs_a_token(rig: Rig) -> None:
    """loxilb leaves POST /auth/users open (anyone could make an admin): not copied."""
    assert_error(rig.post("/auth/users", {"username": "eve", "password": BOB_PW,
                                          "role": "admin"}, None), 401)
    assert [u.username for u in rig.users.list()] == ["admin"]


# ------------------------------------------------------------------ manual tokens beside users


def test_manual_token_and_login_tokens_together(tmp_path: Path) -> None:
    for rig in make_rig(tmp_path, manual=True):
        assert rig.post("/config/loadbalancer", rule(), MANUAL).status_code == 200
        token = rig.login()
        assert rig.post("/config/loadbalancer", rule(2021), token).status_code == 200
        # a manual token cannot log out or be refreshed: it lives in its file
        assert_error(rig.post("/auth/logout", {}, MANUAL), 400, "only a login token")
        assert_error(rig.post("/auth/token/upgrade", {}, MANUAL), 400)
        # the manual token is an admin: it can create users (the first one, say)
        assert rig.post("/auth/users", {"username": "bob", "password": BOB_PW},
                        MANUAL).status_code == 200
        # loxilb's upgrade: a new manual token replaces the file's
        resp = rig.post("/auth/token/upgrade", {"license_key": "new-manual-token-42"}, token)
        assert resp.json() == {"license_key": "new-manual-token-42"}
        assert rig.manual is not None
        assert rig.manual.read_text() == "new-manual-token-42\n"
        assert stat.S_IMODE(rig.manual.stat().st_mode) == 0o600
        assert_error(rig.post("/config/loadbalancer", rule(2022), MANUAL), 401)
        assert rig.post("/config/loadbalancer", rule(2022), "new-manual-token-42"
                        ).status_code == 200
        assert_error(rig.post("/auth/token/upgrade", {"license_key": "two words"}, token), 400)
        assert_error(rig.post("/auth/token/upgrade", {"license_key": 5}, token), 400)
        bob = rig.login("bob", BOB_PW)
        assert_error(rig.post("/auth/token/upgrade", {"license_key": "bobs-token-1234"}, bob),
                     403)
        assert rig.manual.read_text() == "new-manual-token-42\n"


# ------------------------------------------------------------------ without --userservice, oauth


def plain_app(tmp_path: Path, *, manual: bool, oauth2: bool = False) -> TestClient:
    check = None
    path = None
    if manual:
        path = tmp_path / "manual_token"
        path.write_text(MANUAL + "\n")
        check = TokenFile(path)
    auth = AuthApi(check, None, manual_path=path, oauth2=oauth2, oauth2_providers=["google"])
    app = create_app(Engine(MemoryDatapath()), version="0", tokens=auth.check,
                     open_calls=auth.open_calls, viewer_may=auth.viewer_may,
                     extra_routers=auth.routers)
    return TestClient(app, raise_server_exceptions=False)


@pytest.mark.parametrize("method, path", [
    ("POST", "/auth/login"), ("POST", "/auth/logout"), ("GET", "/auth/users"),
    ("POST", "/auth/users"), ("PUT", "/auth/users/1"), ("DELETE", "/auth/users/1"),
])
def test_without_userservice_the_user_paths_say_so(tmp_path: Path, method: str,
                                                    path: str) -> None:
    http = plain_app(tmp_path, manual=False)
    body = {"username": "admin", "password": ADMIN_PW} if method in ("POST", "PUT") else None
    assert_error(http.request(method, f"{B}{path}", json=body), 404,
                 "user service is not enabled")
    # with manual tokens, the token comes first; login is not open then
    secured = plain_app(tmp_path, manual=True)
    assert_error(secured.request(method, f"{B}{path}", json=body), 401)
    assert_error(secured.request(method, f"{B}{path}", json=body,
                                 headers={"Authorization": MANUAL}), 404, "not enabled")


def test_upgrade_without_a_token_file_says_why(tmp_path: Path) -> None:
    http = plain_app(tmp_path, manual=False)
    assert_error(http.post(f"{B}/auth/token/upgrade", json={"license_key": "abcdefgh"}), 400,
                 "--token-file")
    assert_error(http.post(f"{B}/auth/token/upgrade", json={}), 400, "license_key")


@pytest.mark.parametrize("oauth2", [False, True])
@pytest.mark.parametrize("path", ["/oauth/google", "/oauth/github/callback?code=c&state=s",
                                  "/oauth/google/token?token=t&refreshtoken=r", "/oauth/x"])
def test_every_oauth_provider_is_not_configured(tmp_path: Path, oauth2: bool,
                                                path: str) -> None:
    # open routes (loxilb's security: []), even with manual tokens
    http = plain_app(tmp_path, manual=True, oauth2=oauth2)
    resp = http.get(f"{B}{path}")
    assert_error(resp, 400, "is not configured")
    assert ("oauth2 is not enabled" in resp.json()["message"]) is not oauth2


def test_the_openapi_document_marks_the_open_calls(tmp_path: Path) -> None:
    for rig in make_rig(tmp_path):
        paths = rig.http.get(f"{B}/swagger.json").json()["paths"]
        assert paths[f"{B}/auth/login"]["post"]["security"] == []
        assert paths[f"{B}/oauth/{{provider}}"]["get"]["security"] == []
        assert "security" not in paths[f"{B}/auth/users"]["post"]


# ------------------------------------------------------------------ the first admin


def test_the_first_admin_comes_from_a_file(tmp_path: Path) -> None:
    pw = tmp_path / "admin_pw"
    pw.write_text(ADMIN_PW + "\n")
    users = UserStore(tmp_path / "users.json", scrypt_n=FAST)
    first_admin(users, str(pw))
    assert [(u.username, u.role) for u in users.list()] == [("admin", "admin")]
    users.login("admin", ADMIN_PW)
    pw.write_text("Other!pass-1\n")  # once users exist the file is not used again
    first_admin(users, str(pw))
    users.login("admin", ADMIN_PW)


def test_a_weak_or_missing_first_password_stops_the_start(tmp_path: Path) -> None:
    pw = tmp_path / "admin_pw"
    pw.write_text("admin\n")
    users = UserStore(tmp_path / "users.json", scrypt_n=FAST)
    with pytest.raises(ValueError, match="at least 9 characters"):
        first_admin(users, str(pw))
    with pytest.raises(ValueError, match="No such file"):
        first_admin(users, str(tmp_path / "missing"))
    assert users.list() == []


def test_a_corrupt_user_file_stops_the_start(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    path.write_text('{"users": [{"id": "x"}]}')
    with pytest.raises(ValueError, match="not a pyloxi user file"):
        UserStore(path)
