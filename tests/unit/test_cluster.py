"""HA state (cistate): ClusterState, the REST routes and `pyloxi get ha`, as loxilb answers them,
and the VIPs of an instance following its state through StateSync."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from scapy.layers.l2 import ARP, Ether
from tests.unit.test_statesync import FakeProbes, FakeVips, Table
from typer.testing import CliRunner

from pyloxi.api import create_app
from pyloxi.api.cistate import cistate_router
from pyloxi.cli import client as cli_client
from pyloxi.cli.main import app as cli
from pyloxi.cluster import ClusterConfig, ClusterState, Instance
from pyloxi.daemon import cluster_config, parse_args
from pyloxi.host.arp import gratuitous_arp
from pyloxi.model.cluster import instance_of
from pyloxi.model.errors import InvalidInput
from pyloxi.model.lb import LoadBalancerEntry
from pyloxi.statesync import StateSync

CISTATE = "/netlox/v1/config/cistate"


# --- the state object -------------------------------------------------------------------

def test_a_node_starts_with_the_default_instance_not_defined() -> None:
    """loxilb's CIInit: llb-inst0, NOT_DEFINED, VIP 0.0.0.0 - and it serves its rules."""
    cs = ClusterState()
    assert cs.instances() == [Instance("llb-inst0", "NOT_DEFINED", "0.0.0.0")]
    assert cs.role_of("web") == "NOT_DEFINED"
    assert cs.serves("web") and cs.serves("web:other-inst")


@pytest.mark.parametrize(("name", "inst"), [
    ("web", "llb-inst0"), ("web:inst1", "inst1"), ("a:b:c", "b"), ("web:", ""), ("", "llb-inst0"),
])
def test_rule_instance_is_the_name_suffix_as_loxilb(name: str, inst: str) -> None:
    assert instance_of(name) == inst


def test_states_and_who_serves() -> None:
    cs = ClusterState()
    seen: list[tuple[str, str, str]] = []
    cs.subscribe(lambda before, after: seen.append((after.name, before.state, after.state)))
    assert cs.set_state("llb-inst0", "BACKUP", "10.0.0.100")
    assert not cs.serves("web") and cs.role_of("web") == "BACKUP"
    assert cs.serves("web:inst1")  # another instance, still NOT_DEFINED
    assert cs.set_state("inst1", "MASTER")  # created on the fly
    assert cs.role_of("web:inst1") == "MASTER" and cs.serves("web:inst1")
    for state in ("FAULT", "STOP"):
        cs.set_state("inst1", state)
        assert not cs.serves("web:inst1")
    assert seen == [("llb-inst0", "NOT_DEFINED", "BACKUP"), ("inst1", "NOT_DEFINED", "MASTER"),
                    ("inst1", "MASTER", "FAULT"), ("inst1", "FAULT", "STOP")]


def test_same_state_again_changes_nothing_not_even_the_vip() -> None:
    """loxilb's CIStateUpdate returns early when the state string is unchanged."""
    cs = ClusterState()
    calls: list[Any] = []
    cs.subscribe(lambda b, a: calls.append(a))
    assert cs.set_state("llb-inst0", "MASTER", "10.0.0.1")
    assert not cs.set_state("llb-inst0", "MASTER", "10.0.0.2")
    assert cs.instance("llb-inst0").vip == "10.0.0.1" and len(calls) == 1


@pytest.mark.parametrize(("state", "vip"), [
    ("master", "0.0.0.0"), ("PRIMARY", ""), ("", ""), ("MASTER", "10.0.0.300"),
    ("MASTER", "not-an-ip"), ("MASTER", "10.0.0.0/24"),
])
def test_bad_input_changes_nothing(state: str, vip: str) -> None:
    cs = ClusterState()
    calls: list[Any] = []
    cs.subscribe(lambda b, a: calls.append(a))
    with pytest.raises(InvalidInput):
        cs.set_state("inst9", state, vip)
    assert cs.instances() == [Instance("llb-inst0")] and calls == []


def test_a_failing_listener_does_not_stop_the_others() -> None:
    cs = ClusterState()
    got: list[str] = []

    def bad(_b: Instance, _a: Instance) -> None:
        raise RuntimeError("boom")

    cs.subscribe(bad)
    unsubscribe = cs.subscribe(lambda b, a: got.append(a.state))
    cs.set_state("llb-inst0", "MASTER")
    unsubscribe()
    cs.set_state("llb-inst0", "BACKUP")
    assert got == ["MASTER"]


def test_state_survives_a_restart_and_a_corrupt_file_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "cistate.json"
    ClusterState(path=path).set_state("llb-inst0", "BACKUP", "fd00::0:1")
    again = ClusterState(path=path)
    assert again.instance("llb-inst0") == Instance("llb-inst0", "BACKUP", "fd00::1")
    assert not again.serves("web")
    path.write_text("{not json")
    assert ClusterState(path=path).instances() == [Instance("llb-inst0")]
    path.write_text(json.dumps({"i1": {"state": "BOGUS", "vip": ""}, "i2": [],
                                "i3": {"state": "MASTER", "vip": "1.2.3.4"}}))
    assert [i.name for i in ClusterState(path=path).instances()] == ["i3", "llb-inst0"]


def test_daemon_cluster_flags() -> None:
    args = parse_args(["--cluster", "10.0.0.2,10.0.0.3", "--self", "1",
                       "--clusterinterface", "eth1", "--bgp"])
    assert cluster_config(args) == ClusterConfig(("10.0.0.2", "10.0.0.3"), 1, "eth1", True)
    assert cluster_config(parse_args([])) == ClusterConfig()
    with pytest.raises(ValueError, match="not an IP"):
        cluster_config(parse_args(["--cluster", "peer1"]))


# --- REST and CLI ---------------------------------------------------------------------

@pytest.fixture
def rig() -> Any:
    cs = ClusterState()
    app = create_app(object(), version="0.0.0", extra_routers=[cistate_router(cs)])
    with TestClient(app) as http:
        yield cs, http


def test_post_and_get_as_loxilb(rig: Any) -> None:
    cs, http = rig
    r = http.get(f"{CISTATE}/all")
    assert r.status_code == 200
    assert r.json() == {"Attr": [{"instance": "llb-inst0", "state": "NOT_DEFINED",
                                  "vip": "0.0.0.0", "sync": 0}]}
    r = http.post(CISTATE, json={"instance": "llb-inst0", "state": "MASTER", "vip": "0.0.0.0"})
    assert (r.status_code, r.json()) == (200, {"result": "Success"})
    r = http.post(CISTATE, json={"Instance": "inst1", "STATE": "BACKUP", "vip": "10.0.0.100"})
    assert r.status_code == 200
    answer = http.get(f"{CISTATE}/all").json()["Attr"]
    rows = {e["instance"]: (e["state"], e["vip"]) for e in answer}
    assert rows == {"llb-inst0": ("MASTER", "0.0.0.0"), "inst1": ("BACKUP", "10.0.0.100")}
    assert cs.role_of("svc:inst1") == "BACKUP"


@pytest.mark.parametrize(("body", "words"), [
    ({"instance": "llb-inst0", "state": "PRIMARY", "vip": "0.0.0.0"}, "invalid cluster-state"),
    ({"instance": "llb-inst0", "vip": "0.0.0.0"}, "invalid cluster-state"),
    ({"instance": "llb-inst0", "state": "MASTER", "vip": "300.1.1.1"}, "address malformed"),
    ({"instance": "llb-inst0", "state": 1, "vip": "0.0.0.0"}, "invalid state"),
])
def test_bad_post_is_400_and_changes_nothing(rig: Any, body: dict[str, Any], words: str) -> None:
    cs, http = rig
    r = http.post(CISTATE, json=body)
    assert r.status_code == 400
    assert r.json()["code"] == 400 and words in r.json()["result"]
    assert cs.instances() == [Instance("llb-inst0")]
    assert http.post(CISTATE, content=b"[]",
                     headers={"content-type": "application/json"}).status_code == 400


def test_cli_get_ha(rig: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    cs, http = rig
    monkeypatch.setattr(cli_client, "transport_override", http._transport)
    monkeypatch.delenv("PYLOXI_API", raising=False)
    cs.set_state("llb-inst0", "MASTER", "10.0.0.100")
    runner = CliRunner()
    r = runner.invoke(cli, ["get", "ha"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].split() == ["Instance", "HA", "Status"]
    assert lines[1].split() == ["llb-inst0", "MASTER"]
    r = runner.invoke(cli, ["get", "ha", "-o", "wide"])
    assert r.output.splitlines()[1].split() == ["llb-inst0", "MASTER", "10.0.0.100"]
    r = runner.invoke(cli, ["get", "ha", "-o", "json"])
    assert json.loads(r.output)["Attr"][0]["state"] == "MASTER"


# --- VIPs follow the HA state -------------------------------------------------------------

def named(name: str, vip: str, port: int = 80) -> LoadBalancerEntry:
    return LoadBalancerEntry.model_validate({
        "serviceArguments": {"externalIP": vip, "port": port, "protocol": "tcp", "name": name},
        "endpoints": [{"endpointIP": "10.0.11.2", "targetPort": 8080, "weight": 1}],
    })


def test_vips_follow_master_and_backup() -> None:
    cs, table, vips = ClusterState(), Table(), FakeVips()
    sync = StateSync(vips, rules=table, probes=FakeProbes(),
                     serves=lambda r: cs.serves(r.service_arguments.name))
    cs.subscribe(lambda _b, _a: sync.ha_changed())
    table.rules[:] = [named("a", "20.0.0.1"), named("b:inst1", "20.0.0.2"),
                      named("c:inst1", "20.0.0.3"), named("d", "20.0.0.3", port=443)]
    sync.changed()
    sync.flush()
    assert vips.local == {"20.0.0.1", "20.0.0.2", "20.0.0.3"}  # NOT_DEFINED serves
    cs.set_state("inst1", "BACKUP")
    sync.flush()
    assert vips.local == {"20.0.0.1", "20.0.0.3"}  # 20.0.0.3 is also llb-inst0's (rule d)
    cs.set_state("llb-inst0", "BACKUP")
    sync.flush()
    assert vips.local == set()
    table.rules.append(named("e:inst1", "20.0.0.4"))  # a rule added while BACKUP stays out
    sync.changed()
    sync.flush()
    assert vips.local == set()
    cs.set_state("inst1", "MASTER")
    sync.flush()
    assert vips.local == {"20.0.0.2", "20.0.0.3", "20.0.0.4"}
    table.rules[:] = [r for r in table.rules if r.service_arguments.name != "e:inst1"]
    sync.changed()
    sync.flush()
    assert vips.local == {"20.0.0.2", "20.0.0.3"}


def test_gratuitous_arp_frame() -> None:
    mac = bytes.fromhex("020000000001")
    pkt = Ether(gratuitous_arp("20.0.0.1", mac))
    assert pkt.dst == "ff:ff:ff:ff:ff:ff" and pkt.src == "02:00:00:00:00:01"
    arp = pkt[ARP]
    assert (arp.op, arp.psrc, arp.pdst, arp.hwsrc) == (1, "20.0.0.1", "20.0.0.1",
                                                       "02:00:00:00:00:01")


# --- the shipped keepalived notify script -----------------------------------------------

NOTIFY = Path(__file__).resolve().parents[2] / "deploy" / "keepalived" / "notify.sh"


@pytest.mark.parametrize(("args", "url", "body"), [
    (["INSTANCE", "vi_1", "MASTER", "150"], "http://127.0.0.1:11111",
     {"instance": "llb-inst0", "state": "MASTER", "vip": "0.0.0.0"}),
    (["inst1", "INSTANCE", "vi_1", "BACKUP", "100"], "http://127.0.0.1:11111",
     {"instance": "inst1", "state": "BACKUP", "vip": "0.0.0.0"}),
    (["inst2", "http://10.0.0.1:8080", "GROUP", "g", "FAULT", "0"], "http://10.0.0.1:8080",
     {"instance": "inst2", "state": "FAULT", "vip": "0.0.0.0"}),
    (["inst3", "http://10.0.0.1:8080", "10.9.9.9", "INSTANCE", "v", "MASTER", "100"],
     "http://10.0.0.1:8080", {"instance": "inst3", "state": "MASTER", "vip": "10.9.9.9"}),
])
def test_notify_script_posts_the_state(tmp_path: Path, args: list[str], url: str,
                                       body: dict[str, str]) -> None:
    """keepalived appends TYPE NAME STATE PRIORITY to the configured command line."""
    log = tmp_path / "curl.log"
    fake = tmp_path / "curl"
    fake.write_text(f'#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done > {log}\n')
    fake.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}
    proc = subprocess.run(["sh", str(NOTIFY), *args], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    sent = log.read_text().splitlines()
    assert sent[-1] == f"{url}/netlox/v1/config/cistate"
    assert json.loads(sent[sent.index("-d") + 1]) == body


@pytest.mark.parametrize("token_file", [None, "missing", "# the API token\n\n  tok-123  \n"])
def test_notify_script_sends_the_token_on_stdin(tmp_path: Path, token_file: str | None) -> None:
    """With a token file the Authorization header reaches curl through --config on stdin
    (never in argv); without one nothing is sent there."""
    log, stdin = tmp_path / "curl.log", tmp_path / "curl.stdin"
    fake = tmp_path / "curl"
    fake.write_text(f'#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done > {log}\n'
                    f"cat > {stdin}\n")
    fake.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin",
           "PYLOXI_TOKEN_FILE": str(tmp_path / "tok")}
    if token_file not in (None, "missing"):
        (tmp_path / "tok").write_text(token_file)
    if token_file is None:
        env.pop("PYLOXI_TOKEN_FILE")  # the default, /etc/loxilb/manual_token: not here
    proc = subprocess.run(["sh", str(NOTIFY), "INSTANCE", "vi_1", "MASTER", "150"], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    argv = log.read_text().splitlines()
    assert argv[:2] == ["--config", "-"]
    assert not any("tok-123" in a or "Authorization" in a for a in argv)
    sent = stdin.read_text()
    if token_file not in (None, "missing"):
        assert sent == 'header = "Authorization: Bearer tok-123"\n'
    elif not Path("/etc/loxilb/manual_token").exists():
        assert sent == ""


def test_notify_script_refuses_what_it_cannot_post(tmp_path: Path) -> None:
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}  # no curl is called: none is found either
    for args in (["INSTANCE", "vi_1", "UNKNOWN", "100"], ["MASTER"]):
        proc = subprocess.run(["sh", str(NOTIFY), *args], env=env, capture_output=True)
        assert proc.returncode == 2
