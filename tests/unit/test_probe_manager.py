"""ProbeManager state machine and timing on a fake clock (probes replaced by a scripted fake),
rule -> targets, owners, the engine sink, the TCP prober on loopback, and the packet helpers
(CRC32c, ICMP, SCTP parsing).

Time is virtual: `await clock.sleep(s)` moves the clock by s, firing every timer due on the way
at its own time. Assertions are about outcomes at virtual instants (which probe took a target
down, when the next probe ran), so they hold however loaded the machine is.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import struct
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest

from pyloxi.api.probe_adapter import EndpointAdapter
from pyloxi.model.endpoint import EndPoint
from pyloxi.model.errors import Conflict
from pyloxi.model.lb import LoadBalancerEntry
from pyloxi.probes import ProbeManager, ProbeResult, ProbeTarget, engine_sink, targets_for_rule
from pyloxi.probes.clock import LoopClock
from pyloxi.probes.icmp import echo_request, inet_checksum
from pyloxi.probes.scheduler import TICK
from pyloxi.probes.sctp import (
    CHUNK_INIT,
    abort_chunk,
    crc32c,
    init_ack_chunk,
    init_chunk,
    parse_sctp,
    sctp_packet,
)
from pyloxi.probes.tcp import TcpProber

EPOCH = 1_700_000_000.0
SLACK = TICK + 1e-6  # timers fire at the next TICK slot boundary


async def _settle() -> None:
    """Let the loop run what has become ready (probe tasks, callbacks): none of it waits for
    real time here, so a few passes of the loop finish it."""
    for _ in range(20):
        await asyncio.sleep(0)


class _Timer:
    def __init__(self, callback: Callable[[], object]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """Virtual monotonic time for the scheduler: timers fire only when a test sleeps past them,
    in order, each at its own time."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._timers: list[tuple[float, int, _Timer]] = []
        self._seq = 0

    def time(self) -> float:
        return self.now

    def wall(self) -> float:
        return EPOCH + self.now

    def call_at(self, when: float, callback: Callable[[], object]) -> _Timer:
        timer = _Timer(callback)
        self._seq += 1
        heapq.heappush(self._timers, (when, self._seq, timer))
        return timer

    async def sleep(self, seconds: float) -> None:
        end = self.now + seconds
        await _settle()
        while self._timers and self._timers[0][0] <= end:
            when, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self.now = max(self.now, when)
            timer.callback()
            await _settle()
        self.now = end

    async def sleep_until(self, done: Callable[[], bool], limit: float) -> None:
        """Advance one TICK at a time until done() (at most `limit` seconds)."""
        end = self.now + limit
        while not done():
            assert self.now < end, "condition not reached in virtual time"
            await self.sleep(TICK)


class Script:
    """Fake peers: `alive[key]` decides each probe's outcome; each probe's virtual time is kept."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.alive: dict[str, bool] = {}
        self.times: dict[str, list[float]] = {}

    def calls(self, key: str) -> int:
        return len(self.times.get(key, []))

    def since(self, key: str, t0: float) -> list[float]:
        return [t for t in self.times.get(key, []) if t >= t0]

    async def probe(self, t: ProbeTarget) -> ProbeResult:
        self.times.setdefault(t.key, []).append(self.clock.now)
        ok = self.alive.get(t.key, True)
        return ProbeResult(ok, "fake ok" if ok else "fake down")

    async def aclose(self) -> None:
        pass


@dataclass
class Rig:
    mgr: ProbeManager
    script: Script
    clock: FakeClock
    changes: list[tuple[float, str, bool, str]] = field(default_factory=list)

    def change(self, key: str, up: bool) -> tuple[float, str, bool, str] | None:
        return next((c for c in self.changes if c[1] == key and c[2] == up), None)


def _manager(clock: FakeClock, script: Script, on_change=None, spread: float = 0.05):
    return ProbeManager(on_change=on_change, first_probe_spread=spread, fast_tcp=False,
                        clock=clock, probers=script)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    clock = FakeClock()
    script = Script(clock)
    changes: list[tuple[float, str, bool, str]] = []
    mgr = _manager(clock, script, lambda t, up, why: changes.append((clock.now, t.key, up, why)))
    await mgr.start()
    yield Rig(mgr, script, clock, changes)
    await mgr.stop()


async def test_first_probe_is_spread_then_every_period(rig):
    t = ProbeTarget("a", "10.0.0.1", "tcp", 80, period=0.6)
    t0 = rig.clock.now
    rig.mgr.upsert(t)
    await rig.clock.sleep(5.0)
    times = rig.script.times["a"]
    assert t0 <= times[0] <= t0 + 0.05 + SLACK
    # the first success is followed by a jittered half-to-full period, then whole periods
    assert 0.3 - 1e-6 <= times[1] - times[0] <= 0.6 + SLACK
    gaps = [b - a for a, b in zip(times[1:], times[2:], strict=False)]
    assert gaps and all(abs(g - 0.6) <= SLACK for g in gaps), gaps
    assert rig.changes == [] and rig.mgr.status("a").up


async def test_down_after_retries_failures_and_up_on_first_success(rig):
    period, retries = 0.6, 2
    t = ProbeTarget("a", "10.0.0.1", "tcp", 80, period=period, retries=retries)
    rig.mgr.upsert(t)
    await rig.clock.sleep(1.3)  # settled into the steady period
    st = rig.mgr.status("a")
    assert st.up and st.probes >= 2 and st.state == "ok"
    died = rig.clock.now
    rig.script.alive["a"] = False
    await rig.clock.sleep_until(lambda: rig.change("a", False) is not None,
                                limit=period + (retries - 1) * t.fast_interval + 2 * SLACK)
    failed = rig.script.since("a", died)
    assert len(failed) == retries  # the first failure is re-checked at fast_interval, not later
    assert failed[0] - died <= period + SLACK
    assert abs(failed[1] - failed[0] - t.fast_interval) <= SLACK
    down = rig.change("a", False)
    assert down is not None and down[0] == failed[-1]  # down with the retries-th failure
    assert "fake down" in down[3] and f"{retries} consecutive" in down[3]
    st = rig.mgr.status("a")
    assert st.state == "nok" and not st.up and st.failures == retries
    back = rig.clock.now
    rig.script.alive["a"] = True
    await rig.clock.sleep(t.fast_interval + SLACK)
    up = rig.change("a", True)
    assert up is not None and up[0] == rig.script.since("a", back)[0]
    assert up[0] - back <= t.fast_interval + SLACK < period
    assert rig.mgr.status("a").state == "ok" and rig.mgr.status("a").failures == 0


async def test_first_probe_threshold_is_one_later_one_failure_is_not_enough(rig):
    rig.script.alive["new"] = False
    new = ProbeTarget("new", "10.0.0.2", "tcp", 80, period=5, retries=3)
    rig.mgr.upsert(new)
    await rig.clock.sleep(0.1)
    assert rig.script.calls("new") == 1
    down = rig.change("new", False)
    assert down is not None and down[0] == rig.script.times["new"][0]
    rig.script.alive["new"] = True
    await rig.clock.sleep(new.fast_interval + SLACK)  # re-probed at fast_interval (period/2)
    assert rig.script.calls("new") == 2
    assert rig.change("new", True) is not None
    rig.changes.clear()
    rig.mgr.upsert(ProbeTarget("flaky", "10.0.0.3", "tcp", 80, period=0.4, retries=2))
    await rig.clock.sleep(0.5)
    rig.script.alive["flaky"] = False
    await rig.clock.sleep_until(lambda: rig.mgr.status("flaky").failures == 1, limit=1.0)
    rig.script.alive["flaky"] = True
    await rig.clock.sleep(0.6)
    assert [c for c in rig.changes if c[1] == "flaky"] == []
    st = rig.mgr.status("flaky")
    assert st.up and st.failures == 0


async def test_none_type_is_never_probed_and_always_up(rig):
    rig.mgr.upsert(ProbeTarget("n", "10.0.0.4", "none", period=0.2))
    await rig.clock.sleep(2.0)
    assert rig.script.calls("n") == 0 and rig.mgr.status("n").state == "ok"


async def test_remove_stops_probing(rig):
    rig.mgr.upsert(ProbeTarget("r", "10.0.0.5", "tcp", 1, period=0.2))
    await rig.clock.sleep(0.3)
    assert rig.mgr.remove("r") and rig.mgr.status("r") is None
    n = rig.script.calls("r")
    assert n >= 1
    await rig.clock.sleep(2.0)
    assert rig.script.calls("r") == n and rig.mgr.targets() == []


async def test_new_parameters_reset_failures_and_probe_soon(rig):
    rig.mgr.upsert(ProbeTarget("p", "10.0.0.7", "tcp", 80, period=5, retries=3))
    await rig.clock.sleep(0.1)
    rig.script.alive["p"] = False
    await rig.clock.sleep_until(lambda: rig.mgr.status("p").failures == 1, limit=6.0)
    changed = rig.clock.now
    rig.mgr.upsert(ProbeTarget("p", "10.0.0.7", "tcp", 81, period=5, retries=3))
    assert rig.mgr.status("p").failures == 0
    await rig.clock.sleep(0.05 + SLACK)
    assert len(rig.script.since("p", changed)) == 1  # within first_probe_spread, not a period


async def test_red_verdict_forces_down_green_lifts(rig):
    key = "10.0.0.6_tcp_80"
    rig.mgr.upsert(ProbeTarget(key, "10.0.0.6", "tcp", 80, period=5))
    await rig.clock.sleep(0.1)
    assert rig.mgr.set_host_state("10.0.0.6", "red") == 1
    assert rig.mgr.status(key).state == "red"
    assert rig.changes[-1][1:3] == (key, False) and "red" in rig.changes[-1][3]
    rig.mgr.set_host_state("10.0.0.6", "yellow")
    assert rig.mgr.status(key).state == "red"
    await rig.clock.sleep(12.0)  # successful probes do not lift red
    assert rig.mgr.status(key).state == "red" and len(rig.changes) == 1
    assert rig.mgr.set_host_state("10.0.0.6", "green", 80, "tcp") == 1
    assert rig.mgr.status(key).up and rig.changes[-1][2] is True
    assert rig.mgr.set_host_state("10.0.0.6", "red", 81, "tcp") == 0
    assert rig.mgr.set_host_state("10.9.9.9", "red") == 0
    assert rig.mgr.status(key).up


async def test_status_times_come_from_the_clock(rig):
    rig.script.alive["w"] = False
    rig.mgr.upsert(ProbeTarget("w", "10.0.0.8", "tcp", 80, period=5))
    await rig.clock.sleep(0.1)
    st = rig.mgr.status("w")
    assert st.last_probe_time == EPOCH + rig.script.times["w"][0] == st.since
    assert st.last_ok is False and st.last_reason == "fake down"


@pytest.mark.parametrize(("vip", "ep"), [("20.0.0.1", "10.1.0.1"),
                                         ("2001:db8::10", "2001:db8:1::1"),  # NAT66
                                         ("2001:db8::10", "10.1.0.1")])  # NAT64
async def test_async_on_change_and_engine_sink(vip: str, ep: str):
    calls = []

    class Engine:
        def set_endpoint_state(self, ip, *, port, protocol, up):
            calls.append((ip, port, protocol, up))

    sink = engine_sink(Engine())
    got = []

    async def cb(t, up, why):
        sink(t, up, why)
        got.append(up)

    clock = FakeClock()
    script = Script(clock)
    mgr = _manager(clock, script, cb, spread=0.01)
    await mgr.start()
    entry = LoadBalancerEntry.model_validate({
        "serviceArguments": {"externalIP": vip, "port": 80, "protocol": "tcp",
                             "monitor": True},
        "endpoints": [{"endpointIP": ep, "targetPort": 8080, "weight": 1}]})
    targets = targets_for_rule(entry)
    for t in targets:
        script.alive[t.key] = False
    script.alive["apionly"] = False
    mgr.sync_rule("r1", targets)
    mgr.upsert(ProbeTarget("apionly", "10.1.0.2", "ping"))  # no LB endpoint: not passed on
    await clock.sleep(0.3)
    await mgr.stop()
    assert got.count(False) == 2
    assert calls == [(ep, 8080, "tcp", False)]


async def test_engine_sink_off_loop_in_order_with_on_down(caplog):
    calls: list[tuple[str, bool, str]] = []
    downs: list[str] = []

    class Engine:
        def set_endpoint_state(self, ip, *, port, protocol, up):
            calls.append((ip, up, threading.current_thread().name))
            if ip == "10.0.0.9":
                raise RuntimeError("engine says no")

    rule_made = ProbeTarget("k", "10.0.0.1", "tcp", 80, ep_proto="tcp", ep_port=80)
    broken = ProbeTarget("b", "10.0.0.9", "tcp", 80, ep_proto="tcp", ep_port=80)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="verdicts") as pool:
        sink = engine_sink(Engine(), executor=pool, on_down=lambda t: downs.append(t.key))
        with caplog.at_level(logging.ERROR, logger="pyloxi.probes"):
            for target, up in ((rule_made, False), (rule_made, True), (broken, False)):
                await sink(target, up, "why")
            await sink(ProbeTarget("h", "10.0.0.2", "ping"), False, "api-only host")
    assert [(ip, up) for ip, up, _ in calls] == [("10.0.0.1", False), ("10.0.0.1", True),
                                                 ("10.0.0.9", False)]
    assert all(name.startswith("verdicts") for _, _, name in calls)
    assert downs == ["k"]  # not after the engine failed
    assert "could not apply the verdict on b" in caplog.text


def test_targets_for_rule_conventions():
    def rule(**sa):
        base = {"externalIP": "20.0.0.1", "port": 80, "protocol": "tcp"}
        base.update(sa)
        return LoadBalancerEntry.model_validate({
            "serviceArguments": base,
            "endpoints": [{"endpointIP": "10.0.0.1", "targetPort": 8080, "weight": 1},
                          {"endpointIP": "10.0.0.2", "targetPort": 8081, "weight": 1}]})

    assert targets_for_rule(rule()) == []
    ts = targets_for_rule(rule(monitor=True))
    assert [(t.key, t.ptype, t.port, t.period, t.retries, t.ep_proto, t.ep_port) for t in ts] == [
        ("10.0.0.1_tcp_8080", "tcp", 8080, 10.0, 2, "tcp", 8080),
        ("10.0.0.2_tcp_8081", "tcp", 8081, 10.0, 2, "tcp", 8081)]
    # probetype other than none forces monitoring; probeport/req/resp/timeout/retries apply
    ts = targets_for_rule(rule(probetype="http", probeport=8000, probereq="health",
                               proberesp="ok", probeTimeout=3, probeRetries=4))
    assert (ts[0].key, ts[0].ptype, ts[0].port, ts[0].req, ts[0].resp, ts[0].period,
            ts[0].retries) == ("10.0.0.1_tcp_8080", "http", 8000, "health", "ok", 3.0, 4)
    ts = targets_for_rule(rule(protocol="udp", monitor=True, probetype="ping"))
    assert (ts[0].key, ts[0].ptype, ts[0].port) == ("10.0.0.1_udp_8080", "ping", 0)
    ts = targets_for_rule(rule(protocol="icmp", port=0, monitor=True))
    assert ts[0].key.startswith("10.0.0.1_ping_") and ts[0].ptype == "ping"
    ts = targets_for_rule(rule(protocol="sctp", monitor=True, probetype="tcp"))
    assert (ts[0].ptype, ts[0].port) == ("tcp", 8080)  # no probeport: the endpoint's port
    assert targets_for_rule(rule(probetype="none")) == []
    assert [t.ptype for t in targets_for_rule(rule(monitor=True, probetype="none"))] == [
        "none", "none"]


async def test_owners_override_and_refcount():
    mgr = ProbeManager()  # not started: configuration only
    api = EndpointAdapter(mgr)
    entry = LoadBalancerEntry.model_validate({
        "serviceArguments": {"externalIP": "20.0.0.1", "port": 80, "protocol": "sctp",
                             "monitor": True},
        "endpoints": [{"endpointIP": "31.31.31.1", "targetPort": 8080, "weight": 1}]})
    ts = targets_for_rule(entry)
    mgr.sync_rule("r1", ts)
    mgr.sync_rule("r2", ts)
    assert mgr.keys() == ["31.31.31.1_sctp_8080"]
    # loxilb cicd/sctpmh: override the rule-made probe by naming the rule key
    api.api_add(EndPoint(host_name="31.31.31.1", name="31.31.31.1_sctp_8080", probe_type="ping"))
    t = mgr.status("31.31.31.1_sctp_8080").target
    assert (t.ptype, t.ep_proto, t.ep_port) == ("ping", "sctp", 8080)
    api.api_delete("31.31.31.1", name="31.31.31.1_sctp_8080")  # reverts to the rule's probe
    assert mgr.status("31.31.31.1_sctp_8080").target.ptype == "sctp"
    with pytest.raises(Conflict):
        api.api_delete("31.31.31.1", name="31.31.31.1_sctp_8080")
    mgr.drop_rule("r1")
    assert mgr.keys() == ["31.31.31.1_sctp_8080"]
    mgr.drop_rule("r2")
    assert mgr.keys() == []


def test_timing_defaults():
    t = ProbeTarget("k", "10.0.0.1", "tcp", 80)
    assert (t.eff_period, t.eff_retries, t.eff_timeout, t.fast_interval) == (10, 2, 1, 5)
    worst = t.eff_period + (t.eff_retries - 1) * t.fast_interval + t.eff_timeout
    assert worst <= t.eff_period * t.eff_retries + 1
    t = ProbeTarget("k", "10.0.0.1", "tcp", 80, period=1, retries=0)
    assert (t.eff_retries, t.eff_timeout, t.fast_interval) == (2, 0.5, 0.5)


async def test_tcp_prober_on_loopback():
    """The one TCP prober: plain connects (the callback path) and request/response."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.read(5))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    tcp = TcpProber(LoopClock())
    try:
        assert (await tcp.probe("127.0.0.1", port, 1.0)).reason == "tcp connect ok"
        res = await tcp.probe("127.0.0.1", port, 1.0, "hello", "hello")
        assert (res.ok, res.reason) == (True, "tcp response matched")
        res = await tcp.probe("127.0.0.1", port, 1.0, "hello", "world")
        assert not res.ok and "mismatch" in res.reason
    finally:
        server.close()
        await server.wait_closed()
    res = await tcp.probe("127.0.0.1", port, 1.0)  # nothing listens there now
    assert (res.ok, res.reason) == (False, "tcp connection refused")
    res = await tcp.probe("127.0.0.1", port, 1.0, "hello", "hello")
    assert (res.ok, res.reason) == (False, "tcp connection refused")
    tcp.close()


def test_sctp_packets_match_scapy():
    from scapy.layers.inet import IP
    from scapy.layers.sctp import SCTP, SCTPChunkInit

    pkt = sctp_packet(40000, 3868, 0, init_chunk(0x11223344, 99))
    s = SCTP(pkt)
    assert s.sport == 40000 and s.dport == 3868 and s.tag == 0
    assert isinstance(s.payload, SCTPChunkInit) and s.payload.init_tag == 0x11223344
    rebuilt = SCTP(pkt)
    del rebuilt.chksum
    assert SCTP(bytes(rebuilt)).chksum == s.chksum  # scapy's CRC32c agrees with ours
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    ip = bytes(IP(src="1.1.1.1", dst="2.2.2.2", proto=132)) + sctp_packet(
        3868, 40000, 0x11223344, init_ack_chunk(0x55667788, 1))
    sport, dport, vtag, chunks = parse_sctp(ip, has_ip_header=True)
    assert (sport, dport, vtag) == (3868, 40000, 0x11223344)
    assert chunks[0][0] == 2 and struct.unpack("!I", chunks[0][1][:4])[0] == 0x55667788
    assert parse_sctp(sctp_packet(1, 2, 3, abort_chunk()), False)[3] == [(6, b"")]
    assert chunks and CHUNK_INIT == 1


def test_icmp_echo_request():
    from scapy.layers.inet import ICMP

    raw = echo_request(False, 0x1234, 7)
    assert inet_checksum(raw) == 0
    icmp = ICMP(raw)
    assert (icmp.type, icmp.id, icmp.seq) == (8, 0x1234, 7)
    assert echo_request(True, 1, 2)[0] == 128
