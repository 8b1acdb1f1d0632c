"""POST /config/loadbalancer's lean path (api.lb.CreateLane, Engine.begin_add/settle): answered
from the event loop, and still only once durable, undone when the store fails, served by a
worker thread when the engine lock is busy, counted by the request counter like any route."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pyloxi.api import create_app
from pyloxi.api.lb import CreateBatcher
from pyloxi.datapath.memory import MemoryDatapath
from pyloxi.engine import Engine, Put
from pyloxi.engine import engine as engine_module
from pyloxi.model.errors import PyloxiError
from pyloxi.model.lb import LoadBalancerEntry
from pyloxi.store import DB_NAME, SqliteStore

LB = "/netlox/v1/config/loadbalancer"


def rule(port: int) -> dict[str, Any]:
    return {
        "serviceArguments": {"externalIP": "20.20.20.1", "port": port, "protocol": "tcp"},
        "endpoints": [{"endpointIP": "31.31.31.1", "targetPort": 8080, "weight": 1}],
    }


class Observer:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None, int]] = []

    def observe(self, method: str, route: str | None, status: int) -> None:
        self.seen.append((method, route, status))


class Env:
    def __init__(self, state: Path) -> None:
        self.state = state
        self.store = SqliteStore(state)
        self.store.load()
        self.dp = MemoryDatapath()
        self.engine = Engine(self.dp, store=self.store)
        self.observer = Observer()
        self.app = create_app(self.engine, version="9.9.9", request_observer=self.observer)
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app),
                                      base_url="http://pyloxi")

    async def post(self, port: int) -> httpx.Response:
        return await self.http.post(LB, json=rule(port))

    def ports_on_disk(self) -> list[int]:
        """Read by another connection, as a restarted daemon would."""
        conn = sqlite3.connect(f"file:{self.state / DB_NAME}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT entry FROM rules ORDER BY ord").fetchall()
        finally:
            conn.close()
        return [LoadBalancerEntry.model_validate_json(r[0]).service_arguments.port
                for r in rows]

    async def ports_listed(self) -> list[int]:
        resp = await self.http.get(f"{LB}/all")
        assert resp.status_code == 200
        return [r["serviceArguments"]["port"] for r in resp.json()["lbAttr"]]


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    e = Env(tmp_path / "state")
    yield e
    await e.http.aclose()
    e.store.close()


async def test_answered_create_is_on_disk(env: Env) -> None:
    for port in (1, 2, 3):
        resp = await env.post(port)
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"result": "Success"}
        assert env.ports_on_disk() == list(range(1, port + 1))
    resp = await env.post(2)  # the same body again: loxilb's 409, nothing written
    assert resp.status_code == 409
    assert resp.json()["message"] == "lbrule-exists error: 20.20.20.1:2/tcp"
    assert env.ports_on_disk() == [1, 2, 3]


async def test_concurrent_creates_all_durable(env: Env) -> None:
    answers = await asyncio.gather(*(env.post(p) for p in range(1, 33)))
    assert [a.status_code for a in answers] == [200] * 32
    assert sorted(env.ports_on_disk()) == list(range(1, 33))
    assert sorted(await env.ports_listed()) == list(range(1, 33))


async def test_failed_store_write_is_a_500_and_undone(env: Env,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    assert (await env.post(1)).status_code == 200
    write = env.store._write

    def failing_write(batch: Any) -> None:
        if any(isinstance(op, Put) and op.entry.service_arguments.port == 2
               for c in batch for op in c.ops):
            raise OSError(28, "No space left on device")
        write(batch)

    monkeypatch.setattr(env.store, "_write", failing_write)
    resp = await env.post(2)
    assert resp.status_code == 500
    assert "No space left" in resp.json()["message"] and "undone" in resp.json()["message"]
    assert await env.ports_listed() == [1]
    assert sorted(p.port_min for p in env.dp.services.values()) == [1]
    assert (await env.post(3)).status_code == 200  # the store takes changes again
    assert env.ports_on_disk() == [1, 3]


async def test_busy_engine_lock_served_by_a_worker_thread(env: Env,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """While another thread holds the engine lock the event loop must not wait for it: the
    create goes to add_rule in a worker thread, which waits, then answers as usual."""
    held, release, entered = threading.Event(), threading.Event(), threading.Event()

    def holder() -> None:
        with env.engine._lock:
            held.set()
            release.wait(30)

    add_rule = env.engine.add_rule

    def counting_add_rule(entry: LoadBalancerEntry) -> None:
        entered.set()
        add_rule(entry)

    monkeypatch.setattr(env.engine, "add_rule", counting_add_rule)
    thread = threading.Thread(target=holder)
    thread.start()
    assert await asyncio.to_thread(held.wait, 30)
    try:
        post = asyncio.create_task(env.post(7))
        assert await asyncio.to_thread(entered.wait, 30)  # the fallback took it
        assert env.ports_on_disk() == []
    finally:
        release.set()
    resp = await post
    thread.join(30)
    assert resp.status_code == 200, resp.text
    assert env.ports_on_disk() == [7]
    assert await env.ports_listed() == [7]


async def test_counted_under_the_route_template(env: Env) -> None:
    assert (await env.post(1)).status_code == 200
    assert (await env.http.post(LB, content=b"{", headers={"content-type": "application/json"})
            ).status_code == 400
    assert env.observer.seen == [("POST", LB, 200), ("POST", LB, 400)]


def test_begin_add_returns_none_while_the_lock_is_busy(tmp_path: Path) -> None:
    engine = Engine(MemoryDatapath())
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with engine._lock:
            held.set()
            release.wait(30)

    thread = threading.Thread(target=holder)
    thread.start()
    assert held.wait(30)
    try:
        assert engine.begin_add(LoadBalancerEntry.model_validate(rule(1))) is None
    finally:
        release.set()
        thread.join(30)
    assert engine.entries() == []
    staged = engine.begin_add(LoadBalancerEntry.model_validate(rule(1)))
    assert staged is not None
    called: list[bool] = []
    assert staged.when_durable(lambda: called.append(True))  # no store: at once
    assert called == [True]
    assert engine.settle(staged, blocking=False)
    assert [e.service_arguments.port for e in engine.entries()] == [1]


def test_begin_add_waits_for_a_short_lock_holder(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A holder that lets go soon (a worker's create, the follower's drain) is waited for,
    the lock released meanwhile, instead of sending this create to a thread as well (which
    cascaded: each such worker held the lock when the loop's next create came)."""
    monkeypatch.setattr(engine_module, "LOOP_LOCK_WAIT_S", 60.0)  # bound: slow machines
    engine = Engine(MemoryDatapath())
    held = threading.Event()

    def holder() -> None:
        with engine._lock:
            held.set()
            time.sleep(0.05)  # still holding it when begin_add asks

    thread = threading.Thread(target=holder)
    thread.start()
    assert held.wait(30)
    staged = engine.begin_add(LoadBalancerEntry.model_validate(rule(1)))
    thread.join(30)
    assert staged is not None  # applied here, not handed to a worker
    assert engine.settle(staged, blocking=False)
    assert [e.service_arguments.port for e in engine.entries()] == [1]


# ---------------------------------------------------------------- batches (api.lb.CreateBatcher)
# The creates parsed in one event-loop turn are applied together (Engine.begin_add_many). Each
# test queues its creates with no await in between, so they form one batch; the engine's
# begin_add_many is wrapped to check that.


def entry(port: int, ip: str = "31.31.31.1", **args: Any) -> LoadBalancerEntry:
    body = rule(port)
    body["serviceArguments"].update(args)
    body["endpoints"][0]["endpointIP"] = ip
    return LoadBalancerEntry.model_validate(body)


def batches_of(env: Env, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    sizes: list[int] = []
    begin = env.engine.begin_add_many

    def recording(entries: Any) -> Any:
        sizes.append(len(entries))
        return begin(entries)

    monkeypatch.setattr(env.engine, "begin_add_many", recording)
    return sizes


async def outcomes(futures: list[asyncio.Future[None]]) -> list[int]:
    """200, or the error's code, per create."""
    out = []
    for result in await asyncio.gather(*futures, return_exceptions=True):
        if result is None:
            out.append(200)
        else:
            assert isinstance(result, PyloxiError), result
            out.append(result.code)
    return out


def datapath_state(env: Env) -> dict[int, Any]:
    return {sid: prog for sid, prog in env.dp.services.items()}


async def test_batch_mixed_valid_and_invalid(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rejected create of a batch gets its own error and changes nothing; the others of the
    batch are applied and made durable as if sent alone."""
    assert (await env.post(9)).status_code == 200
    sizes = batches_of(env, monkeypatch)
    install = env.dp.install_service

    def failing_install(prog: Any) -> None:
        if prog.port_min == 4:
            raise OSError(28, "No space left on device")
        install(prog)

    monkeypatch.setattr(env.dp, "install_service", failing_install)
    batcher = CreateBatcher(env.engine)
    futures = [
        batcher.add(entry(1)),
        batcher.add(entry(2, mode=4)),  # refused by validation: fullproxy
        batcher.add(entry(9, ip="31.31.31.9")),  # an update of rule 9: applied
        batcher.add(entry(3)),
        batcher.add(entry(4)),  # the datapath refuses it: undone, its own error
        batcher.add(entry(9, ip="31.31.31.9")),  # identical to the update before it: 409
        batcher.add(entry(5, portMax=4)),
    ]
    codes = await outcomes(futures)
    assert sizes == [7]
    assert codes == [200, 400, 200, 200, 403, 409, 400]  # 403: datapath table full
    assert sorted(env.ports_on_disk()) == [1, 3, 9]
    assert sorted(await env.ports_listed()) == [1, 3, 9]
    assert sorted(p.port_min for p in env.dp.services.values()) == [1, 3, 9]
    listed = (await env.http.get(f"{LB}/all")).json()["lbAttr"]
    nine = next(r for r in listed if r["serviceArguments"]["port"] == 9)
    assert [e["endpointIP"] for e in nine["endpoints"]] == ["31.31.31.9"]


async def test_batch_of_rejected_creates_changes_nothing(env: Env,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    assert (await env.post(1)).status_code == 200
    before_dp, before_table = datapath_state(env), env.engine.rule_table()
    sizes = batches_of(env, monkeypatch)
    batcher = CreateBatcher(env.engine)
    codes = await outcomes([batcher.add(entry(1)),  # the same body again
                            batcher.add(entry(2, mode=4)),
                            batcher.add(entry(3, portMax=2))])
    assert sizes == [3]
    assert codes == [409, 400, 400]
    assert datapath_state(env) == before_dp
    assert env.engine.rule_table() == before_table
    assert env.ports_on_disk() == [1]


async def test_batch_duplicates_behave_as_sent_in_order(env: Env,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Create, the same create again (409: it exists by then), an update, a delete (empty
    endpoint list), a create again: as if sent one after the other."""
    sizes = batches_of(env, monkeypatch)
    batcher = CreateBatcher(env.engine)
    empty = entry(1).model_copy(update={"endpoints": []})
    codes = await outcomes([batcher.add(entry(1)), batcher.add(entry(1)),
                            batcher.add(entry(1, ip="31.31.31.2")),
                            batcher.add(entry(2)), batcher.add(empty),
                            batcher.add(entry(1, ip="31.31.31.3"))])
    assert sizes == [6]
    assert codes == [200, 409, 200, 200, 200, 200]
    assert env.ports_on_disk() == [2, 1]  # rule 1 deleted, then created again: last
    listed = (await env.http.get(f"{LB}/all")).json()["lbAttr"]
    assert [(r["serviceArguments"]["port"], [e["endpointIP"] for e in r["endpoints"]])
            for r in listed] == [(2, ["31.31.31.1"]), (1, ["31.31.31.3"])]
    assert sorted(p.port_min for p in env.dp.services.values()) == [1, 2]


async def test_batch_store_failure_fails_every_create_and_undoes(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    assert (await env.post(1)).status_code == 200
    before_dp, before_table = datapath_state(env), env.engine.rule_table()
    write = env.store._write

    def failing_write(batch: Any) -> None:
        if any(isinstance(op, Put) and op.entry.service_arguments.port == 3
               for c in batch for op in c.ops):
            raise OSError(28, "No space left on device")
        write(batch)

    monkeypatch.setattr(env.store, "_write", failing_write)
    sizes = batches_of(env, monkeypatch)
    batcher = CreateBatcher(env.engine)
    empty = entry(1).model_copy(update={"endpoints": []})
    futures = [batcher.add(entry(2)), batcher.add(entry(3)), batcher.add(empty),
               batcher.add(entry(4, mode=4))]
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert sizes == [4]
    assert [getattr(r, "code", None) for r in results] == [500, 500, 500, 400]
    assert all("undone" in r.message for r in results[:3])  # type: ignore[union-attr]
    assert datapath_state(env) == before_dp
    assert env.engine.rule_table() == before_table
    assert env.ports_on_disk() == [1]
    assert (await env.post(5)).status_code == 200  # the store takes changes again
    assert env.ports_on_disk() == [1, 5]


async def test_concurrent_posts_each_get_their_own_answer(env: Env) -> None:
    """Through the app: valid and invalid creates sent together, each answered with its own
    body (loxilb's error bodies), whatever batches they fell into."""
    bad = rule(100)
    bad["serviceArguments"]["mode"] = 99
    answers = await asyncio.gather(*(env.post(p) for p in range(1, 9)),
                                   env.http.post(LB, json=bad), env.post(3))
    assert [a.status_code for a in answers[:8]] == [200] * 8
    assert answers[8].status_code == 400 and "mode" in answers[8].json()["message"]
    assert answers[9].status_code == 409
    assert answers[9].json()["message"] == "lbrule-exists error: 20.20.20.1:3/tcp"
    assert sorted(env.ports_on_disk()) == list(range(1, 9))
