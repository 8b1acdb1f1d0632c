"""When each target is probed.

Each target has one pending timer slot; a firing slot starts one probe (a task, or loop callbacks
for plain tcp connects), and the probe's completion records its result and re-arms the target.
No thread and no per-target sleeping task. Timers are grouped into TICK slots: one wake-up of the
loop fires many probes. See pyloxi.probes.types for the timing rules; time comes from a Clock.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import threading
from collections.abc import Callable

from pyloxi.probes.clock import Clock, Timer
from pyloxi.probes.probers import Dispatch
from pyloxi.probes.tcp import TcpProber
from pyloxi.probes.types import ProbeResult, ProbeTarget
from pyloxi.probes.verdict import Verdict

log = logging.getLogger("pyloxi.probes")

TICK = 0.02


class Entry:
    """One target: its owners' specs, the spec in force, its probing state and its verdict."""

    __slots__ = ("key", "specs", "target", "verdict", "armed", "task", "busy", "gen", "removed")

    def __init__(self, key: str, now: float) -> None:
        self.key = key
        self.specs: dict[str, ProbeTarget] = {}
        self.target: ProbeTarget | None = None
        self.verdict = Verdict(now)
        self.armed = 0  # token of the pending timer slot entry (0 = none)
        self.task: asyncio.Task[None] | None = None
        self.busy: int | None = None  # gen of an in-flight callback-driven (tcp) probe
        self.gen = 0  # bumped by a change of probe parameters: older probes' results are void
        self.removed = False


OnFlip = Callable[[Entry, str], None]


class Scheduler:
    def __init__(self, probers: Dispatch, tcp: TcpProber, clock: Clock, on_flip: OnFlip, *,
                 max_inflight: int, first_probe_spread: float, fast_tcp: bool) -> None:
        self._probers = probers
        self._tcp = tcp
        self._clock = clock
        self._on_flip = on_flip  # a probe changed what the probes say about a target
        self.max_inflight = max_inflight
        self.first_probe_spread = first_probe_spread
        self.fast_tcp = fast_tcp  # plain tcp probes via loop callbacks (else via the probers)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None
        self._sem: asyncio.Semaphore | None = None
        self._wheel: dict[int, tuple[Timer, list[tuple[Entry, int]]]] = {}
        self._tokens = 0
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def running(self) -> bool:
        return self._loop is not None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._sem = asyncio.Semaphore(self.max_inflight)

    async def stop(self) -> None:
        self._loop = None
        for timer, due in self._wheel.values():
            timer.cancel()
            for e, _ in due:
                e.armed = 0
        self._wheel.clear()
        self._tcp.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # ---------------------------------------------------------------- what the manager asks

    def first(self, e: Entry) -> None:
        """Probe soon, spread so that many new targets are not probed all at once."""
        assert e.target is not None
        if e.target.ptype != "none":
            self.arm(e, random.uniform(0, min(self.first_probe_spread, e.target.eff_period)))

    def restart(self, e: Entry) -> None:
        """New probe parameters: a probe in flight is void, the next one comes soon."""
        e.gen += 1
        if e.task is not None:
            e.task.cancel()
            e.task = None
        e.armed = 0
        self.first(e)

    def period_changed(self, e: Entry) -> None:
        assert e.target is not None
        if e.task is None:
            self.arm(e, min(e.target.eff_period, e.target.fast_interval) * random.random())

    def drop(self, e: Entry) -> None:
        e.removed = True
        e.armed = 0
        if e.task is not None:
            e.task.cancel()

    # ---------------------------------------------------------------- timers

    def arm(self, e: Entry, delay: float) -> None:
        loop = self._loop
        if loop is None or e.removed or e.target is None or e.target.ptype == "none":
            return
        if threading.get_ident() != self._thread:
            loop.call_soon_threadsafe(self.arm, e, delay)
            return
        slot = math.ceil((self._clock.time() + delay) / TICK)
        self._tokens += 1
        e.armed = self._tokens
        pending = self._wheel.get(slot)
        if pending is None:
            timer = self._clock.call_at(slot * TICK, lambda: self._fire_slot(slot))
            pending = self._wheel[slot] = (timer, [])
        pending[1].append((e, e.armed))

    def _fire_slot(self, slot: int) -> None:
        _, due = self._wheel.pop(slot, (None, []))
        for e, token in due:
            if e.armed == token:
                e.armed = 0
                self._fire(e)

    def _fire(self, e: Entry) -> None:
        if e.removed or self._loop is None:
            return
        if e.task is not None or e.busy == e.gen:
            self.arm(e, TICK)  # still probing with these parameters: look again shortly
            return
        t = e.target
        assert t is not None
        if self.fast_tcp and t.ptype == "tcp" and not (t.req and t.resp):
            gen, start = e.gen, self._clock.time()
            e.busy = gen
            self._tcp.connect(t.ip, t.port, t.eff_timeout,
                              lambda res: self._complete(e, gen, t, start, res))
        else:
            task = e.task = self._loop.create_task(self._run(e, e.gen))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    # ---------------------------------------------------------------- probes

    async def _run(self, e: Entry, gen: int) -> None:
        t = e.target
        assert t is not None and self._sem is not None
        start = self._clock.time()
        try:
            async with self._sem:
                res = await self._probers.probe(t)
        except asyncio.CancelledError:
            if e.gen == gen:
                e.task = None
            raise
        except Exception as exc:  # a prober bug must not stop the target's probing
            log.exception("probe of %s crashed", t.key)
            res = ProbeResult(False, f"probe error: {exc}")
        if e.removed or e.gen != gen:
            return
        e.task = None
        self._complete(e, gen, t, start, res)

    def _complete(self, e: Entry, gen: int, t: ProbeTarget, start: float,
                  res: ProbeResult) -> None:
        if e.busy == gen:
            e.busy = None
        if e.removed or e.gen != gen or self._loop is None:
            return
        v = e.verdict
        first_ok = v.probes == 0 and res.ok
        flipped = v.record(t, res, self._clock.wall())
        if flipped is not None:
            self._on_flip(e, flipped)
        if res.ok and v.up:
            interval = t.eff_period * (random.uniform(0.5, 1.0) if first_ok else 1.0)
        else:
            interval = t.fast_interval
        self.arm(e, max(0.0, start + interval - self._clock.time()))
