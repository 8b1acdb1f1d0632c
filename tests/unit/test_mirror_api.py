"""/config/mirror over the API with the in-memory datapath: what the datapath is given (slots,
ports, VLANs, targets), loxilb's error answers, bad mirrors refused with nothing changed, and
the saved list restored."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pyloxi.api import create_app
from pyloxi.api.mirror import mirror_router
from pyloxi.datapath.memory import MemoryDatapath
from pyloxi.engine.mirror import MAX_MIRRORS, MirrorProgram, Mirrors
from pyloxi.store import load_mirrors, save_mirrors

URL = "/netlox/v1/config/mirror"
PORTS = ("eth0", "eth1", "hs1")  # where the datapath runs
IFACES = frozenset({*PORTS, "mir0", "spare"})  # interfaces that exist


@pytest.fixture
def dp() -> MemoryDatapath:
    return MemoryDatapath(interfaces=IFACES)


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    return tmp_path / "mirror.json"


@pytest.fixture
def http(dp: MemoryDatapath, saved: Path) -> Iterator[TestClient]:
    mirrors = Mirrors(dp, ports=lambda: PORTS, save=lambda m: save_mirrors(saved, m))
    app = create_app(object(), version="0", extra_routers=[mirror_router(mirrors)])
    with TestClient(app) as client:
        yield client


def mirr(ident: str, *, type: int = 0, port: str = "mir0", vlan: int = 0,  # noqa: A002
         attachment: int = 1, target: str = "hs1", typo: bool = False) -> dict[str, Any]:
    return {"mirrorIdent": ident, "mirrorInfo": {"type": type, "port": port, "vlan": vlan},
            "targetObject": {"attachement" if typo else "attachment": attachment,
                             "mirrObjName": target}}


def test_create_list_delete(http: TestClient, dp: MemoryDatapath, saved: Path) -> None:
    r = http.post(URL, json=mirr("mirr-1", typo=True))  # loxicmd's spelling
    assert r.status_code == 200, r.text
    r = http.post(URL, json=mirr("web", type=1, vlan=100, attachment=2, target="websvc"))
    assert r.status_code == 200, r.text
    assert dp.mirrors == [MirrorProgram(0, "mir0", 0, False, "hs1"),
                          MirrorProgram(1, "mir0", 100, True, "websvc")]
    dp.mirr_counters[1] = (4, 400)
    got = http.get(f"{URL}/all").json()["mirrAttr"]
    assert [(e["mirrorIdent"], e["sync"], e["counter"]) for e in got] == [
        ("mirr-1", 0, "0:0"), ("web", 0, "4:400")]
    assert got[0]["targetObject"] == {"attachment": 1, "mirrObjName": "hs1"}
    assert got[1]["mirrorInfo"]["vlan"] == 100
    assert [m.mirror_ident for m in load_mirrors(saved)] == ["mirr-1", "web"]
    r = http.delete(f"{URL}/ident/mirr-1")
    assert r.status_code == 200, r.text
    assert [m.slot for m in dp.mirrors] == [1]
    r = http.delete(f"{URL}/ident/mirr-1")
    assert r.status_code == 404 and "no such mirror" in r.text
    assert [m.mirror_ident for m in load_mirrors(saved)] == ["web"]


@pytest.mark.parametrize(("body", "reason"), [
    (mirr("m", type=2), "ERSPAN"),
    (mirr("m", type=3), "type"),
    (mirr("m", type=1), "RSPAN needs a vlan"),
    (mirr("m", type=1, vlan=4095), "RSPAN needs a vlan"),
    (mirr("m", port=""), "mirror port"),
    (mirr("m", port="nosuch"), "nosuch"),
    (mirr("m", target="nosuch"), "does not run on 'nosuch'"),
    (mirr("m", target="spare"), "does not run on 'spare'"),  # exists, no datapath there
    (mirr("m", port="hs1"), "mirrored to itself"),
    (mirr("m", attachment=0), "attachment 0"),
    (mirr("m", target=""), "mirrObjName is empty"),
    (mirr(""), "mirrorIdent is empty"),
    ({"mirrorIdent": "m", "mirrorInfo": {"type": 0, "port": "mir0"}}, "targetObject"),
    ({"mirrorIdent": "m", "mirrorInfo": {"type": "0", "port": "mir0"},
      "targetObject": {"attachment": 1, "mirrObjName": "hs1"}}, "type"),
])
def test_refused_with_nothing_changed(http: TestClient, dp: MemoryDatapath, saved: Path,
                                      body: dict[str, Any], reason: str) -> None:
    assert http.post(URL, json=mirr("keep", target="eth0")).status_code == 200
    before = list(dp.mirrors)
    r = http.post(URL, json=body)
    assert r.status_code == 400, r.text
    assert reason in r.json()["message"], r.text
    assert dp.mirrors == before
    assert [m.mirror_ident for m in load_mirrors(saved)] == ["keep"]


def test_same_info_is_409_other_info_replaces(http: TestClient, dp: MemoryDatapath) -> None:
    assert http.post(URL, json=mirr("m")).status_code == 200
    r = http.post(URL, json=mirr("m"))
    assert r.status_code == 409 and "mirr-exists error" in r.text
    r = http.post(URL, json=mirr("m", type=1, vlan=7))  # loxilb: another mirrorInfo replaces
    assert r.status_code == 200, r.text
    assert dp.mirrors == [MirrorProgram(0, "mir0", 7, False, "hs1")]
    r = http.post(URL, json=mirr("other", target="hs1"))  # hs1 is mirrored already
    assert r.status_code == 409 and "'m'" in r.text


def test_the_33rd_mirror_is_refused(http: TestClient, dp: MemoryDatapath) -> None:
    for i in range(MAX_MIRRORS):
        r = http.post(URL, json=mirr(f"m{i}", attachment=2, target=f"rule{i}"))
        assert r.status_code == 200, r.text
    r = http.post(URL, json=mirr("m32", attachment=2, target="rule32"))
    assert r.status_code == 403 and "32 mirrors" in r.text
    assert len(dp.mirrors) == MAX_MIRRORS
    assert http.delete(f"{URL}/ident/m5").status_code == 200
    assert http.post(URL, json=mirr("m32", attachment=2, target="rule32")).status_code == 200
    assert {m.slot for m in dp.mirrors} == set(range(MAX_MIRRORS))  # slot 5 reused


def test_datapath_failure_is_undone(http: TestClient, dp: MemoryDatapath) -> None:
    assert http.post(URL, json=mirr("m")).status_code == 200
    dp.fail_next = OSError(12, "no memory")
    r = http.post(URL, json=mirr("n", attachment=2, target="web"))
    assert r.status_code == 400 and "refused by the datapath" in r.text
    assert [m.target for m in dp.mirrors] == ["hs1"]
    assert [e["mirrorIdent"] for e in http.get(f"{URL}/all").json()["mirrAttr"]] == ["m"]


def test_restored_after_restart(saved: Path) -> None:
    dp = MemoryDatapath(interfaces=IFACES)
    first = Mirrors(dp, ports=lambda: PORTS, save=lambda m: save_mirrors(saved, m))
    app = create_app(object(), version="0", extra_routers=[mirror_router(first)])
    with TestClient(app) as http:
        assert http.post(URL, json=mirr("a", type=1, vlan=9)).status_code == 200
        assert http.post(URL, json=mirr("b", attachment=2, target="web")).status_code == 200
    dp2 = MemoryDatapath(interfaces=IFACES - {"hs1"})  # hs1 is gone: "a" left out
    again = Mirrors(dp2, ports=lambda: PORTS, saved=load_mirrors(saved))
    assert [e.mirror_ident for e in again.list()] == ["b"]
    assert dp2.mirrors == [MirrorProgram(0, "mir0", 0, True, "web")]
    dp3 = MemoryDatapath(interfaces=IFACES)
    assert [m.target for m in Mirrors(dp3, saved=load_mirrors(saved))._programs()] == [
        "hs1", "web"]
    assert dp3.mirrors[0].vlan == 9


def test_corrupt_file_starts_empty(saved: Path) -> None:
    saved.write_text("{not json")
    assert load_mirrors(saved) == []
    saved.write_text('{"mirrAttr": [{"mirrorIdent": "x"}, ' + str(mirr("ok")).replace(
        "'", '"') + "]}")
    assert [m.mirror_ident for m in load_mirrors(saved)] == ["ok"]
