"""ProbeManager state machine and timing (probes replaced by a scripted fake), rule -> targets,
the endpoint-API adapter methods, and the packet helpers (CRC32c, ICMP, SCTP parsing)."""

from __future__ import annotations

import asyncio
import struct
import time

import pytest

from pyloxi.model.endpoint import EndPoint, EndPointHostState
from pyloxi.model.errors import Conflict, InvalidInput, NotFound
from pyloxi.model.lb import LoadBalancerEntry
from pyloxi.probes import ProbeManager, ProbeResult, ProbeTarget, engine_sink, targets_for_rule
from pyloxi.probes.icmp import echo_request, inet_checksum
from pyloxi.probes.sctp import (
    CHUNK_INIT,
    abort_chunk,
    crc32c,
    init_ack_chunk,
    init_chunk,
    parse_sctp,
    sctp_packet,
)
from pyloxi.probes.types import go_duration


class Script:
    """A fake peer: `alive[key]` decides each probe's outcome; probes are counted."""

    def __init__(self) -> None:
        self.alive: dict[str, bool] = {}
        self.calls: dict[str, int] = {}

    async def dispatch(self, t: ProbeTarget) -> ProbeResult:
        self.calls[t.key] = self.calls.get(t.key, 0) + 1
        await asyncio.sleep(0.005)
        ok = self.alive.get(t.key, True)
        return ProbeResult(ok, "fake ok" if ok else "fake down")


@pytest.fixture
async def rig():
    changes: list[tuple[float, str, bool, str]] = []
    mgr = ProbeManager(on_change=lambda t, up, why: changes.append(
        (time.monotonic(), t.key, up, why)), first_probe_spread=0.05, fast_tcp=False)
    script = Script()
    mgr._dispatch = script.dispatch  # type: ignore[method-assign]
    await mgr.start()
    yield mgr, script, changes
    await mgr.stop()


async def _wait_for(changes, key, up, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for when, k, u, _ in changes:
            if k == key and u == up:
                return when
        await asyncio.sleep(0.01)
    return None


async def test_down_within_bound_and_up_within_period(rig):
    mgr, script, changes = rig
    period, retries = 0.6, 2
    mgr.upsert(ProbeTarget("a", "10.0.0.1", "tcp", 80, period=period, retries=retries))
    await asyncio.sleep(0.3)
    assert mgr.status("a").up and mgr.status("a").probes >= 1
    await asyncio.sleep(1.0)  # settle into the steady period
    died = time.monotonic()
    script.alive["a"] = False
    when = await _wait_for(changes, "a", False, period * retries + 1)
    assert when is not None, "not marked down in time"
    assert when - died <= period + (retries - 1) * max(period / 2, 0.3) + 0.3 + 0.1
    st = mgr.status("a")
    assert st.state == "nok" and not st.up and st.failures >= retries
    assert "fake down" in changes[-1][3]
    back = time.monotonic()
    script.alive["a"] = True
    when = await _wait_for(changes, "a", True, period + 0.5)
    assert when is not None and when - back <= period
    assert mgr.status("a").state == "ok"


async def test_single_failure_is_not_enough_but_first_probe_threshold_is_one(rig):
    mgr, script, changes = rig
    script.alive["new"] = False
    mgr.upsert(ProbeTarget("new", "10.0.0.2", "tcp", 80, period=5, retries=3))
    assert await _wait_for(changes, "new", False, 1.0) is not None  # threshold 1 on first probe
    script.alive["new"] = True
    assert await _wait_for(changes, "new", True, 3.0) is not None  # re-probed at period/2
    changes.clear()
    # Later on, one failed probe among successes does not take it down.
    mgr.upsert(ProbeTarget("flaky", "10.0.0.3", "tcp", 80, period=0.4, retries=2))
    await asyncio.sleep(0.5)
    script.alive["flaky"] = False
    while mgr.status("flaky").failures == 0:
        await asyncio.sleep(0.01)
    script.alive["flaky"] = True
    await asyncio.sleep(0.6)
    assert not [c for c in changes if c[1] == "flaky"]


async def test_none_type_is_never_probed_and_always_up(rig):
    mgr, script, _ = rig
    mgr.upsert(ProbeTarget("n", "10.0.0.4", "none", period=0.2))
    await asyncio.sleep(0.4)
    assert "n" not in script.calls and mgr.status("n").state == "ok"


async def test_remove_stops_probing(rig):
    mgr, script, _ = rig
    mgr.upsert(ProbeTarget("r", "10.0.0.5", "tcp", 1, period=0.2))
    await asyncio.sleep(0.3)
    assert mgr.remove("r") and mgr.status("r") is None
    n = script.calls["r"]
    await asyncio.sleep(0.4)
    assert script.calls["r"] == n and mgr.targets() == []


async def test_red_verdict_forces_down_green_lifts(rig):
    mgr, _, changes = rig
    mgr.upsert(ProbeTarget("10.0.0.6_tcp_80", "10.0.0.6", "tcp", 80, period=5))
    await asyncio.sleep(0.1)
    mgr.api_host_state(EndPointHostState(host_name="10.0.0.6", state="red"))
    assert mgr.status("10.0.0.6_tcp_80").state == "red"
    assert changes[-1][1:3] == ("10.0.0.6_tcp_80", False)
    assert "red" in changes[-1][3]
    mgr.api_host_state(EndPointHostState(host_name="10.0.0.6", state="yellow"))
    assert mgr.status("10.0.0.6_tcp_80").state == "red"
    mgr.api_host_state(EndPointHostState(host_name="10.0.0.6", ep_port=80, ep_proto="tcp",
                                         state="green"))
    assert mgr.status("10.0.0.6_tcp_80").up and changes[-1][2] is True
    with pytest.raises(InvalidInput):
        mgr.api_host_state(EndPointHostState(host_name="10.0.0.6", ep_port=80, state="red"))
    with pytest.raises(InvalidInput):
        mgr.api_host_state(EndPointHostState(host_name="10.0.0.6", state="blue"))
    with pytest.raises(NotFound):
        mgr.api_host_state(EndPointHostState(host_name="10.9.9.9", state="red"))
    assert mgr.status("10.0.0.6_tcp_80").up


async def test_async_on_change_and_engine_sink():
    calls = []

    class Engine:
        def set_endpoint_state(self, ip, *, port, protocol, up):
            calls.append((ip, port, protocol, up))

    sink = engine_sink(Engine())
    got = []

    async def cb(t, up, why):
        sink(t, up, why)
        got.append(up)

    mgr = ProbeManager(on_change=cb, first_probe_spread=0.01, fast_tcp=False)

    async def dead(t):
        return ProbeResult(False, "dead")

    mgr._dispatch = dead  # type: ignore[method-assign]
    await mgr.start()
    entry = LoadBalancerEntry.model_validate({
        "serviceArguments": {"externalIP": "20.0.0.1", "port": 80, "protocol": "tcp",
                             "monitor": True},
        "endpoints": [{"endpointIP": "10.1.0.1", "targetPort": 8080, "weight": 1}]})
    mgr.sync_rule("r1", targets_for_rule(entry))
    mgr.upsert(ProbeTarget("apionly", "10.1.0.2", "ping"))  # no LB endpoint: not passed on
    await asyncio.sleep(0.3)
    await mgr.stop()
    assert got.count(False) == 2
    assert calls == [("10.1.0.1", 8080, "tcp", False)]


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
    entry = LoadBalancerEntry.model_validate({
        "serviceArguments": {"externalIP": "20.0.0.1", "port": 80, "protocol": "sctp",
                             "monitor": True},
        "endpoints": [{"endpointIP": "31.31.31.1", "targetPort": 8080, "weight": 1}]})
    ts = targets_for_rule(entry)
    mgr.sync_rule("r1", ts)
    mgr.sync_rule("r2", ts)
    assert mgr.keys() == ["31.31.31.1_sctp_8080"]
    # loxilb cicd/sctpmh: override the rule-made probe by naming the rule key
    mgr.api_add(EndPoint(host_name="31.31.31.1", name="31.31.31.1_sctp_8080", probe_type="ping"))
    t = mgr.status("31.31.31.1_sctp_8080").target
    assert (t.ptype, t.ep_proto, t.ep_port) == ("ping", "sctp", 8080)
    mgr.api_delete("31.31.31.1", name="31.31.31.1_sctp_8080")  # reverts to the rule's probe
    assert mgr.status("31.31.31.1_sctp_8080").target.ptype == "sctp"
    with pytest.raises(Conflict):
        mgr.api_delete("31.31.31.1", name="31.31.31.1_sctp_8080")
    mgr.drop_rule("r1")
    assert mgr.keys() == ["31.31.31.1_sctp_8080"]
    mgr.drop_rule("r2")
    assert mgr.keys() == []


def test_api_add_validation_and_keys():
    mgr = ProbeManager()
    t = mgr.api_add(EndPoint.model_validate({"HOSTNAME": "10.0.0.9", "probetype": "tcp",
                                             "probeport": 80, "probeDuration": 5,
                                             "inactiveReTries": 3}))
    assert (t.key, t.period, t.retries) == ("10.0.0.9_tcp_80", 5.0, 3)
    assert mgr.api_add(EndPoint(host_name="10.0.0.9", probe_type="https")).key == \
        "10.0.0.9_https_443"
    assert mgr.api_add(EndPoint(host_name="fd00::0:1")).key == "fd00::1_ping_0"
    bad = [dict(host_name="nope"), dict(host_name="10.0.0.9", probe_type="icmp"),
           dict(host_name="10.0.0.9", probe_type="tcp"),
           dict(host_name="10.0.0.9", probe_type="ping", inactive_retries=101),
           dict(host_name="10.0.0.9", probe_type="ping", probe_duration=86401),
           dict(host_name="10.0.0.9", probe_type="udp", probe_port=70000)]
    for kw in bad:
        with pytest.raises(InvalidInput):
            mgr.api_add(EndPoint(**kw))
    assert sorted(mgr.keys()) == ["10.0.0.9_https_443", "10.0.0.9_tcp_80", "fd00::1_ping_0"]
    with pytest.raises(NotFound):
        mgr.api_delete("10.0.0.9", probe_type="udp", probe_port=80)
    mgr.api_delete("10.0.0.9", probe_type="tcp", probe_port=80)
    mgr.api_delete("fd00::1")  # defaults: ping, port 0
    assert mgr.keys() == ["10.0.0.9_https_443"]
    (entry,) = mgr.api_list()
    assert entry.wire()["currState"] == "ok" and entry.wire()["probePort"] == 443


def test_timing_defaults():
    t = ProbeTarget("k", "10.0.0.1", "tcp", 80)
    assert (t.eff_period, t.eff_retries, t.eff_timeout, t.fast_interval) == (10, 2, 1, 5)
    worst = t.eff_period + (t.eff_retries - 1) * t.fast_interval + t.eff_timeout
    assert worst <= t.eff_period * t.eff_retries + 1
    t = ProbeTarget("k", "10.0.0.1", "tcp", 80, period=1, retries=0)
    assert (t.eff_retries, t.eff_timeout, t.fast_interval) == (2, 0.5, 0.5)


def test_go_duration():
    assert go_duration(0) == "0s"
    assert go_duration(0.000000850) == "850ns"
    assert go_duration(0.0000125) == "12.5µs"
    assert go_duration(0.001234) == "1.234ms"
    assert go_duration(2.5) == "2.5s"


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
