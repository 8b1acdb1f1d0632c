"""ProbeManager: one asyncio scheduler probing every endpoint target, and the rule -> target map.

Usage (in the daemon's event loop):

    mgr = ProbeManager(on_change=cb)          # cb(target, up, reason), sync or async
    await mgr.start()
    mgr.upsert(ProbeTarget("10.0.0.5_tcp_80", "10.0.0.5", "tcp", 80))
    mgr.sync_rule("rule-7", targets_for_rule(entry))   # reference-counted rule-made targets
    mgr.status(key); mgr.targets(); mgr.remove(key)
    await mgr.stop()

Each target has one timer (loop.call_at); a firing timer starts one probe task, and the probe's
completion re-arms the timer. No thread, no per-target sleeping task. See pyloxi.probes.types for
the timing rules. Methods are meant to be called from the loop's thread.

Owners: a target may be wanted by several LB rules ("rule:<id>") and by the endpoint API ("api").
The API's spec wins over a rule's (loxilb: POST an endpoint named like the rule-made key to change
its probe). The target lives while it has an owner; removing only the API owner of a rule-referred
target reverts it to the rule's probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import errno
import inspect
import ipaddress
import logging
import math
import os
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pyloxi.model.endpoint import (
    HOST_STATES,
    MAX_PERIOD,
    MAX_RETRIES,
    EndPoint,
    EndPointGetEntry,
    EndPointHostState,
)
from pyloxi.model.errors import Conflict, InvalidInput, NotFound
from pyloxi.model.lb import LoadBalancerEntry
from pyloxi.probes.http import DEFAULT_CERT_DIR, HttpProber
from pyloxi.probes.icmp import Pinger
from pyloxi.probes.sctp import SctpProber
from pyloxi.probes.tcp import LINGER0, family_of, probe_tcp
from pyloxi.probes.types import (
    DEFAULT_PERIOD,
    DEFAULT_RETRIES,
    PORTED_TYPES,
    PROBE_TYPES,
    ProbeResult,
    ProbeTarget,
    go_duration,
)
from pyloxi.probes.udp import probe_udp

log = logging.getLogger("pyloxi.probes")

OnChange = Callable[[ProbeTarget, bool, str], Any]
API_OWNER = "api"
RTT_SAMPLES = 16
TICK = 0.02  # timers are grouped into 20 ms slots: one loop wake-up fires many probes
SWEEP = 0.05  # how often in-flight fast-path tcp probes are checked for their timeout


@dataclass(frozen=True, slots=True)
class ProbeStatus:
    key: str
    target: ProbeTarget
    up: bool  # the verdict in force (probe state and external red verdict)
    state: str  # loxilb currState: ok | nok | red
    probe_up: bool  # what the probes alone say
    failures: int  # consecutive failed probes
    probes: int  # probes done
    last_probe_time: float | None  # wall clock (time.time())
    last_ok: bool | None
    last_reason: str
    since: float  # wall clock of the last change of `up`
    rtt_min: float | None
    rtt_avg: float | None
    rtt_max: float | None
    owners: tuple[str, ...]


class _Entry:
    __slots__ = ("key", "specs", "target", "up", "red", "reported", "fails", "first", "probes",
                 "armed", "task", "busy", "gen", "removed", "last_time", "last_ok",
                 "last_reason", "since", "rtts")

    def __init__(self, key: str) -> None:
        self.key = key
        self.specs: dict[str, ProbeTarget] = {}
        self.target: ProbeTarget | None = None
        self.up = True  # assumed until a probe says otherwise
        self.red = False
        self.reported = True
        self.fails = 0
        self.first = True
        self.probes = 0
        self.armed = 0  # token of the pending timer slot entry (0 = none)
        self.task: asyncio.Task[None] | None = None
        self.busy: int | None = None  # gen of an in-flight callback-driven (tcp) probe
        self.gen = 0
        self.removed = False
        self.last_time: float | None = None
        self.last_ok: bool | None = None
        self.last_reason = ""
        self.since = time.time()
        self.rtts: deque[float] = deque(maxlen=RTT_SAMPLES)

    @property
    def effective(self) -> bool:
        return self.up and not self.red


def _effective_spec(specs: dict[str, ProbeTarget]) -> ProbeTarget:
    rule_specs = [specs[o] for o in sorted(specs) if o != API_OWNER]
    api = specs.get(API_OWNER)
    if api is None:
        return rule_specs[0]
    if rule_specs and not api.ep_proto:
        rs = rule_specs[0]
        return dataclasses.replace(api, ep_proto=rs.ep_proto, ep_port=rs.ep_port)
    return api


class ProbeManager:
    def __init__(
        self,
        on_change: OnChange | None = None,
        *,
        cert_dir: str | None = DEFAULT_CERT_DIR,
        max_inflight: int = 2048,
        first_probe_spread: float = 1.0,
        fast_tcp: bool = True,
    ) -> None:
        self.on_change = on_change
        self.cert_dir = cert_dir
        self.max_inflight = max_inflight
        self.first_probe_spread = first_probe_spread
        self.fast_tcp = fast_tcp  # plain tcp probes via loop callbacks (else via _dispatch)
        self._entries: dict[str, _Entry] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None
        self._sem: asyncio.Semaphore | None = None
        self._pinger = Pinger()
        self._sctp = SctpProber()
        self._http = HttpProber(cert_dir)
        self._bg: set[asyncio.Task[Any]] = set()
        self._inflight: dict[int, tuple[socket.socket, float, Callable[[int | None], None]]] = {}
        self._wheel: dict[int, tuple[asyncio.TimerHandle, list[tuple[_Entry, int]]]] = {}
        self._tokens = 0
        self._sweeper: asyncio.TimerHandle | None = None

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._sem = asyncio.Semaphore(self.max_inflight)
        for e in self._entries.values():
            self._arm(e, self._first_delay(e))

    async def stop(self) -> None:
        loop, self._loop = self._loop, None
        tasks = []
        for handle, _ in self._wheel.values():
            handle.cancel()
        self._wheel.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for e in self._entries.values():
            e.armed = 0
            if e.task is not None:
                e.task.cancel()
                tasks.append(e.task)
        tasks.extend(self._bg)
        for fd, (sock, _, _) in list(self._inflight.items()):
            if loop is not None:
                loop.remove_writer(fd)
            sock.close()
        self._inflight.clear()
        for task in tasks:
            task.cancel()
        if tasks and loop is not None:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._pinger.close()
        self._sctp.close()
        await self._http.aclose()

    @property
    def running(self) -> bool:
        return self._loop is not None

    # ---------------------------------------------------------------- targets

    def upsert(self, target: ProbeTarget, owner: str = API_OWNER) -> None:
        """Add or replace `owner`'s spec for target.key. A change of probe parameters resets the
        failure count and probes soon; the up/down verdict is kept until the next probe."""
        e = self._entries.get(target.key)
        if e is None:
            e = self._entries[target.key] = _Entry(target.key)
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
        self._drop(e)
        return True

    def sync_rule(self, rule_id: str, targets: Iterable[ProbeTarget]) -> None:
        """Make the targets owned by LB rule `rule_id` exactly `targets` (reference-counted)."""
        owner = f"rule:{rule_id}"
        wanted = {t.key: t for t in targets}
        for key, e in list(self._entries.items()):
            if owner in e.specs and key not in wanted:
                self.remove(key, owner)
        for t in wanted.values():
            e = self._entries.get(t.key)
            if e is None or e.specs.get(owner) != t:
                self.upsert(t, owner)

    def drop_rule(self, rule_id: str) -> None:
        self.sync_rule(rule_id, ())

    def targets(self) -> list[ProbeTarget]:
        return [e.target for e in self._entries.values() if e.target is not None]

    def keys(self) -> list[str]:
        return list(self._entries)

    def is_up(self, key: str) -> bool | None:
        e = self._entries.get(key)
        return None if e is None else e.effective

    def status(self, key: str) -> ProbeStatus | None:
        e = self._entries.get(key)
        if e is None or e.target is None:
            return None
        rtts = list(e.rtts)
        return ProbeStatus(
            key=e.key, target=e.target, up=e.effective,
            state="red" if e.red else ("ok" if e.up else "nok"),
            probe_up=e.up, failures=e.fails, probes=e.probes, last_probe_time=e.last_time,
            last_ok=e.last_ok, last_reason=e.last_reason, since=e.since,
            rtt_min=min(rtts) if rtts else None,
            rtt_avg=sum(rtts) / len(rtts) if rtts else None,
            rtt_max=max(rtts) if rtts else None,
            owners=tuple(sorted(e.specs)),
        )

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
            if state == "red" and not e.red:
                e.red = True
                self._notify(e, "external verdict red")
            elif state == "green" and e.red:
                e.red = False
                self._notify(e, "external verdict green")
        return matched

    # ---------------------------------------------------------------- scheduling

    def _refresh(self, e: _Entry) -> None:
        old = e.target
        new = _effective_spec(e.specs)
        e.target = new
        if old is not None and old.probe_params() == new.probe_params():
            if old.eff_period != new.eff_period and e.task is None:
                self._arm(e, min(new.eff_period, new.fast_interval) * random.random())
            return
        e.gen += 1
        e.fails = 0
        e.first = old is None
        if e.task is not None:
            e.task.cancel()
            e.task = None
        if new.ptype == "none":
            e.armed = 0
            e.up, e.last_reason = True, "probe type none"
            self._notify(e, "probe type none (always up)")
            return
        self._arm(e, self._first_delay(e))

    def _drop(self, e: _Entry) -> None:
        e.removed = True
        e.armed = 0
        if e.task is not None:
            e.task.cancel()
        self._entries.pop(e.key, None)

    def _first_delay(self, e: _Entry) -> float:
        assert e.target is not None
        return random.uniform(0, min(self.first_probe_spread, e.target.eff_period))

    def _arm(self, e: _Entry, delay: float) -> None:
        loop = self._loop
        if loop is None or e.removed or e.target is None or e.target.ptype == "none":
            return
        if threading.get_ident() != self._thread:
            loop.call_soon_threadsafe(self._arm, e, delay)
            return
        slot = math.ceil((loop.time() + delay) / TICK)
        self._tokens += 1
        e.armed = self._tokens
        pending = self._wheel.get(slot)
        if pending is None:
            pending = self._wheel[slot] = (loop.call_at(slot * TICK, self._fire_slot, slot), [])
        pending[1].append((e, e.armed))

    def _fire_slot(self, slot: int) -> None:
        _, due = self._wheel.pop(slot, (None, []))
        for e, token in due:
            if e.armed == token:
                e.armed = 0
                self._fire(e)

    def _fire(self, e: _Entry) -> None:
        if e.removed or self._loop is None:
            return
        if e.task is not None or e.busy == e.gen:
            self._arm(e, TICK)  # still probing with these parameters: look again shortly
            return
        t = e.target
        assert t is not None
        if self.fast_tcp and t.ptype == "tcp" and not (t.req and t.resp):
            self._tcp_fast(e, t)
        else:
            e.task = self._loop.create_task(self._run(e, e.gen))

    def _tcp_fast(self, e: _Entry, t: ProbeTarget) -> None:
        """A plain TCP connect probe driven by loop callbacks: no task, no coroutine, one
        writer registration and one timer. This is what lets one loop probe 10k endpoints."""
        loop = self._loop
        assert loop is not None
        gen, start, timeout = e.gen, loop.time(), t.eff_timeout
        e.busy = gen
        try:
            sock = socket.socket(family_of(t.ip), socket.SOCK_STREAM)
        except OSError as exc:
            self._complete(e, gen, t, start, ProbeResult(False, f"tcp error: {exc.strerror}"))
            return
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
            err = sock.connect_ex((t.ip, t.port))
        except OSError as exc:
            err = exc.errno or errno.EINVAL
        if err != errno.EINPROGRESS:
            sock.close()
            self._complete(e, gen, t, start, _tcp_result(err, timeout))
            return
        fd = sock.fileno()

        def finish(res_err: int | None) -> None:
            if self._inflight.pop(fd, None) is None:
                return
            loop.remove_writer(fd)
            if res_err is None:
                res_err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            sock.close()
            self._complete(e, gen, t, start, _tcp_result(res_err, timeout))

        self._inflight[fd] = (sock, start + timeout, finish)
        loop.add_writer(fd, finish, None)
        if self._sweeper is None:
            self._sweeper = loop.call_later(SWEEP, self._sweep)

    def _sweep(self) -> None:
        """Time out fast-path tcp probes (one periodic check instead of a timer per probe)."""
        self._sweeper = None
        loop = self._loop
        if loop is None:
            return
        now = loop.time()
        for _sock, _deadline, finish in [v for v in self._inflight.values() if v[1] <= now]:
            finish(errno.ETIMEDOUT)
        if self._inflight:
            self._sweeper = loop.call_later(SWEEP, self._sweep)

    async def _run(self, e: _Entry, gen: int) -> None:
        loop = asyncio.get_running_loop()
        t = e.target
        assert t is not None and self._sem is not None
        start = loop.time()
        try:
            async with self._sem:
                res = await self._dispatch(t)
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

    def _complete(self, e: _Entry, gen: int, t: ProbeTarget, start: float,
                  res: ProbeResult) -> None:
        if e.busy == gen:
            e.busy = None
        if e.removed or e.gen != gen or self._loop is None:
            return
        first_ok = e.probes == 0 and res.ok
        self._record(e, t, res)
        if res.ok and e.up:
            interval = t.eff_period * (random.uniform(0.5, 1.0) if first_ok else 1.0)
        else:
            interval = t.fast_interval
        self._arm(e, max(0.0, start + interval - self._loop.time()))

    async def _dispatch(self, t: ProbeTarget) -> ProbeResult:
        timeout = t.eff_timeout
        p = t.ptype
        if p == "tcp":
            return await probe_tcp(t.ip, t.port, timeout, t.req, t.resp)
        if p == "udp":
            return await probe_udp(t.ip, t.port, timeout, t.req, t.resp)
        if p == "ping":
            return await self._pinger.ping(t.ip, timeout)
        if p == "sctp":
            return await self._sctp.probe(t.ip, t.port, timeout)
        if p in ("http", "https"):
            try:
                async with asyncio.timeout(timeout + 0.25):
                    return await self._http.probe(t, timeout)
            except TimeoutError:
                return ProbeResult(False, f"{p} timeout after {timeout:g}s")
        if p == "none":
            return ProbeResult(True, "probe type none")
        return ProbeResult(False, f"unknown probe type {p!r}")

    def _record(self, e: _Entry, t: ProbeTarget, res: ProbeResult) -> None:
        e.probes += 1
        e.last_time = time.time()
        e.last_ok = res.ok
        e.last_reason = res.reason
        if res.rtts:
            e.rtts.extend(res.rtts)
        elif t.ptype == "ping" and not res.ok:
            e.rtts.clear()
        if res.ok:
            if not e.up:
                e.up = True
                self._notify(e, f"{res.reason} after {e.fails} failed probe(s)")
            e.fails = 0
        else:
            e.fails += 1
            threshold = 1 if e.first else t.eff_retries
            if e.up and e.fails >= threshold:
                e.up = False
                self._notify(e, f"{res.reason} ({e.fails} consecutive failed probe(s))")
        e.first = False

    def _notify(self, e: _Entry, reason: str) -> None:
        now = e.effective
        if now == e.reported:
            return
        e.reported = now
        e.since = time.time()
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

    # ---------------------------------------------------------------- endpoint API

    def api_add(self, ep: EndPoint) -> ProbeTarget:
        """POST /config/endpoint. Raises InvalidInput (400) and changes nothing on bad input."""
        ip = _parse_ip(ep.host_name)
        ptype = (ep.probe_type or "ping").lower()
        if ptype not in PROBE_TYPES:
            raise InvalidInput(f"host-args unknown probe type {ep.probe_type!r}")
        if not 0 <= ep.inactive_retries <= MAX_RETRIES:
            raise InvalidInput(f"host-args error: inactiveReTries must be 0-{MAX_RETRIES}")
        if not 0 <= ep.probe_duration <= MAX_PERIOD:
            raise InvalidInput(f"host-args error: probeDuration must be 0-{MAX_PERIOD}")
        if not 0 <= ep.probe_port <= 65535:
            raise InvalidInput("host-args error: probePort must be 0-65535")
        port = ep.probe_port
        if ptype in ("tcp", "udp", "sctp") and port == 0:
            raise InvalidInput("host-args unknown probe port: probePort is required for "
                               f"{ptype} probes")
        if ptype in ("http", "https") and port == 0:
            port = 80 if ptype == "http" else 443
        key = ep.name or f"{ip}_{ptype}_{port}"
        target = ProbeTarget(
            key=key, ip=ip, ptype=ptype, port=port, req=ep.probe_req, resp=ep.probe_resp,
            period=float(ep.probe_duration or DEFAULT_PERIOD),
            retries=ep.inactive_retries or DEFAULT_RETRIES,
        )
        self.upsert(target, API_OWNER)
        return target

    def api_delete(self, ip: str, name: str = "", probe_type: str = "",
                   probe_port: int = 0) -> None:
        """DELETE /config/endpoint/epipaddress/{ip}."""
        addr = _parse_ip(ip)
        key = name or f"{addr}_{(probe_type or 'ping').lower()}_{probe_port}"
        e = self._entries.get(key)
        if e is None:
            raise NotFound(f"host-notfound error: no endpoint {key}")
        if API_OWNER in e.specs:
            self.remove(key, API_OWNER)
            return
        raise Conflict(f"LB Rule-referred: endpoint {key} is probed for a load-balancer rule")

    def api_list(self) -> list[EndPointGetEntry]:
        out = []
        for s in self.statuses():
            t = s.target
            ping = t.ptype == "ping"
            last = ""
            if s.last_probe_time is not None:
                last = dt.datetime.fromtimestamp(s.last_probe_time, dt.UTC).isoformat(
                    timespec="milliseconds").replace("+00:00", "Z")
            out.append(EndPointGetEntry(
                host_name=t.ip, name=s.key, inactive_retries=t.eff_retries,
                probe_type=t.ptype, probe_req=t.req, probe_resp=t.resp,
                probe_duration=int(round(t.eff_period)), probe_port=t.port,
                min_delay=go_duration(s.rtt_min or 0.0) if ping else "",
                avg_delay=go_duration(s.rtt_avg or 0.0) if ping else "",
                max_delay=go_duration(s.rtt_max or 0.0) if ping else "",
                curr_state=s.state, last_probe_time=last,
                last_probe_result="" if s.last_ok is None else
                ("success" if s.last_ok else "failure"),
                reason=s.last_reason,
            ))
        return out

    def api_host_state(self, hs: EndPointHostState) -> int:
        """POST /config/endpointhoststate."""
        ip = _parse_ip(hs.host_name)
        state = hs.state.lower()
        if state not in HOST_STATES:
            raise InvalidInput(f"invalid state {hs.state!r}: expected green, yellow or red")
        if not 0 <= hs.ep_port <= 65535:
            raise InvalidInput("invalid epPort: must be 0-65535")
        given = (hs.ep_port != 0, bool(hs.ep_proto))
        if given[0] != given[1]:
            raise InvalidInput("invalid epPort/epProto: give both or neither")
        port = hs.ep_port if given[0] else None
        proto = hs.ep_proto if given[1] else None
        matched = self.set_host_state(ip, state, port, proto)
        if not matched:
            raise NotFound(f"host-notfound error: no endpoint for {ip}")
        return matched


def _tcp_result(err: int, timeout: float) -> ProbeResult:
    if err == 0:
        return ProbeResult(True, "tcp connect ok")
    if err == errno.ETIMEDOUT:
        return ProbeResult(False, f"tcp timeout after {timeout:g}s")
    if err == errno.ECONNREFUSED:
        return ProbeResult(False, "tcp connection refused")
    return ProbeResult(False, f"tcp error: {os.strerror(err)}")


def _parse_ip(text: str) -> str:
    try:
        return ipaddress.ip_address(text.strip()).compressed
    except ValueError:
        raise InvalidInput(f"host-parse error: hostName {text!r} is not an IP address") from None


def targets_for_rule(entry: LoadBalancerEntry, *, default_period: float = DEFAULT_PERIOD,
                     default_retries: int = DEFAULT_RETRIES) -> list[ProbeTarget]:
    """The probe targets an LB rule asks for (empty unless it monitors its endpoints).

    loxilb's conventions: key `<ip>_<proto>_<targetPort>` with proto tcp/udp/sctp (`ping` for
    icmp and anything else); probetype other than none forces monitoring; without a probetype the
    endpoints are probed with the rule's protocol on their target port; probeport/probereq/
    proberesp override; probeTimeout is the period and probeRetries the failure threshold.
    """
    sa = entry.service_arguments
    rule_ptype = (sa.probe_type or "").lower()
    if not (sa.monitor or rule_ptype not in ("", "none")):
        return []
    proto = (sa.protocol or "tcp").lower()
    key_proto = proto if proto in ("tcp", "udp", "sctp") else "ping"
    out: dict[str, ProbeTarget] = {}
    for ep in entry.endpoints:
        try:
            ip = ipaddress.ip_address(ep.endpoint_ip).compressed
        except ValueError:
            continue
        key = f"{ip}_{key_proto}_{ep.target_port}"
        ptype = rule_ptype or key_proto
        port = (sa.probe_port or ep.target_port) if ptype in PORTED_TYPES else 0
        out[key] = ProbeTarget(
            key=key, ip=ip, ptype=ptype, port=port, req=sa.probe_req, resp=sa.probe_resp,
            period=float(sa.probe_timeout or default_period),
            retries=sa.probe_retries or default_retries,
            ep_proto=proto, ep_port=ep.target_port,
        )
    return list(out.values())


def engine_sink(engine: Any) -> OnChange:
    """An on_change that tells the engine: engine.set_endpoint_state(ip, port=, protocol=, up=).
    Targets that stand for no LB endpoint (API-only hosts) are not passed on."""

    def on_change(target: ProbeTarget, up: bool, reason: str) -> None:
        if not target.ep_proto:
            return
        with contextlib.suppress(KeyError, LookupError):
            engine.set_endpoint_state(target.ip, port=target.ep_port, protocol=target.ep_proto,
                                      up=up)

    return on_change
