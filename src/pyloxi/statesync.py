"""StateSync: the VIPs of this host and the rule-made probe targets follow the engine's rules.

    engine (on_change) -> StateSync.changed() -> follower thread -> vips.change(add, remove)
                                                                 -> loop: probes.sync_rule/drop_rule
    HA state (cluster) -> StateSync.ha_changed() -> follower thread -> vips.change(add, remove)

Only the VIPs of rules whose HA instance is served here (`serves`: MASTER or NOT_DEFINED) are
made local: on BACKUP the rules stay in the engine and the datapath, but the VIP is not local,
so the host stops answering ARP/NDP for it and traffic no longer arrives.

Durability is not its business: the engine waits for the store before a change is answered.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Protocol

from pyloxi.model.lb import LoadBalancerEntry
from pyloxi.probes import targets_for_rule
from pyloxi.probes.types import ProbeTarget

log = logging.getLogger(__name__)


class VipTable(Protocol):
    """The host's local VIPs (host.netlink.VipPlumber)."""

    def change(self, add: set[str], remove: set[str]) -> None: ...


class ProbeRules(Protocol):
    """The probe targets each rule owns (probes.manager.ProbeManager); called in its loop."""

    def sync_rule(self, rule_id: str, targets: Iterable[ProbeTarget]) -> None: ...

    def drop_rule(self, rule_id: str) -> None: ...


def rule_id(entry: LoadBalancerEntry) -> str:
    sa = entry.service_arguments
    return f"{sa.external_ip}:{sa.protocol}:{sa.port}-{sa.port_max}:{sa.block}"


def rule_vips(entry: LoadBalancerEntry) -> list[str]:
    """The addresses a rule makes local: its VIP and its SCTP secondary IPs (multihoming)."""
    return [entry.service_arguments.external_ip,
            *(str(s.secondary_ip) for s in entry.secondary_ips or [])]


class StateSync:
    """Followers of the rule table: after each change, VIPs and probe targets are brought in
    step on one background thread that always takes the latest rule list, within
    FOLLOW_INTERVAL_S, seeing only what changed (the engine replaces an entry object when its
    rule changes, so a diff by identity is exact).

    `changed()` only raises a flag; the thread runs between `start(loop)` and `stop()`, and
    `flush()` applies a pending change at once in the caller's thread. Probe targets change only
    while started: they are handed to `loop`, the probe manager's, which owns them."""

    FOLLOW_INTERVAL_S = 0.1  # VIP and probe updates

    def __init__(self, vips: VipTable, rules: Callable[[], list[LoadBalancerEntry]],
                 probes: ProbeRules,
                 serves: Callable[[LoadBalancerEntry], bool] | None = None,
                 extra_vips: Callable[[], set[str]] | None = None,
                 changes: Callable[[], list[tuple[LoadBalancerEntry, bool]] | None] | None = None
                 ) -> None:
        self.vips = vips
        # the engine's drain_changes(): what entered/left the table since the last call (None:
        # read `rules` whole). Without it every follow diffs the whole table: O(rules) work
        # ten times a second during a bulk create.
        self.changes = changes
        self._synced = False  # a whole-table follow has happened: deltas apply on top of it
        # addresses local beside the rules' VIPs (egress SNAT addresses): counted on each
        # recount, so whoever changes them calls ha_changed()
        self.extra_vips = extra_vips or set
        self.rules = rules  # the engine's entries, as stored (no copies)
        self.probes = probes
        self.serves = serves or (lambda _entry: True)  # whether a rule's VIPs are local here
        self._recount = False  # the HA state changed: VIP references are counted again
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pending = False
        self._stopping = False
        self._cond = threading.Condition()
        self._apply_lock = threading.Lock()  # one follow at a time: the thread's or flush()'s
        self._seen: dict[int, LoadBalancerEntry] = {}  # id(entry) -> entry, as last applied
        self._vip_refs: Counter[str] = Counter()
        self._probed: set[str] = set()  # rules that own probe targets (touched in the loop only)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Follow changes on a thread of its own until stop(); probe changes go to `loop`.
        What is pending already is followed here, in the caller's thread: the rules' probe
        targets are queued in `loop` before anything started after this call."""
        if self._thread is not None:
            raise RuntimeError("StateSync already started")
        with self._apply_lock:
            self._loop = loop
            if self._seen:  # followed before the start: their probe targets are still due
                loop.call_soon_threadsafe(self.sync_probes, list(self._seen.values()), [])
        self.flush()
        with self._cond:
            self._stopping = False
        self._thread = threading.Thread(target=self._run, name="state-sync", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread; probe targets no longer change. A pending change waits for flush()."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._apply_lock:
            self._loop = None

    def changed(self) -> None:
        """The engine's on_change: called under its lock, so it only raises a flag."""
        with self._cond:
            if not self._pending:  # one wake-up per follow, not one thread switch per create
                self._pending = True
                self._cond.notify_all()

    def ha_changed(self) -> None:
        """A ClusterState listener: which rules' VIPs are local may have changed."""
        with self._cond:
            self._pending = self._recount = True
            self._cond.notify_all()

    def flush(self) -> None:
        """Apply a pending change now, in this thread."""
        with self._apply_lock:
            with self._cond:
                pending, self._pending = self._pending, False
                recount, self._recount = self._recount, False
            if not pending:
                return
            delta = self.changes() if self.changes is not None else None
            if delta is None or recount or not self._synced:
                # drained first, read after: a change in between is in both, and applying a
                # delta is idempotent (see _follow_delta)
                self._follow(self.rules(), recount=recount)
                self._synced = True
            else:
                self._follow_delta(delta)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._stopping)
                if self._stopping:
                    return
            try:
                self.flush()
            except Exception:  # a VIP or probe hiccup must not stop the follower
                log.exception("applying rule changes to VIPs/probes failed")
            with self._cond:  # let a burst gather: diffs are O(rules)
                self._cond.wait_for(lambda: self._stopping, self.FOLLOW_INTERVAL_S)

    def _follow_delta(self, delta: list[tuple[LoadBalancerEntry, bool]]) -> None:
        """Like _follow, from the entries that entered/left the table since the last follow
        (in order). An entry already seen entering, or not seen leaving, is skipped."""
        added: dict[int, LoadBalancerEntry] = {}
        gone: dict[int, LoadBalancerEntry] = {}
        for entry, present in delta:
            i = id(entry)  # the delta holds the entry: its id is not reused meanwhile
            if present and i not in self._seen:
                self._seen[i] = entry
                if gone.pop(i, None) is None:
                    added[i] = entry
            elif not present and i in self._seen:
                del self._seen[i]
                if added.pop(i, None) is None:
                    gone[i] = entry
        if added or gone:
            self._apply(list(added.values()), list(gone.values()), self._seen.values(),
                        recount=False)

    def _follow(self, rules: list[LoadBalancerEntry], *, recount: bool = False) -> None:
        """VIPs and probe targets follow the rules (VIPs: only those of served rules)."""
        current = {id(r): r for r in rules}
        added = [r for i, r in current.items() if i not in self._seen]
        gone = [r for i, r in self._seen.items() if i not in current]
        self._seen = current
        self._apply(added, gone, rules, recount=recount)

    def _apply(self, added: list[LoadBalancerEntry], gone: list[LoadBalancerEntry],
               rules: Iterable[LoadBalancerEntry], *, recount: bool) -> None:
        if recount:  # served or not changed under the rules we hold: count from scratch
            refs = Counter(v for r in rules if self.serves(r) for v in rule_vips(r))
            refs.update(self.extra_vips())
            appeared = set(refs) - set(self._vip_refs)
            vanished = set(self._vip_refs) - set(refs)
            self._vip_refs = refs
        else:
            # A rule counts only while served. Should the HA state change between a rule's
            # addition and removal, the count may go astray here, but every HA change is
            # followed by ha_changed() and its recount, which starts again from the rules.
            new_vips = [v for r in added if self.serves(r) for v in rule_vips(r)]
            old_vips = [v for r in gone if self.serves(r) for v in rule_vips(r)]
            appeared = {v for v in new_vips if not self._vip_refs[v]}
            self._vip_refs.update(new_vips)
            self._vip_refs.subtract(old_vips)
            vanished = {v for v in old_vips if self._vip_refs[v] <= 0}
            for v in vanished:
                del self._vip_refs[v]
        if appeared or vanished:
            self.vips.change(appeared - vanished, vanished)
        if self._loop is not None and (added or gone):
            self._loop.call_soon_threadsafe(self.sync_probes, added, gone)

    def sync_probes(self, added: list[LoadBalancerEntry], gone: list[LoadBalancerEntry]) -> None:
        """In the event loop: changed rules get their probe targets (loxilb's keys)."""
        kept = {rule_id(r) for r in added}
        for rid in {rule_id(r) for r in gone} - kept:
            if rid in self._probed:
                self.probes.drop_rule(rid)
                self._probed.discard(rid)
        for entry in added:
            rid = rule_id(entry)
            targets = targets_for_rule(entry)
            if targets or rid in self._probed:
                self.probes.sync_rule(rid, targets)
            if targets:
                self._probed.add(rid)
            else:
                self._probed.discard(rid)
