"""StateSync: VIPs and rule-made probe targets follow the rule table.

Deterministic: the synchronous paths go through flush(); the background thread is observed
through events set by the fakes, never through sleeps.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable
from typing import Any

import pytest

from pyloxi.datapath.memory import MemoryDatapath
from pyloxi.engine import Engine
from pyloxi.model.lb import LoadBalancerEntry
from pyloxi.probes.types import ProbeTarget
from pyloxi.statesync import StateSync, rule_id

WAIT_S = 10  # an upper bound for a follower round; rounds take milliseconds


def rule(vip: str = "20.0.0.1", port: int = 80, monitor: bool = False,
         eps: tuple[str, ...] = ("10.0.11.2",)) -> LoadBalancerEntry:
    sa: dict[str, Any] = {"externalIP": vip, "port": port, "protocol": "tcp"}
    if monitor:
        sa["monitor"] = True
    return LoadBalancerEntry.model_validate({
        "serviceArguments": sa,
        "endpoints": [{"endpointIP": ip, "targetPort": 8080, "weight": 1} for ip in eps],
    })


class FakeVips:
    """Records each change; `calls` is signalled (a semaphore) once per change."""

    def __init__(self, fail_first: int = 0) -> None:
        self.changes: list[tuple[set[str], set[str]]] = []
        self.local: set[str] = set()
        self.calls = threading.Semaphore(0)
        self.fail_first = fail_first

    def change(self, add: set[str], remove: set[str]) -> None:
        if self.fail_first:
            self.fail_first -= 1
            self.calls.release()
            raise OSError("netlink hiccup")
        self.changes.append((set(add), set(remove)))
        self.local = (self.local | add) - remove
        self.calls.release()

    def wait(self, n: int = 1) -> None:
        for _ in range(n):
            assert self.calls.acquire(timeout=WAIT_S), "no VIP change arrived"


class FakeProbes:
    """Records the rule -> targets calls; they must come in the event loop's thread."""

    def __init__(self) -> None:
        self.owned: dict[str, list[str]] = {}
        self.calls: list[tuple[str, str]] = []
        self.loop_thread: int | None = None
        self.event: asyncio.Event | None = None

    def _seen(self, what: str, rid: str) -> None:
        assert threading.get_ident() == self.loop_thread, "probe call outside the loop"
        self.calls.append((what, rid))
        if self.event is not None:
            self.event.set()

    def sync_rule(self, rule_id: str, targets: Iterable[ProbeTarget]) -> None:
        keys = sorted(t.key for t in targets)
        if keys:
            self.owned[rule_id] = keys
        else:
            self.owned.pop(rule_id, None)
        self._seen("sync", rule_id)

    def drop_rule(self, rule_id: str) -> None:
        self.owned.pop(rule_id, None)
        self._seen("drop", rule_id)

    async def settle(self) -> None:
        """Wait until the calls queued in the loop so far have run, and one more came."""
        assert self.event is not None
        await asyncio.wait_for(self.event.wait(), WAIT_S)
        self.event.clear()


class Table:
    """A rule table whose entries are replaced (not mutated) on change, as the engine does."""

    def __init__(self) -> None:
        self.rules: list[LoadBalancerEntry] = []

    def __call__(self) -> list[LoadBalancerEntry]:
        return list(self.rules)


@pytest.fixture
def table() -> Table:
    return Table()


@pytest.fixture
def vips() -> FakeVips:
    return FakeVips()


@pytest.fixture
def probes() -> FakeProbes:
    return FakeProbes()


@pytest.fixture
def sync(table: Table, vips: FakeVips, probes: FakeProbes) -> Any:
    s = StateSync(vips, rules=table, probes=probes)
    yield s
    s.stop()


def test_nothing_happens_until_flush(sync: StateSync, table: Table, vips: FakeVips) -> None:
    table.rules.append(rule())
    sync.changed()
    assert vips.changes == []  # not started: no thread follows
    sync.flush()
    assert vips.changes == [({"20.0.0.1"}, set())]
    sync.flush()  # nothing pending
    assert len(vips.changes) == 1


def test_vips_are_reference_counted(sync: StateSync, table: Table, vips: FakeVips) -> None:
    a, b = rule(port=80), rule(port=443)
    table.rules[:] = [a, b]
    sync.changed()
    sync.flush()
    assert vips.local == {"20.0.0.1"}
    table.rules[:] = [b]
    sync.changed()
    sync.flush()
    assert vips.local == {"20.0.0.1"}  # still used by b
    assert len(vips.changes) == 1  # and nothing was sent
    table.rules[:] = []
    sync.changed()
    sync.flush()
    assert vips.changes[-1] == (set(), {"20.0.0.1"})
    assert vips.local == set()


def test_sctp_secondary_ips_are_plumbed_with_the_vip(sync: StateSync, table: Table,
                                                     vips: FakeVips) -> None:
    """SCTP multihoming: secondaryIPs are VIPs of the rule, made local and removed with it."""
    mh = LoadBalancerEntry.model_validate({
        "serviceArguments": {"externalIP": "20.0.0.1", "port": 38412, "protocol": "sctp"},
        "endpoints": [{"endpointIP": "10.0.11.2", "targetPort": 38412, "weight": 1}],
        "secondaryIPs": [{"secondaryIP": "20.0.0.2"}, {"secondaryIP": "20.0.0.3"}],
    })
    table.rules[:] = [mh, rule(vip="20.0.0.2")]  # a tcp rule shares one secondary IP
    sync.changed()
    sync.flush()
    assert vips.local == {"20.0.0.1", "20.0.0.2", "20.0.0.3"}
    table.rules[:] = [rule(vip="20.0.0.2")]
    sync.changed()
    sync.flush()
    assert vips.local == {"20.0.0.2"}
    assert vips.changes[-1] == (set(), {"20.0.0.1", "20.0.0.3"})


def test_replaced_rule_on_the_same_vip_sends_nothing(sync: StateSync, table: Table,
                                                     vips: FakeVips) -> None:
    table.rules[:] = [rule(eps=("10.0.11.2",))]
    sync.changed()
    sync.flush()
    table.rules[:] = [rule(eps=("10.0.12.2",))]  # an update: a new entry object, same VIP
    sync.changed()
    sync.flush()
    assert vips.changes == [({"20.0.0.1"}, set())]


def test_vip_moving_between_rules_in_one_round(sync: StateSync, table: Table,
                                               vips: FakeVips) -> None:
    table.rules[:] = [rule(vip="20.0.0.1")]
    sync.changed()
    sync.flush()
    table.rules[:] = [rule(vip="20.0.0.2")]
    sync.changed()
    sync.flush()
    assert vips.changes[-1] == ({"20.0.0.2"}, {"20.0.0.1"})
    assert vips.local == {"20.0.0.2"}


def test_stop_before_start_is_harmless(table: Table, vips: FakeVips,
                                       probes: FakeProbes) -> None:
    StateSync(vips, rules=table, probes=probes).stop()


async def test_thread_follows_changes_and_probes_go_to_the_loop(
        sync: StateSync, table: Table, vips: FakeVips, probes: FakeProbes) -> None:
    probes.loop_thread = threading.get_ident()
    probes.event = asyncio.Event()
    sync.start(asyncio.get_running_loop())
    monitored = rule(vip="20.0.0.1", monitor=True, eps=("10.0.11.2", "10.0.12.2"))
    table.rules[:] = [monitored, rule(vip="20.0.0.2")]
    sync.changed()
    await asyncio.to_thread(vips.wait)  # the follower thread, not this one, applied it
    assert vips.local == {"20.0.0.1", "20.0.0.2"}
    await probes.settle()
    assert probes.owned == {rule_id(monitored): ["10.0.11.2_tcp_8080", "10.0.12.2_tcp_8080"]}
    # a rule without monitoring owns no targets: nothing is asked for it
    assert [c for c in probes.calls if c[0] == "sync"] == [("sync", rule_id(monitored))]

    table.rules[:] = [rule(vip="20.0.0.2")]  # the monitored rule goes
    sync.changed()
    await asyncio.to_thread(vips.wait)
    await probes.settle()
    assert probes.owned == {}
    assert probes.calls[-1] == ("drop", rule_id(monitored))


async def test_monitoring_switched_off_releases_the_targets(
        sync: StateSync, table: Table, vips: FakeVips, probes: FakeProbes) -> None:
    probes.loop_thread = threading.get_ident()
    probes.event = asyncio.Event()
    table.rules[:] = [rule(monitor=True)]
    sync.changed()
    sync.start(asyncio.get_running_loop())  # the pending change is followed here, at once
    assert vips.local == {"20.0.0.1"}
    await probes.settle()
    rid = rule_id(table.rules[0])
    assert rid in probes.owned
    table.rules[:] = [rule(monitor=False)]  # same rule id, updated: no monitor any more
    sync.changed()
    await probes.settle()
    assert probes.owned == {}
    assert probes.calls[-1] == ("sync", rid)


async def test_rules_followed_before_start_get_their_probes_at_start(
        sync: StateSync, table: Table, probes: FakeProbes) -> None:
    probes.loop_thread = threading.get_ident()
    probes.event = asyncio.Event()
    table.rules[:] = [rule(monitor=True)]
    sync.changed()
    sync.flush()  # VIPs only: not started
    assert probes.calls == []
    sync.start(asyncio.get_running_loop())
    await probes.settle()
    assert list(probes.owned) == [rule_id(table.rules[0])]


async def test_a_failing_round_does_not_stop_the_follower(table: Table,
                                                          probes: FakeProbes) -> None:
    vips = FakeVips(fail_first=1)
    sync = StateSync(vips, rules=table, probes=probes)
    sync.start(asyncio.get_running_loop())
    try:
        table.rules[:] = [rule(vip="20.0.0.1")]
        sync.changed()
        await asyncio.to_thread(vips.wait)  # this round failed
        table.rules[:] = [rule(vip="20.0.0.2")]
        sync.changed()
        await asyncio.to_thread(vips.wait)
        assert vips.local == {"20.0.0.2"}
    finally:
        sync.stop()


async def test_stop_ends_the_thread_and_leaves_changes_to_flush(
        sync: StateSync, table: Table, vips: FakeVips, probes: FakeProbes) -> None:
    sync.start(asyncio.get_running_loop())
    with pytest.raises(RuntimeError):
        sync.start(asyncio.get_running_loop())
    sync.stop()
    assert not any(t.name == "state-sync" for t in threading.enumerate())
    table.rules[:] = [rule(monitor=True)]
    sync.changed()
    sync.flush()  # as the daemon does on its way out: VIPs, no probes (they are stopped)
    assert vips.local == {"20.0.0.1"}
    await asyncio.sleep(0)  # one loop turn: anything queued for the probes would run now
    assert probes.calls == []


def test_follows_a_real_engine(vips: FakeVips, probes: FakeProbes) -> None:
    """The engine replaces an entry when its rule changes: the identity diff sees it."""
    sync: StateSync

    def changed() -> None:
        sync.changed()

    engine = Engine(MemoryDatapath(), on_change=changed)
    sync = StateSync(vips, rules=engine.entries, probes=probes)
    engine.add_rule(rule(vip="20.0.0.1"))
    engine.add_rule(rule(vip="20.0.0.2"))
    sync.flush()
    assert vips.local == {"20.0.0.1", "20.0.0.2"}
    engine.delete_rule("20.0.0.1", 80, "tcp")
    sync.flush()
    assert vips.local == {"20.0.0.2"}
    assert vips.changes[-1] == (set(), {"20.0.0.1"})


def test_follows_the_engine_by_its_deltas(vips: FakeVips, probes: FakeProbes) -> None:
    """With the engine's drain_changes the follower applies only what changed: the same VIPs
    as a whole-table diff, through creates, an update, deletes and an overflowed log."""
    sync: StateSync

    def changed() -> None:
        sync.changed()

    engine = Engine(MemoryDatapath(), on_change=changed)
    reads: list[int] = []

    def entries() -> list[LoadBalancerEntry]:
        reads.append(1)
        return engine.entries()

    sync = StateSync(vips, rules=entries, probes=probes, changes=engine.drain_changes)
    engine.add_rule(rule(vip="20.0.0.1"))
    sync.flush()  # the first follow reads the table whole
    assert vips.local == {"20.0.0.1"} and len(reads) == 1
    engine.add_rule(rule(vip="20.0.0.2"))
    engine.add_rule(rule(vip="20.0.0.3"))
    engine.delete_rule("20.0.0.3", 80, "tcp")  # created and deleted between two follows
    sync.flush()
    assert vips.local == {"20.0.0.1", "20.0.0.2"} and len(reads) == 1
    engine.add_rule(rule(vip="20.0.0.2", eps=("31.31.31.9",)))  # update: a new entry object
    engine.delete_rule("20.0.0.1", 80, "tcp")
    sync.flush()
    assert vips.local == {"20.0.0.2"} and len(reads) == 1
    assert vips.changes[-1] == (set(), {"20.0.0.1"})
    engine.delete_rule("20.0.0.2", 80, "tcp")
    sync.flush()
    assert vips.local == set() and len(reads) == 1
    # more changes than the log keeps (past 1,024 and the table's size): read whole again
    for i in range(700):
        engine.add_rule(rule(vip=f"21.0.{i >> 8}.{i & 255}"))
    for i in range(0, 700, 2):
        engine.delete_rule(f"21.0.{i >> 8}.{i & 255}", 80, "tcp")
    sync.flush()
    assert len(reads) == 2 and len(vips.local) == 350
    assert "21.0.0.1" in vips.local and "21.0.0.0" not in vips.local
