"""Stores: SqliteStore (durable, group commit, failures, corrupt files, migration) and
JsonStore (lbconfig.txt shape, the format imported from earlier versions)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pyloxi.datapath.memory import MemoryDatapath
from pyloxi.engine import Delete, Engine, Put, StoreFailure
from pyloxi.model.errors import PyloxiError
from pyloxi.model.lb import LoadBalancerEntry
from pyloxi.store import JsonStore, SqliteStore, StoreError


def entry(port: int) -> LoadBalancerEntry:
    return LoadBalancerEntry.model_validate(
        {
            "serviceArguments": {"externalIP": "20.20.20.1", "port": port, "protocol": "tcp"},
            "endpoints": [{"endpointIP": "31.31.31.1", "targetPort": 8080, "weight": 1}],
        }
    )


class HeldWriter:
    """A store's writer replaced: every batch waits for `gate` (`entered` tells one came, and
    `batches` their sizes), then fails as a full disk does if `fails(batch)`, else is
    written."""

    def __init__(self, store: SqliteStore, monkeypatch: pytest.MonkeyPatch,
                 fails: Callable[[list[Any]], bool] = lambda batch: False) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.batches: list[int] = []
        write = store._write

        def held(batch: list[Any]) -> None:
            self.batches.append(len(batch))
            self.entered.set()
            self.gate.wait(10)
            if fails(batch):
                raise OSError(28, "No space left on device")
            write(batch)

        monkeypatch.setattr(store, "_write", held)


def first_key_is(key: str) -> Callable[[list[Any]], bool]:
    """A batch holding a change whose first operation is on `key`."""
    return lambda batch: any(c.ops and c.ops[0].key == key for c in batch)


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


# ---------------------------------------------------------------------- SqliteStore


@pytest.fixture
def sq(tmp_path: Path):  # type: ignore[no-untyped-def]
    store = SqliteStore(tmp_path / "state")
    assert store.load() == ([], [])
    yield store
    store.close()


def reload(path: Path) -> list[int]:
    store = SqliteStore(path)
    try:
        return [e.service_arguments.port for e in store.load()[1]]
    finally:
        store.close()


def test_sqlite_round_trip_keeps_listing_order(sq: SqliteStore, tmp_path: Path):
    for p in (1, 2, 3):
        sq.submit([Put(f"k{p}", entry(p))]).wait()
    sq.submit([Put("k1", entry(11))]).wait()  # an update keeps its place
    sq.submit([Delete("k2"), Put("k2", entry(22))]).wait()  # delete + create goes last
    sq.close()
    assert reload(tmp_path / "state") == [11, 3, 22]
    keys, _ = SqliteStore(tmp_path / "state").load()
    assert keys == ["k1", "k3", "k2"]


def test_sqlite_group_commit_one_transaction_for_what_queued(
    sq: SqliteStore, monkeypatch: pytest.MonkeyPatch
):
    held = HeldWriter(sq, monkeypatch)
    commits = [sq.submit([Put(f"k{p}", entry(p))]) for p in range(1, 11)]
    # the writer may have taken the first one or several before blocking; the rest queue up
    held.gate.set()
    for c in commits:
        c.wait()
    assert sum(held.batches) == 10 and len(held.batches) <= 2


def test_sqlite_writer_woken_by_every_submitter(sq: SqliteStore, tmp_path: Path):
    """Submissions from several threads, some while the writer sleeps, some while it writes:
    every one is committed and answered (no lost wake-up), and a second close is harmless."""
    done: list[int] = []

    def submitter(base: int) -> None:
        for p in range(base, base + 50):
            sq.submit([Put(f"k{p}", entry(p % 65000 + 1))]).wait()
            done.append(p)

    threads = [threading.Thread(target=submitter, args=(1000 * t,)) for t in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(done) == 200
    sq.close()
    sq.close()
    assert len(reload(tmp_path / "state")) == 200


def test_sqlite_failed_batch_fails_later_submissions_until_resume(
    sq: SqliteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    sq.submit([Put("k1", entry(1))]).wait()
    held = HeldWriter(sq, monkeypatch, first_key_is("k2"))
    c2 = sq.submit([Put("k2", entry(2))])
    c3 = sq.submit([Put("k3", entry(3))])
    held.gate.set()
    with pytest.raises(StoreFailure, match="No space left") as err2:
        c2.wait()
    with pytest.raises(StoreFailure) as err3:
        c3.wait()  # queued after (or with) the failed one: computed on top of it
    assert err2.value.from_seq == err3.value.from_seq == c2.seq
    c4 = sq.submit([Put("k4", entry(4))])  # halted until the engine has undone them
    with pytest.raises(StoreFailure):
        c4.wait()
    sq.resume(c2.seq)
    sq.submit([Put("k5", entry(5))]).wait()
    sq.close()
    assert reload(tmp_path / "state") == [1, 5]


def test_sqlite_commit_calls_back_once_settled(sq: SqliteStore, monkeypatch: pytest.MonkeyPatch):
    """An asyncio caller waits by callback: called once the write is durable (or failed),
    never before; at once when registered after that."""
    held = HeldWriter(sq, monkeypatch, first_key_is("bad"))
    called: list[str] = []
    done = threading.Event()
    c1 = sq.submit([Put("k1", entry(1))])
    c1.add_done_callback(lambda: (called.append("k1"), done.set()))
    assert called == []  # the writer is held: nothing is durable yet
    held.gate.set()
    assert done.wait(10)
    c1.wait()
    assert called == ["k1"]
    assert reload_live(sq) == [1]
    c1.add_done_callback(lambda: called.append("late"))
    assert called == ["k1", "late"]
    failed = threading.Event()
    bad = sq.submit([Put("bad", entry(2))])
    bad.add_done_callback(failed.set)
    assert failed.wait(10)
    with pytest.raises(StoreFailure):
        bad.wait()


def reload_live(sq: SqliteStore) -> list[int]:
    import sqlite3
    conn = sqlite3.connect(f"file:{sq.path}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT entry FROM rules ORDER BY ord").fetchall()
    finally:
        conn.close()
    return [LoadBalancerEntry.model_validate_json(r[0]).service_arguments.port for r in rows]


ACK_AND_DIE = """
import os, signal, sys
from pyloxi.engine import Put
from pyloxi.model.lb import LoadBalancerEntry
from pyloxi.store import SqliteStore
store = SqliteStore(sys.argv[1])
store.load()
e = LoadBalancerEntry.model_validate({
    "serviceArguments": {"externalIP": "20.20.20.1", "port": int(sys.argv[2]), "protocol": "tcp"},
    "endpoints": [{"endpointIP": "31.31.31.1", "targetPort": 8080, "weight": 1}]})
store.submit([Put(sys.argv[2], e)]).wait()
os.kill(os.getpid(), signal.SIGKILL)  # acknowledged: die before anything else runs
"""


def test_sqlite_acknowledged_write_survives_sigkill(tmp_path: Path):
    for port in (1, 2, 3):
        proc = subprocess.run([sys.executable, "-c", ACK_AND_DIE, str(tmp_path), str(port)],
                              capture_output=True, timeout=60)
        assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert reload(tmp_path) == [1, 2, 3]


def db_bytes(path: Path) -> bytes:
    return path.read_bytes()


@pytest.mark.parametrize("damage", ["garbage", "half", "header", "empty"])
def test_sqlite_corrupt_file_is_an_error_and_left_untouched(tmp_path: Path, damage: str):
    good = tmp_path / "good"
    store = SqliteStore(good)
    store.load()
    for p in range(1, 200):
        store.submit([Put(f"k{p}", entry(p))]).wait()
    store.close()
    data = (good / "lbconfig.db").read_bytes()
    bad = {"garbage": b"not a database at all" * 300, "half": data[: len(data) // 2],
           "header": data[:50], "empty": b""}[damage]
    state = tmp_path / "state"
    state.mkdir()
    (state / "lbconfig.db").write_bytes(bad)
    with pytest.raises(StoreError, match=str(state / "lbconfig.db")):
        SqliteStore(state).load()
    assert (state / "lbconfig.db").read_bytes() == bad
    assert [p.name for p in state.iterdir()] == ["lbconfig.db"]


def test_sqlite_unreadable_file_is_an_error(tmp_path: Path):
    (tmp_path / "lbconfig.db").mkdir()  # something that cannot be read as a file
    with pytest.raises(StoreError, match="cannot read rule store .*lbconfig.db"):
        SqliteStore(tmp_path).load()


def test_legacy_json_is_imported_once(tmp_path: Path):
    JsonStore(tmp_path / "lbconfig.json").save([entry(80), entry(81)])
    store = SqliteStore(tmp_path)
    keys, entries = store.load()
    assert entries == [entry(80), entry(81)] and keys[0] == "20.20.20.1|tcp|80|0|0|"
    store.submit([Delete(keys[0])]).wait()
    store.close()
    assert not (tmp_path / "lbconfig.json").exists()
    assert (tmp_path / "lbconfig.json.imported").exists()
    assert reload(tmp_path) == [81]


def test_corrupt_legacy_json_is_an_error_and_left_untouched(tmp_path: Path):
    (tmp_path / "lbconfig.json").write_text("{not json")
    with pytest.raises(StoreError, match="lbconfig.json"):
        SqliteStore(tmp_path).load()
    assert (tmp_path / "lbconfig.json").read_text() == "{not json"
    assert not (tmp_path / "lbconfig.db").exists()


def test_engine_with_sqlite_store_restores(tmp_path: Path):
    store = SqliteStore(tmp_path)
    store.load()
    eng = Engine(MemoryDatapath(), store=store)
    eng.add_rule(entry(80))
    eng.add_rule(entry(81))
    eng.delete_rule("20.20.20.1", 80, "tcp")
    store.close()
    store2 = SqliteStore(tmp_path)
    keys, entries = store2.load()
    dp2 = MemoryDatapath()
    eng2 = Engine(dp2, store=store2)
    assert eng2.restore(entries, keys) == []
    assert [p.port_min for p in dp2.services.values()] == [81]
    assert eng2.desired_rules() == eng.desired_rules()
    store2.close()


def test_engine_undoes_a_failed_group_newest_first(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch):
    """Create X then update X, both in the failed batch: undoing oldest-first would leave X
    behind; newest-first leaves nothing, in memory, datapath and disk."""
    store = SqliteStore(tmp_path)
    store.load()
    dp = MemoryDatapath()
    eng = Engine(dp, store=store)
    eng.add_rule(entry(1))
    held = HeldWriter(store, monkeypatch, lambda batch: any(
        isinstance(op, Put) and op.entry.service_arguments.port == 2
        for c in batch for op in c.ops))
    errors: list[PyloxiError] = []

    def post(e: LoadBalancerEntry) -> None:
        try:
            eng.add_rule(e)
        except PyloxiError as exc:
            errors.append(exc)

    blocker = threading.Thread(target=post, args=(entry(3),))  # holds the writer
    blocker.start()
    assert held.entered.wait(10)
    first = threading.Thread(target=post, args=(entry(2),))
    first.start()
    updated = entry(2).model_copy(update={"endpoints": [
        entry(2).endpoints[0].model_copy(update={"endpoint_ip": "31.31.31.9"})]})
    deadline = threading.Event()
    while not store._queue and not deadline.wait(0.01):
        pass
    second = threading.Thread(target=post, args=(updated,))
    second.start()
    while len(store._queue) < 2 and not deadline.wait(0.01):
        pass
    held.gate.set()
    for t in (blocker, first, second):
        t.join(10)
    assert len(errors) == 2 and all(e.code == 500 and "undone" in e.message for e in errors)
    assert [r.service_arguments.port for r in eng.desired_rules()] == [1, 3]
    assert sorted(p.port_min for p in dp.services.values()) == [1, 3]
    eng.add_rule(entry(4))  # the store takes changes again
    store.close()
    assert reload(tmp_path) == [1, 3, 4]


# ------------------------------------------------------------------- state of earlier versions

# Rows exactly as the previous version wrote them (its `_dump` of a validated rule).
OLD_ROW = (
    '{"serviceArguments": {"externalIP": "20.20.20.1", "privateIP": "", "port": 80, '
    '"portMax": 90, "protocol": "tcp", "sel": 1, "mode": 2, "bgp": false, "monitor": true, '
    '"probetype": "tcp", "probeport": 8080, "probereq": "", "proberesp": "", "probeTimeout": 5, '
    '"probeRetries": 2, "managed": true, "security": 0, "block": 3, "inactiveTimeOut": 240, '
    '"name": "web", "snat": false, "oper": 0, "host": "", "proxyprotocolv2": false, '
    '"egress": false}, "endpoints": [{"endpointIP": "31.31.31.1", "targetPort": 8080, '
    '"weight": 2, "state": "", "counter": ""}], "allowedSources": [{"prefix": "10.0.0.0/8"}]}'
)
OLD_ROW_IGNORED_OPTIONS = (
    '{"serviceArguments": {"externalIP": "20.20.20.2", "privateIP": "", "port": 38412, '
    '"portMax": 0, "protocol": "sctp", "sel": 0, "mode": 0, "bgp": true, "monitor": false, '
    '"probetype": "", "probeport": 0, "probereq": "", "proberesp": "", "probeTimeout": 0, '
    '"probeRetries": 0, "managed": false, "security": 0, "block": 0, "inactiveTimeOut": 240, '
    '"name": "", "snat": false, "oper": 0, "host": "", "proxyprotocolv2": false, '
    '"egress": false}, "endpoints": [{"endpointIP": "31.31.31.1", "targetPort": 38412, '
    '"weight": 1, "state": "", "counter": ""}], "secondaryIPs": [{"secondaryIP": "21.0.0.1"}]}'
)


def _old_db(path: Path, rows: list[tuple[str, str]]) -> None:
    import sqlite3

    from pyloxi.store import _SCHEMA

    path.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path / "lbconfig.db")
    conn.executescript(_SCHEMA)
    conn.executemany("INSERT INTO rules(key, ord, entry) VALUES (?, ?, ?)",
                     [(k, n, e) for n, (k, e) in enumerate(rows)])
    conn.commit()
    conn.close()


def test_rows_of_the_previous_version_load_and_dump_identically(tmp_path: Path):
    from pyloxi.store import _dump

    _old_db(tmp_path, [("20.20.20.1|tcp|80|90|3|", OLD_ROW)])
    store = SqliteStore(tmp_path)
    keys, entries = store.load()
    store.close()
    assert keys == ["20.20.20.1|tcp|80|90|3|"] and store.upgraded == []
    # the on-disk format is unchanged: the same document, keys in the same order (written
    # compact now, by pydantic's encoder; every version reads rows with model_validate_json)
    assert json.dumps(json.loads(_dump(entries[0]))) == OLD_ROW
    eng = Engine(MemoryDatapath())
    assert eng.restore(entries, keys) == []
    assert eng.desired_rules() == entries  # already canonical: applies as stored


def test_options_earlier_versions_ignored_now_load_and_apply(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    """bgp and SCTP secondaryIPs were accepted and ignored by earlier versions; both are
    implemented now, so a persisted rule keeps them and applies with them, without a note."""
    _old_db(tmp_path, [("20.20.20.2|sctp|38412|0|0|", OLD_ROW_IGNORED_OPTIONS)])
    store = SqliteStore(tmp_path)
    with caplog.at_level("WARNING", logger="pyloxi.store"):
        keys, entries = store.load()
    store.close()
    assert store.upgraded == []
    assert not any("not supported yet" in r.getMessage() for r in caplog.records)
    args = entries[0].service_arguments
    assert args.bgp is True and entries[0].secondary_ips is not None
    dp = MemoryDatapath()
    eng = Engine(dp)
    assert eng.restore(entries, keys) == []
    assert [(p.port_min, p.secondary_vips) for p in dp.services.values()] == [
        (38412, ("21.0.0.1",))]
    # the same rule posted now is accepted
    Engine(MemoryDatapath()).add_rule(LoadBalancerEntry.model_validate_json(
        OLD_ROW_IGNORED_OPTIONS))


def test_legacy_json_with_formerly_ignored_options_is_imported_with_them(tmp_path: Path):
    (tmp_path / "lbconfig.json").write_text('{"lbAttr": [' + OLD_ROW_IGNORED_OPTIONS + "]}")
    store = SqliteStore(tmp_path)
    keys, entries = store.load()
    store.close()
    assert keys == ["20.20.20.2|sctp|38412|0|0|"]  # a valid rule: keyed as such
    assert entries[0].service_arguments.bgp is True and entries[0].secondary_ips is not None
    assert store.upgraded == []  # nothing dropped: no note
