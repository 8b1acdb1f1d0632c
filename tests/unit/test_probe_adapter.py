"""The endpoint API's adapter to the probe manager: EndPoint in (validation, loxilb's keys),
statuses out as EndPointGetEntry, external verdicts, and its errors."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from pydantic import ValidationError

from pyloxi.api.probe_adapter import API_OWNER, EndpointAdapter, go_duration
from pyloxi.model.endpoint import EndPoint, EndPointHostState
from pyloxi.model.errors import Conflict, InvalidInput, NotFound
from pyloxi.probes import API_OWNER as MANAGER_API_OWNER
from pyloxi.probes import ProbeManager, ProbeTarget


def test_owner_name_is_the_one_the_manager_lets_win():
    assert API_OWNER == MANAGER_API_OWNER


def test_api_add_validation_and_keys():
    mgr = ProbeManager()
    api = EndpointAdapter(mgr)
    t = api.api_add(EndPoint.model_validate({"HOSTNAME": "10.0.0.9", "probetype": "tcp",
                                             "probeport": 80, "probeDuration": 5,
                                             "inactiveReTries": 3}))
    assert (t.key, t.period, t.retries) == ("10.0.0.9_tcp_80", 5.0, 3)
    t = api.api_add(EndPoint(host_name="10.0.0.9", probe_type="https"))
    assert (t.key, t.period, t.retries) == ("10.0.0.9_https_443", 10.0, 2)  # the defaults
    assert api.api_add(EndPoint(host_name="fd00::0:1")).key == "fd00::1_ping_0"
    refused_by_the_model = [
        {"hostName": "nope"}, {"hostName": "10.0.0.9", "probeType": "icmp"},
        {"hostName": "10.0.0.9", "probeType": "ping", "inactiveReTries": 101},
        {"hostName": "10.0.0.9", "probeType": "ping", "probeDuration": 86401},
        {"hostName": "10.0.0.9", "probeType": "udp", "probePort": 70000}]
    for body in refused_by_the_model:
        with pytest.raises(ValidationError):
            EndPoint.model_validate(body)
    with pytest.raises(InvalidInput, match="probePort is required"):
        api.api_add(EndPoint(host_name="10.0.0.9", probe_type="tcp"))
    assert sorted(mgr.keys()) == ["10.0.0.9_https_443", "10.0.0.9_tcp_80", "fd00::1_ping_0"]
    with pytest.raises(NotFound):
        api.api_delete("10.0.0.9", probe_type="udp", probe_port=80)
    api.api_delete("10.0.0.9", probe_type="tcp", probe_port=80)
    api.api_delete("fd00::1")  # defaults: ping, port 0
    assert mgr.keys() == ["10.0.0.9_https_443"]
    (entry,) = api.api_list()
    assert entry.wire()["currState"] == "ok" and entry.wire()["probePort"] == 443


def test_rule_made_target_cannot_be_deleted_through_the_api():
    mgr = ProbeManager()
    mgr.upsert(ProbeTarget("10.0.0.1_tcp_80", "10.0.0.1", "tcp", 80, ep_proto="tcp",
                           ep_port=80), owner="rule:r1")
    with pytest.raises(Conflict):
        EndpointAdapter(mgr).api_delete("10.0.0.1", probe_type="tcp", probe_port=80)
    assert mgr.keys() == ["10.0.0.1_tcp_80"]


async def test_host_state_validation():
    mgr = ProbeManager()
    api = EndpointAdapter(mgr)
    mgr.upsert(ProbeTarget("10.0.0.6_tcp_80", "10.0.0.6", "tcp", 80, period=5))
    assert api.api_host_state(EndPointHostState(host_name="10.0.0.6", state="RED")) == 1
    assert mgr.status("10.0.0.6_tcp_80").state == "red"
    assert api.api_host_state(EndPointHostState(host_name="10.0.0.6", ep_port=80,
                                                ep_proto="tcp", state="green")) == 1
    assert mgr.status("10.0.0.6_tcp_80").up
    for hs in (EndPointHostState(host_name="10.0.0.6", ep_port=80, state="red"),
               EndPointHostState(host_name="10.0.0.6", ep_proto="tcp", state="red"),
               EndPointHostState(host_name="10.0.0.6", state="blue")):
        with pytest.raises(InvalidInput):
            api.api_host_state(hs)
    with pytest.raises(NotFound):
        api.api_host_state(EndPointHostState(host_name="10.9.9.9", state="red"))
    assert mgr.status("10.0.0.6_tcp_80").up


@dataclass(frozen=True)
class _Status:
    key: str
    target: ProbeTarget
    state: str
    last_probe_time: float | None
    last_ok: bool | None
    last_reason: str
    rtt_min: float | None
    rtt_avg: float | None
    rtt_max: float | None
    owners: tuple[str, ...] = (API_OWNER,)


class _Book:
    """A manager that has probed: statuses as the listing sees them."""

    def __init__(self, *statuses: _Status) -> None:
        self._statuses = list(statuses)

    def statuses(self) -> list[_Status]:
        return self._statuses


def test_listing_renders_loxilb_fields():
    ping = _Status("p", ProbeTarget("p", "10.0.0.1", "ping", period=4.6, retries=0), "ok",
                   1_700_000_000.1234, True, "ping reply", 0.0001, 0.000125, 0.0015)
    tcp = _Status("t", ProbeTarget("t", "10.0.0.2", "tcp", 80, req="a", resp="b"), "nok",
                  None, None, "", None, None, None)
    p, t = (e.wire() for e in EndpointAdapter(_Book(ping, tcp)).api_list())
    assert (p["hostName"], p["name"], p["probeType"], p["probeDuration"],
            p["inactiveReTries"]) == ("10.0.0.1", "p", "ping", 5, 2)
    assert (p["minDelay"], p["avgDelay"], p["maxDelay"]) == ("100µs", "125µs", "1.5ms")
    assert p["lastProbeTime"] == "2023-11-14T22:13:20.123Z"
    assert (p["lastProbeResult"], p["reason"], p["currState"]) == ("success", "ping reply", "ok")
    assert (t["minDelay"], t["lastProbeTime"], t["lastProbeResult"]) == ("", "", "")
    assert (t["probePort"], t["probeReq"], t["probeResp"], t["currState"]) == (80, "a", "b",
                                                                               "nok")


def test_go_duration():
    assert go_duration(0) == "0s"
    assert go_duration(0.000000850) == "850ns"
    assert go_duration(0.0000125) == "12.5µs"
    assert go_duration(0.001234) == "1.234ms"
    assert go_duration(2.5) == "2.5s"
