"""JsonStore: round trip, lbconfig.txt shape, missing/corrupt files, atomic replace."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pyloxi.datapath.memory import MemoryDatapath
from pyloxi.engine import Engine
from pyloxi.model.lb import LoadBalancerEntry
from pyloxi.store import JsonStore, StoreError


def entry(port: int) -> LoadBalancerEntry:
    return LoadBalancerEntry.model_validate(
        {
            "serviceArguments": {"externalIP": "20.20.20.1", "port": port, "protocol": "tcp"},
            "endpoints": [{"endpointIP": "31.31.31.1", "targetPort": 8080, "weight": 1}],
        }
    )


def test_missing_file_is_empty(tmp_path: Path):
    assert JsonStore(tmp_path / "nope" / "lbconfig.txt").load() == []


def test_round_trip_and_shape(tmp_path: Path):
    path = tmp_path / "etc" / "lbconfig.txt"
    store = JsonStore(path)
    store.save([entry(80), entry(81)])
    doc = json.loads(path.read_text())
    assert list(doc) == ["lbAttr"]
    assert doc["lbAttr"][0]["serviceArguments"]["externalIP"] == "20.20.20.1"
    assert doc["lbAttr"][0]["endpoints"][0] == {
        "endpointIP": "31.31.31.1",
        "targetPort": 8080,
        "weight": 1,
        "state": "",
        "counter": "",
    }
    assert "secondaryIPs" not in doc["lbAttr"][0]  # None fields left out
    assert store.load() == [entry(80), entry(81)]
    assert [p.name for p in path.parent.iterdir()] == ["lbconfig.txt"]  # no temp file left


def test_reads_loxilb_style_keys(tmp_path: Path):
    path = tmp_path / "lbconfig.txt"
    path.write_text(
        '{"lbAttr":[{"serviceArguments":{"externalIP":"20.20.20.1","port":80,'
        '"protocol":"tcp","BGP":false,"Monitor":true,"inactiveTimeout":30},'
        '"endpoints":[{"endpointIP":"31.31.31.1","targetPort":8080,"weight":1}]}]}'
    )
    (rule,) = JsonStore(path).load()
    assert rule.service_arguments.monitor is True
    assert rule.service_arguments.inactive_timeout == 30


@pytest.mark.parametrize(
    "text", ["{not json", "[]", '{"lbAttr": [{"serviceArguments": {"port": 80}}]}']
)
def test_corrupt_file_names_the_path(tmp_path: Path, text: str):
    path = tmp_path / "lbconfig.txt"
    path.write_text(text)
    with pytest.raises(StoreError, match=str(path)):
        JsonStore(path).load()


def test_failed_save_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "lbconfig.txt"
    store = JsonStore(path)
    store.save([entry(80)])

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        store.save([entry(81)])
    monkeypatch.undo()
    assert store.load() == [entry(80)]
    assert [p.name for p in tmp_path.iterdir()] == ["lbconfig.txt"]


def test_engine_persists_and_restores(tmp_path: Path):
    store = JsonStore(tmp_path / "lbconfig.txt")
    eng = Engine(MemoryDatapath(), store=store)
    eng.add_rule(entry(80))
    eng.add_rule(entry(81))
    eng.delete_rule("20.20.20.1", 80, "tcp")
    dp2 = MemoryDatapath()
    eng2 = Engine(dp2, store=store)
    assert eng2.restore(store.load()) == []
    assert [p.port_min for p in dp2.services.values()] == [81]
    assert eng2.desired_rules() == eng.desired_rules()
