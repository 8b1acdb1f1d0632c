"""The API exposed to another namespace: HTTPS on 8091 and bearer tokens, the real daemon.

The daemon runs in the LB namespace with `--tls --tls-host 0.0.0.0` and a token file; its plain
listener stays on the namespace's 127.0.0.1. The client namespace plays a host on the network:
without a token it is refused (401, loxilb's body) and no rule appears; with the token, over
HTTPS checked against the test CA, the CLI makes a rule that then carries real traffic.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from pyloxi.testing.lab import LbTopology, cleanup_stale
from pyloxi.testing.lab.topology import LB_CLIENT_IP, ROUTED_VIP, backend_ip
from pyloxi.testing.tls import Certs, have_openssl, make_certs

from .conftest import API_PORT, DaemonHandle
from .traffic import http_answers

pytestmark = pytest.mark.skipif(not have_openssl(), reason="needs openssl")

TLS_PORT = 8091
TOKEN = "itest-token-5f1c9a0e7b2d4c68"
HTTPS = f"https://{LB_CLIENT_IP}:{TLS_PORT}/netlox/v1"

# One request from inside a namespace, with the test CA; prints status and body as JSON.
_REQUEST = (
    "import httpx,ssl,sys,json;"
    "ctx=ssl.create_default_context(cafile=sys.argv[3]);"
    "h={'content-type':'application/json'};"
    "h.update({'authorization':sys.argv[4]} if len(sys.argv)>4 else {});"
    "r=httpx.request(sys.argv[1],sys.argv[2],content=sys.stdin.buffer.read() or None,"
    "headers=h,verify=ctx,timeout=10);"
    "print(json.dumps({'status':r.status_code,'body':r.text}))"
)


class Secured:
    def __init__(self, daemon: DaemonHandle, certs: Certs, token_file: str) -> None:
        self.daemon = daemon
        self.topo = daemon.topo
        self.certs = certs
        self.token_file = token_file

    def from_client(self, method: str, path: str, body: object = None,
                    authorization: str | None = None) -> tuple[int, Any]:
        argv = [sys.executable, "-c", _REQUEST, method, f"{HTTPS}{path}", self.certs.ca]
        if authorization is not None:
            argv.append(authorization)
        proc = subprocess.run(self.topo.client.argv(argv),
                              input=json.dumps(body).encode() if body is not None else b"",
                              capture_output=True, timeout=30)
        assert proc.returncode == 0, proc.stderr.decode()
        out = json.loads(proc.stdout)
        return out["status"], json.loads(out["body"]) if out["body"] else None

    def client_cli(self, *args: str, env: dict[str, str] | None = None,
                   check: bool = True) -> subprocess.CompletedProcess[str]:
        """`pyloxi` in the client namespace, against the HTTPS listener."""
        environ = {**os.environ, **(env or {})}
        proc = subprocess.run(
            self.topo.client.argv([sys.executable, "-m", "pyloxi.entry", "-s", LB_CLIENT_IP,
                                   "-p", str(TLS_PORT), "--protocol", "https", *args]),
            capture_output=True, text=True, timeout=60, env=environ)
        if check and proc.returncode != 0:
            raise AssertionError(f"pyloxi {' '.join(args)}: {proc.stdout}{proc.stderr}")
        return proc

    def rules(self) -> list[dict[str, Any]]:
        """The rule table, asked on the LB's own loopback listener (with the token)."""
        proc = self.daemon.cli("get", "lb", "-o", "json", "--token-file", self.token_file)
        data = json.loads(proc.stdout)
        return list(data.get("lbAttr", data) if isinstance(data, dict) else data)


def rule(vip: str = ROUTED_VIP) -> dict[str, Any]:
    return {"serviceArguments": {"externalIP": vip, "port": 80, "protocol": "tcp"},
            "endpoints": [{"endpointIP": backend_ip(1), "targetPort": 80, "weight": 1}]}


@pytest.fixture(scope="module")
def secured() -> Iterator[Secured]:
    cleanup_stale()
    topo = LbTopology(1)
    try:
        topo.start_http()
        certs = make_certs(os.path.join(topo.tmp.name, "certs"), ips=[LB_CLIENT_IP])
        token_file = os.path.join(topo.tmp.name, "manual_token")
        with open(token_file, "w") as f:
            f.write(f"# test token\n{TOKEN}\n")
        os.chmod(token_file, 0o600)
        daemon = DaemonHandle(topo)
        daemon.extra_args = ["--tls", "--tls-host", "0.0.0.0", "--tls-port", str(TLS_PORT),
                             "--tls-certificate", certs.cert, "--tls-key", certs.key,
                             "--token-file", token_file]
        daemon.start()  # waits for `pyloxi version` on the plain listener (/version is open)
        try:
            yield Secured(daemon, certs, token_file)
        finally:
            daemon.stop()
    finally:
        topo.close()


@pytest.fixture
def api(secured: Secured) -> Iterator[Secured]:
    secured.daemon.cli("delete", "lb", "--all", "--token-file", secured.token_file,
                       check=False)
    yield secured
    secured.daemon.cli("delete", "lb", "--all", "--token-file", secured.token_file,
                       check=False)


@pytest.mark.parametrize("authorization, message", [
    (None, "unauthenticated for invalid credentials"),
    ("Bearer not-the-token", "invalid token"),
    (TOKEN[:-1], "invalid token"),
])
def test_another_namespace_without_the_token_is_refused_and_changes_nothing(
        api: Secured, authorization: str | None, message: str) -> None:
    status, body = api.from_client("POST", "/config/loadbalancer", rule(), authorization)
    assert (status, body) == (401, {"code": 401, "message": message, "result": message})
    assert api.rules() == []
    # nor can it read or delete what exists
    api.client_cli("create", "lb", ROUTED_VIP, "--tcp=80:80", f"--endpoints={backend_ip(1)}:1",
                   "--cacert", api.certs.ca, env={"PYLOXI_TOKEN": TOKEN})
    before = api.rules()
    assert [r["serviceArguments"]["externalIP"] for r in before] == [ROUTED_VIP]
    for method, path in (("GET", "/config/loadbalancer/all"),
                         ("DELETE", "/config/loadbalancer/all"),
                         ("DELETE", f"/config/loadbalancer/externalipaddress/{ROUTED_VIP}"
                                    "/port/80/protocol/tcp")):
        status, body = api.from_client(method, path, authorization=authorization)
        assert (status, body["code"]) == (401, 401)
    assert api.rules() == before


def test_the_token_over_https_makes_a_rule_that_carries_traffic(api: Secured) -> None:
    api.client_cli("create", "lb", ROUTED_VIP, "--tcp=80:80", f"--endpoints={backend_ip(1)}:1",
                   "--cacert", api.certs.ca, "--token-file", api.token_file)
    assert [r["serviceArguments"]["externalIP"] for r in api.rules()] == [ROUTED_VIP]
    assert {b for b, _ in http_answers(api.topo.client, ROUTED_VIP, 3)} == {"be1"}
    # the raw API too, loxicmd's bare-token header
    status, body = api.from_client("GET", "/config/loadbalancer/all", authorization=TOKEN)
    assert status == 200 and len(body["lbAttr"]) == 1
    proc = api.client_cli("delete", "lb", ROUTED_VIP, "--tcp=80", "--cacert", api.certs.ca,
                          env={"PYLOXI_TOKEN_FILE": api.token_file})
    assert proc.returncode == 0
    assert api.rules() == []


def test_the_certificate_is_checked(api: Secured) -> None:
    """Without the CA the CLI refuses the server (no silent fallback to unverified TLS)."""
    proc = api.client_cli("get", "lb", env={"PYLOXI_TOKEN": TOKEN}, check=False)
    assert proc.returncode == 1
    assert "certificate" in proc.stderr.lower(), proc.stderr


def test_the_plain_listener_is_not_reachable_from_another_namespace(api: Secured) -> None:
    proc = api.topo.client.run(["curl", "-sS", "--max-time", "5",
                                f"http://{LB_CLIENT_IP}:{API_PORT}/netlox/v1/version"],
                               check=False)
    assert proc.returncode == 7, proc.stdout + proc.stderr  # 7: connection refused



def test_sighup_reads_the_token_file_again(api: Secured) -> None:
    """SIGHUP reloads the tokens (a changed file is also noticed by itself, at the next
    request); the daemon keeps running and keeps answering."""
    import signal

    from ..waiting import wait_until

    def reloads() -> int:
        with open(api.daemon.log) as f:
            return f.read().count(f"token file {api.token_file}: 1 tokens")

    assert api.daemon.proc is not None
    before = reloads()
    api.daemon.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: reloads() > before, 20, what="the token file read again")
    assert api.daemon.proc.poll() is None
    status, _ = api.from_client("GET", "/config/loadbalancer/all", authorization=TOKEN)
    assert status == 200
