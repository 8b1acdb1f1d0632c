"""Built-in BFD (pyloxi.cluster.bfd): RFC 5880 packet codec, the session state machine and
loxilb's HA election with a fake clock, and the API/persistence of the sessions."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from pyloxi.api.app import create_app
from pyloxi.api.bfd import bfd_router
from pyloxi.cli import client as cli_client
from pyloxi.cli.main import app as cli
from pyloxi.cluster.bfd import (
    Bfd,
    Packet,
    Session,
    SessionConfig,
    decode,
    discriminator,
    parse_ka,
)
from pyloxi.daemon import parse_args
from pyloxi.model.bfd import ADMIN_DOWN, DOWN, INIT, UP, BfdEntry
from pyloxi.model.cluster import BACKUP, MASTER

A, B = "10.9.0.1", "10.9.0.2"


# --- packets ------------------------------------------------------------------------------

def test_packet_round_trip_and_rfc5880_layout() -> None:
    p = Packet(state=UP, my_disc=0x0A090001, your_disc=0x0A090002, multiplier=3,
               desired_min_tx=200_000, required_min_rx=300_000, diag=1, poll=True)
    raw = p.encode()
    assert len(raw) == 24
    assert raw[0] == (1 << 5) | 1            # version 1, diag 1
    assert raw[1] == (UP << 6) | 0x20        # state Up, P bit
    assert raw[2:4] == bytes([3, 24])        # detect mult, length
    assert raw[4:8] == bytes([10, 9, 0, 1])
    assert int.from_bytes(raw[12:16], "big") == 200_000
    assert decode(raw) == p


@pytest.mark.parametrize(("mutate", "words"), [
    (lambda b: b[:20], "short"),
    (lambda b: bytes([2 << 5]) + b[1:], "version"),
    (lambda b: b[:2] + bytes([0]) + b[3:], "multiplier 0"),
    (lambda b: b[:1] + bytes([b[1] | 1]) + b[2:], "multipoint"),
    (lambda b: b[:1] + bytes([b[1] | 4]) + b[2:], "length field"),
    (lambda b: b[:3] + bytes([30]) + b[4:], "length field"),
    (lambda b: b[:4] + bytes(4) + b[8:], "my discriminator 0"),
])
def test_invalid_packets_are_refused(mutate: Any, words: str) -> None:
    good = Packet(state=DOWN, my_disc=1).encode()
    with pytest.raises(ValueError, match=words):
        decode(mutate(good))


# --- state machine: two sessions talking, a fake clock ---------------------------------------

def pair(interval: int = 200_000) -> tuple[Session, Session]:
    return Session(B, A, interval_us=interval), Session(A, B, interval_us=interval)


def exchange(a: Session, b: Session, now: float) -> list[str | None]:
    """a sends, b receives, then b sends, a receives: the HA states decided."""
    got_b = b.receive(decode(a.packet().encode()), now)
    got_a = a.receive(decode(b.packet().encode()), now)
    return [got_a, got_b]


def test_three_way_handshake_elects_the_higher_address() -> None:
    a, b = pair()
    assert (a.state, b.state) == (DOWN, DOWN)
    b.receive(a.packet(), 0.0)             # Down -> b Init
    assert b.state == INIT
    role_a = a.receive(b.packet(), 0.0)   # a Down hears Init -> Up
    assert a.state == UP and role_a == BACKUP   # 10.9.0.1 < 10.9.0.2
    role_b = b.receive(a.packet(), 0.0)   # b Init hears Up -> Up
    assert b.state == UP and role_b == MASTER
    assert a.remote_disc == discriminator(B) and b.remote_disc == discriminator(A)
    # nothing changes while both keep talking
    assert exchange(a, b, 0.1) == [None, None]


def test_detection_time_is_remote_multiplier_times_agreed_interval() -> None:
    a, b = pair()
    b.interval_us = 500_000                       # b sends slower than a asks
    b.multiplier = 4
    b.receive(a.packet(), 0.0)
    a.receive(b.packet(), 0.0)
    b.receive(a.packet(), 0.0)
    a.receive(b.packet(), 10.0)
    assert a.detection_time_s() == pytest.approx(4 * 0.5)
    assert a.expire(11.9) is None and a.state == UP
    assert a.expire(12.01) == MASTER                # the peer is lost: this node takes over
    assert a.state == DOWN and a.diag == 1
    # a's discriminator is now the peer's + 1: it stays MASTER when the peer returns
    assert a.local_disc == discriminator(B) + 1
    assert a.packet().your_disc == 0          # RFC 5880 §6.8.1: forgotten after the silence


def test_peer_returning_after_a_takeover_becomes_backup() -> None:
    a, b = pair()
    exchange(a, b, 0.0)
    exchange(a, b, 0.0)
    assert (a.role, b.role) == (BACKUP, MASTER)
    assert a.expire(5.0) == MASTER
    b2 = Session(A, B)                        # b restarts with a fresh session
    roles = []
    for t in (6.0, 6.1, 6.2):
        roles += exchange(a, b2, t)
    assert (a.state, b2.state) == (UP, UP)
    assert (a.role, b2.role) == (MASTER, BACKUP)
    # a (already MASTER) confirms MASTER on Up; the returning b never claims MASTER
    assert roles == [MASTER, None, None, BACKUP, None, None]


def test_both_sides_losing_each_other_settle_on_one_master() -> None:
    a, b = pair()
    exchange(a, b, 0.0)
    exchange(a, b, 0.0)
    assert (a.expire(5.0), b.expire(5.0)) == (MASTER, MASTER)   # the link was cut
    for t in (6.0, 6.1, 6.2):
        exchange(a, b, t)                                        # the link is back
    assert (a.state, b.state) == (UP, UP)
    assert sorted((a.role, b.role)) == [BACKUP, MASTER]
    # each took the other's discriminator + 1: a (BACKUP before the cut) ends MASTER
    assert a.role == MASTER


def test_admin_down_from_the_peer_makes_this_node_master_at_once() -> None:
    a, b = pair()
    exchange(a, b, 0.0)
    exchange(a, b, 0.0)
    assert a.role == BACKUP
    b.state = ADMIN_DOWN
    assert a.receive(b.packet(), 1.0) == MASTER
    assert a.state == DOWN and a.diag == 3


def test_packets_for_another_discriminator_are_discarded() -> None:
    a, b = pair()
    exchange(a, b, 0.0)
    with pytest.raises(ValueError, match="not ours"):
        a.receive(Packet(state=UP, my_disc=7, your_disc=12345), 0.0)
    with pytest.raises(ValueError, match="discriminator 0"):
        a.receive(Packet(state=UP, my_disc=7, your_disc=0), 0.0)


def test_poll_sequence_on_parameter_change() -> None:
    a, b = pair()
    exchange(a, b, 0.0)
    exchange(a, b, 0.0)
    assert a.update(400_000, 5)
    assert a.packet().poll and a.packet().desired_min_tx == 400_000
    b.receive(a.packet(), 0.1)
    a.receive(b.packet(final=True), 0.1)
    assert not a.poll and b.detection_time_s() == pytest.approx(5 * 0.4)
    assert not a.update(400_000, 5)


# --- configuration ------------------------------------------------------------------------

def test_ka_flag() -> None:
    assert parse_ka("32.32.32.2:32.32.32.1:300000") == SessionConfig(
        "llb-inst0", "32.32.32.2", "32.32.32.1", 300_000, 3)
    assert parse_ka("32.32.32.2:0.0.0.0").interval_us == 200_000
    for bad in ("32.32.32.2", "x:1.1.1.1:200000", "1.1.1.1:2.2.2.2:99999", "::1:2.2.2.2:2",
                "1.1.1.1:2.2.2.2:ten"):
        with pytest.raises(ValueError, match="--ka"):
            parse_ka(bad)
    assert parse_args(["--ka", "1.1.1.2:1.1.1.1:100000"]).ka.interval_us == 100_000
    with pytest.raises(SystemExit):
        parse_args(["--ka", "nonsense"])


# --- the runtime: REST API, persistence (loopback only; the peer is silent) ---------------------

@pytest.fixture
def rig(tmp_path: Path) -> Any:
    decided: list[tuple[str, str]] = []
    bfd = Bfd(lambda inst, state: decided.append((inst, state)), path=tmp_path / "bfd.json",
              port=0)  # port 0: a free port, nothing to collide with
    app = create_app(object(), version="0.0.0", extra_routers=[bfd_router(bfd)])
    with TestClient(app) as http:
        http.portal.call(bfd.start)  # type: ignore[union-attr]
        yield bfd, http, tmp_path / "bfd.json", decided
        http.portal.call(bfd.stop)  # type: ignore[union-attr]


def test_api_create_get_set_delete_as_loxilb(rig: Any) -> None:
    bfd, http, path, _ = rig
    body = {"instance": "default", "remoteIp": "127.0.0.2", "sourceIp": "127.0.0.1",
            "interval": 200000, "retryCount": 3}
    r = http.post("/netlox/v1/config/bfd", json=body)
    assert (r.status_code, r.json()) == (200, {"result": "Success"})
    got = http.get("/netlox/v1/config/bfd/all").json()["Attr"]
    assert len(got) == 1
    entry = got[0]
    assert entry | {"port": 0} == {"instance": "default", "remoteIp": "127.0.0.2",
                                   "sourceIP": "127.0.0.1", "port": 0, "interval": 200000,
                                   "retryCount": 3, "state": "BFDDown"}
    # the same again: loxilb's "existing session"
    r = http.post("/netlox/v1/config/bfd", json=body)
    assert r.status_code == 409 and "existing" in r.json()["message"]
    # set bfd: new interval and retry count
    r = http.post("/netlox/v1/config/bfd", json=body | {"interval": 300000, "retryCount": 5})
    assert r.status_code == 200
    got = http.get("/netlox/v1/config/bfd/all").json()["Attr"][0]
    assert (got["interval"], got["retryCount"]) == (300000, 5)
    saved = json.loads(path.read_text())["Attr"]
    assert saved == [{"instance": "default", "remoteIp": "127.0.0.2", "sourceIp": "127.0.0.1",
                      "interval": 300000, "retryCount": 5}]
    r = http.delete("/netlox/v1/config/bfd/remoteIP/127.0.0.2", params={"instance": "other"})
    assert r.status_code == 404
    r = http.delete("/netlox/v1/config/bfd/remoteIP/127.0.0.2", params={"instance": "default"})
    assert r.status_code == 200
    assert http.get("/netlox/v1/config/bfd/all").json() == {"Attr": []}
    assert json.loads(path.read_text()) == {"Attr": []}
    assert http.delete("/netlox/v1/config/bfd/remoteIP/127.0.0.2").status_code == 404


@pytest.mark.parametrize(("body", "words"), [
    ({"remoteIp": "1.2.3"}, "remoteIp"),
    ({"remoteIp": "fd00::1"}, "IPv4"),
    ({"remoteIp": "0.0.0.0"}, "unicast"),
    ({"remoteIp": "127.0.0.2", "interval": 50000}, "at least 100000"),
    ({"remoteIp": "127.0.0.2", "interval": "200000"}, "interval"),
    ({"remoteIp": "127.0.0.2", "retryCount": 256}, "retryCount"),
    ({"remoteIp": "127.0.0.2", "sourceIp": "192.0.2.77"}, "not an address of this host"),
])
def test_api_bad_input_is_400(rig: Any, body: dict[str, Any], words: str) -> None:
    bfd, http, path, _ = rig
    r = http.post("/netlox/v1/config/bfd", json=body)
    assert r.status_code == 400, r.text
    assert words in r.json()["message"]
    assert bfd.list() == []


def test_sessions_come_back_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "bfd.json"

    async def run() -> list[Any]:
        first = Bfd(lambda *_: None, path=path, port=0,
                    ka=parse_ka("127.0.0.3:127.0.0.1:100000"))
        await first.start()
        first.add(BfdEntry(remote_ip="127.0.0.2", source_ip="0.0.0.0", interval=150000))
        await first.stop()
        # the --ka session is not saved (the flag makes it again); the API's is
        second = Bfd(lambda *_: None, path=path, port=0)
        await second.start()
        listed = second.list()
        await second.stop()
        return listed

    listed = asyncio.run(run())
    assert [(e.remote_ip, e.source_ip, e.interval, e.instance) for e in listed] == [
        ("127.0.0.2", "127.0.0.1", 150000, "llb-inst0")]


def test_received_packets_need_ttl_255(rig: Any) -> None:
    bfd, http, _, decided = rig
    http.post("/netlox/v1/config/bfd", json={"remoteIp": "127.0.0.2", "sourceIp": "127.0.0.1"})
    peer = Session(A, "127.0.0.2")
    http.portal.call(lambda: _deliver(bfd, peer.packet().encode(), 64))
    assert bfd.list()[0].state == "BFDDown"       # TTL 64: discarded
    http.portal.call(lambda: _deliver(bfd, peer.packet().encode(), 255))
    assert bfd.list()[0].state == "BFDInit"


async def _deliver(bfd: Bfd, data: bytes, ttl: int) -> None:
    bfd.packet_in(data, "127.0.0.2", ttl)


def test_cli_create_get_set_delete_bfd(rig: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    bfd, http, _, _ = rig
    monkeypatch.setattr(cli_client, "transport_override", http._transport)
    monkeypatch.delenv("PYLOXI_API", raising=False)
    runner = CliRunner()
    r = runner.invoke(cli, ["create", "bfd", "127.0.0.2", "--instance=llb-inst0",
                            "--sourceIP=127.0.0.1", "--interval=200000", "--retryCount=3"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["get", "bfd"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].split()[:3] == ["Instance", "RemoteIP", "SourceIP"]
    row = lines[1].split()
    assert row[:3] == ["llb-inst0", "127.0.0.2", "127.0.0.1"]
    assert row[4:] == ["200000", "3", "BFDDown"]
    r = runner.invoke(cli, ["set", "bfd", "127.0.0.2", "--interval=400000", "--retryCount=4"])
    assert r.exit_code == 0, r.output
    got = json.loads(runner.invoke(cli, ["get", "bfd", "-o", "json"]).output)["Attr"][0]
    assert (got["interval"], got["retryCount"]) == (400000, 4)
    r = runner.invoke(cli, ["create", "bfd", "127.0.0.3", "--interval=5000"])
    assert r.exit_code == 2 and "100000" in r.output           # refused before any call
    r = runner.invoke(cli, ["delete", "bfd", "127.0.0.2"])
    assert r.exit_code == 0, r.output
    assert bfd.list() == []
    r = runner.invoke(cli, ["delete", "bfd", "127.0.0.2"])
    assert r.exit_code == 1 and "no bfd session" in r.output


def test_a_saved_session_that_cannot_start_yet_is_kept_and_retried(tmp_path: Path) -> None:
    """At boot the source address may not be there yet: the session is listed (Down) and kept
    in the file (it is retried every RETRY_S); deleting it removes it."""
    path = tmp_path / "bfd.json"
    path.write_text(json.dumps({"Attr": [
        {"instance": "llb-inst0", "remoteIp": "127.0.0.2", "sourceIp": "192.0.2.77",
         "interval": 200000, "retryCount": 3}]}))

    async def run() -> tuple[list[Any], list[Any], Any]:
        bfd = Bfd(lambda *_: None, path=path, port=0)
        await bfd.start()
        listed = bfd.list()
        bfd.add(BfdEntry(remote_ip="127.0.0.3", source_ip="127.0.0.1"))  # saves both
        saved = json.loads(path.read_text())["Attr"]
        bfd.delete("127.0.0.2")
        after = bfd.list()
        await bfd.stop()
        return listed, after, saved

    listed, after, saved = asyncio.run(run())
    assert [(e.remote_ip, e.source_ip, e.state) for e in listed] == [
        ("127.0.0.2", "192.0.2.77", "BFDDown")]
    assert sorted(e["remoteIp"] for e in saved) == ["127.0.0.2", "127.0.0.3"]
    assert [e.remote_ip for e in after] == ["127.0.0.3"]
