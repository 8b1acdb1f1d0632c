"""The BGP speaker against a real gobgpd 3.10 on loopback (no root: gobgpd's API on a free
127.0.0.1 port, BGP started with listen_port -1, neighbours that are never reached), and the
REST routes and CLI verbs in front of it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from tests.waiting import wait_until
from typer.testing import CliRunner

from pyloxi.api import create_app
from pyloxi.api.bgp import bgp_router
from pyloxi.bgp import BgpGlobal, BgpNeighbor, BgpSpeaker, BgpUnavailable, Timers
from pyloxi.bgp.gobgp import GobgpClient
from pyloxi.cli import client as cli_client
from pyloxi.cli.main import app as cli
from pyloxi.model.errors import InvalidInput

pytestmark = pytest.mark.skipif(shutil.which("gobgpd") is None,
                                reason="needs gobgpd (scripts/install-deps)")

BGP = "/netlox/v1/config/bgp"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Rig:
    def __init__(self, tmp: str) -> None:
        self.vips: set[str] = set()
        self.instances: dict[str, str] = {}  # VIP -> HA instance (default llb-inst0)
        self.extra: dict[str, tuple[int, int]] = {}
        self.api = f"127.0.0.1:{free_port()}"
        self.speaker = BgpSpeaker(self.api, timers=Timers(3, 1, 1), vips=self.announce,
                                  extra_paths=lambda: dict(self.extra),
                                  log_path=os.path.join(tmp, "gobgpd.log"))
        self.speaker.start()
        wait_until(lambda: self.speaker.up, 20, what="gobgpd up")
        self.gobgp = GobgpClient(self.api)  # the test's own view of gobgpd

    def announce(self) -> list[tuple[str, str]]:
        return [(v, self.instances.get(v, "llb-inst0")) for v in self.vips]

    def settle(self) -> None:
        """One supervision round now (the thread would run it within half a second)."""
        self.speaker.round()

    def close(self) -> None:
        self.gobgp.close()
        self.speaker.stop()


@pytest.fixture
def rig(tmp_path) -> Iterator[Rig]:
    r = Rig(str(tmp_path))
    try:
        yield r
    finally:
        r.close()


def test_vips_are_announced_with_the_ha_attributes_and_withdrawn(rig: Rig):
    rig.speaker.set_global(BgpGlobal(65001, "10.0.0.1"))
    assert rig.gobgp.get_global() == (65001, "10.0.0.1")
    rig.vips |= {"10.9.9.9", "fd00::9"}
    rig.speaker.changed()
    rig.settle()
    assert rig.gobgp.list_paths() == {"10.9.9.9/32": (0, 0)}  # no HA state: 0 / 0
    assert rig.gobgp.list_paths(v6=True) == {"fd00::9/128": (0, 0)}
    rig.speaker.set_ha_state("llb-inst0", "MASTER")
    rig.settle()
    assert rig.gobgp.list_paths() == {"10.9.9.9/32": (5000, 10)}
    rig.speaker.set_ha_state("llb-inst0", "BACKUP")
    rig.settle()
    assert rig.gobgp.list_paths() == {"10.9.9.9/32": (100, 20)}
    assert rig.gobgp.list_paths(v6=True) == {"fd00::9/128": (100, 20)}
    rig.speaker.set_ha_state("other", "MASTER")  # not the rules' instance
    rig.speaker.set_ha_state("llb-inst0", "NOT_DEFINED")
    rig.settle()
    assert rig.gobgp.list_paths() == {"10.9.9.9/32": (0, 0)}
    rig.vips.clear()
    rig.settle()
    assert rig.gobgp.list_paths() == {} and rig.gobgp.list_paths(v6=True) == {}


def test_each_vip_carries_the_attributes_of_its_rules_instance(rig: Rig):
    rig.speaker.set_global(BgpGlobal(65001, "10.0.0.1"))
    rig.vips |= {"10.9.9.1", "10.9.9.2"}
    rig.instances["10.9.9.2"] = "inst1"
    rig.speaker.set_ha_state("llb-inst0", "MASTER")
    rig.speaker.set_ha_state("inst1", "BACKUP")
    rig.settle()
    assert rig.gobgp.list_paths() == {"10.9.9.1/32": (5000, 10), "10.9.9.2/32": (100, 20)}
    rig.speaker.set_ha_state("inst1", "MASTER")
    rig.speaker.set_ha_state("llb-inst0", "BACKUP")
    rig.settle()
    assert rig.gobgp.list_paths() == {"10.9.9.1/32": (100, 20), "10.9.9.2/32": (5000, 10)}


def test_extra_paths_are_announced_with_their_own_attributes(rig: Rig):
    """The cluster's instance IPs: this node's as MASTER, its peers' as BACKUP (the daemon
    decides); diffed like the VIPs; a VIP that is also an extra path is announced as a VIP."""
    rig.speaker.set_global(BgpGlobal(65001, "10.0.0.1"))
    rig.vips.add("10.9.9.9")
    rig.extra.update({"10.90.0.1": (5000, 10), "10.90.0.2": (100, 20), "fd00:90::2": (100, 20),
                      "10.9.9.9": (100, 20)})
    rig.settle()
    assert rig.gobgp.list_paths() == {"10.9.9.9/32": (0, 0), "10.90.0.1/32": (5000, 10),
                                      "10.90.0.2/32": (100, 20)}
    assert rig.gobgp.list_paths(v6=True) == {"fd00:90::2/128": (100, 20)}
    rig.extra["10.90.0.2"] = (5000, 10)
    del rig.extra["fd00:90::2"]
    rig.speaker.changed()
    rig.settle()
    assert rig.gobgp.list_paths() == {"10.9.9.9/32": (0, 0), "10.90.0.1/32": (5000, 10),
                                      "10.90.0.2/32": (5000, 10)}
    assert rig.gobgp.list_paths(v6=True) == {}


def test_nothing_is_announced_before_the_global_config(rig: Rig):
    rig.vips.add("10.9.9.9")
    rig.settle()
    assert rig.gobgp.get_global()[0] == 0 and rig.speaker.announced() == {}
    with pytest.raises(InvalidInput, match="no global config"):
        rig.speaker.add_neighbor(BgpNeighbor("10.0.0.2", 65000))
    rig.speaker.set_global(BgpGlobal(65001, "10.0.0.1"))
    rig.settle()
    assert rig.gobgp.list_paths() == {"10.9.9.9/32": (0, 0)}


def test_bad_input_changes_nothing(rig: Rig):
    rig.speaker.set_global(BgpGlobal(65001, "10.0.0.1"))
    rig.speaker.add_neighbor(BgpNeighbor("10.0.0.2", 65000))
    for bad, why in ((BgpNeighbor("10.0.0.300", 65000), "not an IP address"),
                     (BgpNeighbor("10.0.0.3", 0), "remoteAs 0"),
                     (BgpNeighbor("10.0.0.3", 65000, remote_port=70000), "remotePort")):
        with pytest.raises(InvalidInput, match=why):
            rig.speaker.add_neighbor(bad)
    with pytest.raises(InvalidInput, match="routerId"):
        rig.speaker.set_global(BgpGlobal(65002, "not-an-ip"))
    assert [p.address for p in rig.gobgp.list_peers()] == ["10.0.0.2"]
    assert rig.gobgp.get_global() == (65001, "10.0.0.1")


def test_killed_gobgpd_is_restarted_with_global_neighbours_and_paths(rig: Rig):
    rig.speaker.set_global(BgpGlobal(65001, "10.0.0.1"))
    rig.speaker.add_neighbor(BgpNeighbor("10.0.0.2", 65000))
    rig.speaker.set_ha_state("llb-inst0", "MASTER")
    rig.vips.add("10.9.9.9")
    rig.settle()
    old = rig.speaker.status()["pid"]
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: rig.speaker.restarts == 1 and rig.speaker.up, 30,
               what="gobgpd restarted")

    def restored() -> bool:
        try:
            return rig.gobgp.list_paths() == {"10.9.9.9/32": (5000, 10)}
        except Exception:
            return False

    wait_until(restored, 30, what="paths re-announced")
    assert rig.speaker.status()["pid"] != old
    assert rig.gobgp.get_global() == (65001, "10.0.0.1")
    assert [(p.address, p.asn) for p in rig.gobgp.list_peers()] == [("10.0.0.2", 65000)]


def test_gobgpd_listens_on_loopback_only_and_never_on_179(rig: Rig):
    rig.speaker.set_global(BgpGlobal(65001, "10.0.0.1"))
    pid = rig.speaker.status()["pid"]
    inodes = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and f"socket:[{cols[9]}]" in inodes:  # LISTEN, gobgpd's
                    ports.append(cols[1])
    assert ports, "gobgpd's API socket not found"
    for local in ports:
        addr, port = local.split(":")
        assert addr == "0100007F" and int(port, 16) != 179, local


def test_attached_to_no_gobgpd_answers_503():
    speaker = BgpSpeaker(f"127.0.0.1:{free_port()}", managed=False)
    speaker.start()
    try:
        with pytest.raises(BgpUnavailable) as err:
            speaker.set_global(BgpGlobal(65001, "10.0.0.1"))
        assert err.value.code == 503
    finally:
        speaker.stop()


# -- REST -------------------------------------------------------------------------------------

@pytest.fixture
def http(rig: Rig) -> Iterator[TestClient]:
    app = create_app(object(), version="0.0.0", extra_routers=[bgp_router(rig.speaker)])
    with TestClient(app) as client:
        yield client


def test_rest_global_and_neighbours(rig: Rig, http: TestClient):
    r = http.post(f"{BGP}/global", json={"routerId": "10.0.0.1", "localAs": 65001})
    assert (r.status_code, r.json()) == (200, {"result": "Success"})
    assert rig.gobgp.get_global() == (65001, "10.0.0.1")
    r = http.post(f"{BGP}/neigh", json={"IPADDRESS": "10.0.0.2", "remoteAs": 65000,
                                        "remotePort": 1179})
    assert r.status_code == 200, r.text
    [entry] = http.get(f"{BGP}/neigh/all").json()["bgpNeiAttr"]
    assert (entry["ipAddress"], entry["remoteAs"]) == ("10.0.0.2", 65000)
    assert entry["state"] in ("idle", "active", "connect")  # nobody answers there
    r = http.delete(f"{BGP}/neigh/10.0.0.2", params={"remoteAs": 65009})
    assert r.status_code == 404 and "not found" in r.json()["message"]
    r = http.delete(f"{BGP}/neigh/10.0.0.2", params={"remoteAs": 65000})
    assert r.status_code == 200 and rig.gobgp.list_peers() == []
    assert http.get(f"{BGP}/neigh/all").json() == {"bgpNeiAttr": []}


@pytest.mark.parametrize(("path", "body", "why"), [
    ("global", {"routerId": "10.0.0.1"}, "localAs: field required"),
    ("global", {"routerId": "10.0.0.1", "localAs": 0}, "localAs"),
    ("global", {"routerId": "nope", "localAs": 65001}, "routerId"),
    ("neigh", {"ipAddress": "10.0.0.2", "remoteAs": "65000"}, "remoteAs"),
    ("neigh", {"ipAddress": "10.0.0.2.5", "remoteAs": 65000}, "ipAddress"),
    ("neigh", {"ipAddress": "10.0.0.2", "remoteAs": 65000, "remotePort": 70000},
     "remotePort"),
])
def test_rest_bad_input_is_400_and_changes_nothing(rig: Rig, http: TestClient, path, body, why):
    rig.speaker.set_global(BgpGlobal(65001, "10.0.0.1"))
    r = http.post(f"{BGP}/{path}", json=body)
    assert r.status_code == 400 and why in r.json()["message"], r.text
    assert r.json()["code"] == 400
    assert rig.gobgp.get_global() == (65001, "10.0.0.1") and rig.gobgp.list_peers() == []


def test_attached_gobgpd_dead_is_503_then_state_is_reapplied(tmp_path):
    """--bgp-attach: a gobgpd the daemon did not start. Dead: the API answers 503 and changes
    nothing; back (empty): the speaker gives it the global config, neighbours and paths."""
    api = f"127.0.0.1:{free_port()}"

    def gobgpd() -> subprocess.Popen[bytes]:
        return subprocess.Popen(["gobgpd", f"--api-hosts={api}", "--pprof-disable"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    proc = gobgpd()
    speaker = BgpSpeaker(api, managed=False, vips=lambda: [("10.9.9.9", "llb-inst0")])
    speaker.start()
    app = create_app(object(), version="0.0.0", extra_routers=[bgp_router(speaker)])
    view = GobgpClient(api)
    try:
        wait_until(lambda: speaker.up, 20, what="attached")
        with TestClient(app) as http:
            r = http.post(f"{BGP}/global", json={"routerId": "10.0.0.1", "localAs": 65001})
            assert r.status_code == 200, r.text
            proc.kill()
            proc.wait()
            r = http.post(f"{BGP}/neigh", json={"ipAddress": "10.0.0.2", "remoteAs": 65000})
            assert r.status_code == 503 and "gobgpd" in r.json()["message"], r.text
            assert http.get(f"{BGP}/neigh/all").status_code == 503
            proc = gobgpd()

            def reapplied() -> bool:
                try:
                    return view.list_paths() == {"10.9.9.9/32": (0, 0)}
                except Exception:
                    return False

            wait_until(reapplied, 30, what="state re-applied to the new gobgpd")
            assert view.get_global() == (65001, "10.0.0.1")
            assert view.list_peers() == []  # the refused neighbour was not kept
    finally:
        view.close()
        speaker.stop()
        proc.kill()
        proc.wait()


def test_rest_without_bgp_is_503():
    app = create_app(object(), version="0.0.0", extra_routers=[bgp_router(None)])
    with TestClient(app) as http:
        r = http.get(f"{BGP}/neigh/all")
        assert r.status_code == 503 and "--bgp" in r.json()["message"]


# -- CLI (loxicmd's bgpneighbor verbs) ---------------------------------------------------------

def test_cli_bgpneighbor_create_get_delete(rig: Rig, http: TestClient, monkeypatch):
    monkeypatch.setattr(cli_client, "transport_override", http._transport)
    monkeypatch.delenv("PYLOXI_API", raising=False)
    runner = CliRunner()
    rig.speaker.set_global(BgpGlobal(65001, "10.0.0.1"))
    r = runner.invoke(cli, ["create", "bgpneighbor", "10.0.0.2", "65000", "--remotePort=1179",
                            "--setMultiHtop"])
    assert r.exit_code == 0 and "created bgpneighbor 10.0.0.2" in r.output, r.output
    [peer] = rig.gobgp.list_peers()
    assert (peer.address, peer.asn) == ("10.0.0.2", 65000)
    r = runner.invoke(cli, ["get", "bgpneighbor"])
    assert r.exit_code == 0 and "10.0.0.2" in r.output and "65000" in r.output, r.output
    r = runner.invoke(cli, ["get", "bgpnei", "-o", "json"])
    assert json.loads(r.output)["bgpNeiAttr"][0]["ipAddress"] == "10.0.0.2"
    r = runner.invoke(cli, ["create", "bgpneighbor", "10.0.0.3", "0"])  # refused locally
    assert r.exit_code == 2 and "remote AS" in r.output, r.output
    r = runner.invoke(cli, ["delete", "bgpneighbor", "10.0.0.2", "--remoteAs=65000"])
    assert r.exit_code == 0, r.output
    assert rig.gobgp.list_peers() == []
    r = runner.invoke(cli, ["delete", "bgpneighbor", "10.0.0.2"])
    assert r.exit_code == 1 and "not found" in r.output, r.output


def test_accepted_config_survives_a_restart_of_the_speaker(tmp_path):
    """What the API acknowledged is on disk before it answers; a new speaker (a restarted
    daemon) over the same file gives it to its fresh gobgpd."""
    path = tmp_path / "bgp.json"
    api = f"127.0.0.1:{free_port()}"

    def speaker() -> BgpSpeaker:
        s = BgpSpeaker(api, timers=Timers(3, 1, 1), config_path=path,
                       log_path=str(tmp_path / "gobgpd.log"))
        s.start()
        wait_until(lambda: s.up, 20, what="gobgpd up")
        return s

    first = speaker()
    try:
        first.set_global(BgpGlobal(65001, "10.0.0.1"))
        first.add_neighbor(BgpNeighbor("10.0.0.2", 65000))
        first.add_neighbor(BgpNeighbor("10.0.0.3", 65003))
        first.delete_neighbor("10.0.0.3")
        with pytest.raises(InvalidInput):
            first.add_neighbor(BgpNeighbor("10.0.0.400", 65000))
    finally:
        first.stop()  # its gobgpd goes with it: the next one starts empty
    assert json.loads(path.read_text())["neighbors"] == [
        {"address": "10.0.0.2", "asn": 65000, "multihop": False, "remote_port": 179}]
    second = speaker()
    gobgp = GobgpClient(api)
    try:
        def restored() -> bool:
            try:
                return gobgp.get_global() == (65001, "10.0.0.1") and \
                    [(p.address, p.asn) for p in gobgp.list_peers()] == [("10.0.0.2", 65000)]
            except Exception:
                return False
        wait_until(restored, 30, what="config given back to the new gobgpd")
    finally:
        gobgp.close()
        second.stop()


def test_unreadable_or_invalid_config_file_is_skipped_not_fatal(tmp_path):
    path = tmp_path / "bgp.json"
    path.write_text("{not json")
    assert BgpSpeaker("127.0.0.1:1", managed=False, config_path=path).status() is not None
    path.write_text(json.dumps({"global": {"asn": 0, "router_id": "10.0.0.1"},
                                "neighbors": [{"address": "bad", "asn": 1},
                                              {"address": "10.0.0.9", "asn": 7}]}))
    s = BgpSpeaker("127.0.0.1:1", managed=False, config_path=path)
    assert s._global is None
    assert list(s._neighbors) == ["10.0.0.9"]
