"""ProbeManager: the targets to probe, who wants them, and what is said about them.

Usage (in the daemon's event loop):

    mgr = ProbeManager(on_change=cb)          # cb(target, up, reason), sync or async
    await mgr.start()
    mgr.upsert(ProbeTarget("10.0.0.5_tcp_80", "10.0.0.5", "tcp", 80))
    mgr.sync_rule("rule-7", targets_for_rule(entry))   # reference-counted rule-made targets
    mgr.status(key); mgr.targets(); mgr.remove(key)
    await mgr.stop()

Methods are meant to be called from the loop's thread. pyloxi.probes.scheduler decides when each
target is probed, pyloxi.probes.verdict what its probes make of it, pyloxi.probes.owners whose spec
is in force. A target lives while it has an owner; removing only the API owner of a rule-referred
target reverts it to the rule's probe.

`clock` and `probers` stand in for the event loop's clock and the real probers: tests drive time
and probe outcomes through them.
"""

from __future__ import annotations

import asyncio
import inspect
import ipaddress
import logging
from collections.abc import Callable, Iterable
from typing import Any

from pyloxi.probes.clock import Clock, LoopClock
from pyloxi.probes.http import DEFAULT_CERT_DIR
from pyloxi.probes.owners import API_OWNER, effective_spec, rule_owner
from pyloxi.probes.probers import Dispatch, Probers
from pyloxi.probes.scheduler import Entry, Scheduler
from pyloxi.probes.tcp import TcpProber
from pyloxi.probes.types import DEFAULT_PERIOD, DEFAULT_RETRIES, ProbeTarget
from pyloxi.probes.verdict import ProbeStatus

log = logging.getLogger("pyloxi.probes")

OnChange = Callable[[ProbeTarget, bool, str], Any]


class ProbeManager:
    def __init__(
        self,
        on_change: OnChange | None = None,
        *,
        cert_dir: str | None = DEFAULT_CERT_DIR,
        max_inflight: int = 2048,
        first_probe_spread: float = 1.0,
        fast_tcp: bool = True,
        clock: Clock | None = None,
        probers: Dispatch | None = None,
    ) -> None:
        self.on_change = on_change
        self.cert_dir = cert_dir
        self._clock = clock if clock is not None else LoopClock()
        self._entries: dict[str, Entry] = {}
        tcp = TcpProber(self._clock)
        self._probers = probers if probers is not None else Probers(tcp, cert_dir)
        self._scheduler = Scheduler(self._probers, tcp, self._clock, self._notify,
                                    max_inflight=max_inflight,
                                    first_probe_spread=first_probe_spread, fast_tcp=fast_tcp)
        self._bg: set[asyncio.Task[Any]] = set()

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        self._scheduler.start()
        for e in self._entries.values():
            self._scheduler.first(e)

    async def stop(self) -> None:
        await self._scheduler.stop()
        tasks = list(self._bg)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._probers.aclose()

    @property
    def running(self) -> bool:
        return self._scheduler.running

    # ---------------------------------------------------------------- targets

    @staticmethod
    def new_target(*, key: str, ip: str, ptype: str, port: int, req: str, resp: str,
                   period: float, retries: int) -> ProbeTarget:
        """A target for callers that may not import ProbeTarget (the endpoint API is in a
        sibling layer); period/retries 0 mean the defaults."""
        return ProbeTarget(key=key, ip=ip, ptype=ptype, port=port, req=req, resp=resp,
                           period=period or DEFAULT_PERIOD, retries=retries or DEFAULT_RETRIES)

    def upsert(self, target: ProbeTarget, owner: str = API_OWNER) -> None:
        """Add or replace `owner`'s spec for target.key. A change of probe parameters resets the
        failure count and probes soon; the up/down verdict is kept until the next probe."""
        e = self._entries.get(target.key)
        if e is None:
            e = self._entries[target.key] = Entry(target.key, self._clock.wall())
        e.specs[owner] = target
        self._refresh(e)

    def remove(self, key: str, owner: str | None = None) -> bool:
        """Drop `owner`'s spec (all of them if owner is None); the target goes with its last one."""
        e = self._entries.get(key)
        if e is None:
            return False
        if owner is None:
            e.specs.clear()
        elif e.specs.pop(owner, None) is None:
            return False
        if e.specs:
            self._refresh(e)
            return True
        self._scheduler.drop(e)
        self._entries.pop(e.key, None)
        return True

    def sync_rule(self, rule_id: str, targets: Iterable[ProbeTarget]) -> None:
        """Make the targets owned by LB rule `rule_id` exactly `targets` (reference-counted)."""
        owner = rule_owner(rule_id)
        wanted = {t.key: t for t in targets}
        for key, e in list(self._entries.items()):
            if owner in e.specs and key not in wanted:
                self.remove(key, owner)
        for t in wanted.values():
            found = self._entries.get(t.key)
            if found is None or found.specs.get(owner) != t:
                self.upsert(t, owner)

    def drop_rule(self, rule_id: str) -> None:
        self.sync_rule(rule_id, ())

    def targets(self) -> list[ProbeTarget]:
        return [e.target for e in self._entries.values() if e.target is not None]

    def keys(self) -> list[str]:
        return list(self._entries)

    def is_up(self, key: str) -> bool | None:
        e = self._entries.get(key)
        return None if e is None else e.verdict.effective

    def status(self, key: str) -> ProbeStatus | None:
        e = self._entries.get(key)
        if e is None or e.target is None:
            return None
        return e.verdict.status(e.key, e.target, tuple(sorted(e.specs)))

    def statuses(self) -> list[ProbeStatus]:
        return [s for s in (self.status(k) for k in self._entries) if s is not None]

    def set_host_state(self, ip: str, state: str, port: int | None = None,
                       proto: str | None = None) -> int:
        """External verdict: "red" forces matching targets down, "green" lifts that, "yellow"
        changes nothing. port/proto None match every target of the IP. Returns matches."""
        ip = ipaddress.ip_address(ip).compressed
        proto = (proto or "").lower() or None
        if proto == "icmp":
            proto = "ping"
        matched = 0
        for e in self._entries.values():
            t = e.target
            if t is None or t.ip != ip:
                continue
            if port is not None or proto is not None:
                ep_proto = "ping" if t.ep_proto == "icmp" else t.ep_proto
                if not ((t.ptype == proto and t.port == port)
                        or (ep_proto == proto and t.ep_port == port)):
                    continue
            matched += 1
            v = e.verdict
            if state == "red" and not v.red:
                v.red = True
                self._notify(e, "external verdict red")
            elif state == "green" and v.red:
                v.red = False
                self._notify(e, "external verdict green")
        return matched

    # ---------------------------------------------------------------- changes

    def _refresh(self, e: Entry) -> None:
        old = e.target
        new = effective_spec(e.specs)
        e.target = new
        if old is not None and old.probe_params() == new.probe_params():
            if old.eff_period != new.eff_period:
                self._scheduler.period_changed(e)
            return
        e.verdict.restart(first=old is None)
        self._scheduler.restart(e)
        if new.ptype == "none":
            e.verdict.up, e.verdict.last_reason = True, "probe type none"
            self._notify(e, "probe type none (always up)")

    def _notify(self, e: Entry, reason: str) -> None:
        if not e.verdict.settle(self._clock.wall()):
            return
        now = e.verdict.effective
        t = e.target
        assert t is not None
        log.log(logging.INFO if now else logging.WARNING, "endpoint %s (%s %s:%d) %s: %s",
                t.key, t.ptype, t.ip, t.port, "UP" if now else "DOWN", reason)
        if self.on_change is None:
            return
        try:
            out = self.on_change(t, now, reason)
            if inspect.isawaitable(out):
                task = asyncio.ensure_future(out)
                self._bg.add(task)
                task.add_done_callback(self._bg.discard)
        except Exception:
            log.exception("on_change callback failed for %s", t.key)
