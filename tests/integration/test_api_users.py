"""The real daemon with `--userservice`: the CLI logs in (password on stdin), makes a rule with
the token it stored, the rule carries traffic; after `set logout` the same token is refused
(401) and changes nothing. The user file holds no password in clear."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyloxi.testing.lab import LbTopology, cleanup_stale
from pyloxi.testing.lab.topology import ROUTED_VIP, backend_ip

from .conftest import DaemonHandle
from .traffic import http_answers

ADMIN_PW = "It3st!admin-pw"


class Users:
    def __init__(self, daemon: DaemonHandle, home: str) -> None:
        self.daemon = daemon
        self.topo = daemon.topo
        self.home = home  # XDG_CONFIG_HOME of the CLI: the token goes to <home>/pyloxi/token

    def cli(self, *args: str, stdin: str = "", env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
        environ = {k: v for k, v in os.environ.items()
                   if k not in ("PYLOXI_TOKEN", "PYLOXI_TOKEN_FILE")}
        environ.update({"XDG_CONFIG_HOME": self.home, **(env or {})})
        return subprocess.run(
            self.topo.lb.argv([sys.executable, "-m", "pyloxi.entry", *args]),
            input=stdin, capture_output=True, text=True, timeout=60, env=environ)

    @property
    def token_file(self) -> str:
        return os.path.join(self.home, "pyloxi", "token")


@pytest.fixture(scope="module")
def users() -> Iterator[Users]:
    cleanup_stale()
    topo = LbTopology(1)
    try:
        topo.start_http()
        password_file = os.path.join(topo.tmp.name, "admin_password")
        with open(password_file, "w") as f:
            f.write(ADMIN_PW + "\n")
        os.chmod(password_file, 0o600)
        daemon = DaemonHandle(topo)
        daemon.extra_args = ["--userservice", "--admin-password-file", password_file]
        daemon.start()  # waits for `pyloxi version` (/version is open)
        try:
            yield Users(daemon, os.path.join(topo.tmp.name, "cli-config"))
        finally:
            daemon.stop()
    finally:
        topo.close()


def test_login_rule_logout_and_the_token_is_refused(users: Users) -> None:
    create = ("create", "lb", ROUTED_VIP, "--tcp=80:80", f"--endpoints={backend_ip(1)}:1")
    refused = users.cli(*create)
    assert refused.returncode == 1 and "unauthenticated" in refused.stderr, refused.stderr

    login = users.cli("set", "login", "--user", "admin", stdin=ADMIN_PW + "\n")
    assert login.returncode == 0, login.stdout + login.stderr
    assert "Login Success" in login.stdout
    token = Path(users.token_file).read_text().strip()
    assert token and token not in login.stdout + login.stderr
    assert os.stat(users.token_file).st_mode & 0o077 == 0

    made = users.cli(*create)
    assert made.returncode == 0, made.stderr
    assert {b for b, _ in http_answers(users.topo.client, ROUTED_VIP, 3)} == {"be1"}

    logout = users.cli("set", "logout")
    assert logout.returncode == 0, logout.stdout + logout.stderr
    assert not os.path.exists(users.token_file)

    # the revoked token, sent again: 401, and nothing is deleted
    gone = users.cli("delete", "lb", ROUTED_VIP, "--tcp=80", env={"PYLOXI_TOKEN": token})
    assert gone.returncode == 1 and "invalid token" in gone.stderr, gone.stderr
    relogin = users.cli("set", "login", "-u", "admin", stdin=ADMIN_PW + "\n")
    assert relogin.returncode == 0, relogin.stderr
    rules = json.loads(users.cli("get", "lb", "-o", "json").stdout)
    assert [r["serviceArguments"]["externalIP"] for r in rules["lbAttr"]] == [ROUTED_VIP]
    assert users.cli("delete", "lb", ROUTED_VIP, "--tcp=80").returncode == 0
    assert users.cli("set", "logout").returncode == 0

    stored = (Path(users.daemon.state) / "users.json").read_text()
    assert ADMIN_PW not in stored and token not in stored and "scrypt$" in stored
