"""The endpoint routes' side of the probe manager: loxilb's EndPoint wire objects in, probe
targets to the manager, its statuses back out as EndPointGetEntry.

The api layer may not import the probes layer, so the manager is reached through ProbeBook, the
part of pyloxi.probes.ProbeManager these routes use; its targets and statuses are read through
the TargetView and StatusView protocols.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar

from pyloxi.model.endpoint import (
    HOST_STATES,
    EndPoint,
    EndPointGetEntry,
    EndPointHostState,
)
from pyloxi.model.errors import Conflict, InvalidInput, NotFound

# The owner whose spec the manager lets win over the rules' (pyloxi.probes.owners.API_OWNER;
# a unit test keeps the two equal).
API_OWNER = "api"

T = TypeVar("T")


class TargetView(Protocol):
    @property
    def key(self) -> str: ...
    @property
    def ip(self) -> str: ...
    @property
    def ptype(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def req(self) -> str: ...
    @property
    def resp(self) -> str: ...
    @property
    def eff_period(self) -> float: ...
    @property
    def eff_retries(self) -> int: ...


class StatusView(Protocol):
    @property
    def key(self) -> str: ...
    @property
    def target(self) -> TargetView: ...
    @property
    def state(self) -> str: ...
    @property
    def last_probe_time(self) -> float | None: ...
    @property
    def last_ok(self) -> bool | None: ...
    @property
    def last_reason(self) -> str: ...
    @property
    def rtt_min(self) -> float | None: ...
    @property
    def rtt_avg(self) -> float | None: ...
    @property
    def rtt_max(self) -> float | None: ...
    @property
    def owners(self) -> tuple[str, ...]: ...


class ProbeBook(Protocol[T]):
    def new_target(self, *, key: str, ip: str, ptype: str, port: int, req: str, resp: str,
                   period: float, retries: int) -> T:
        """period/retries 0 mean the manager's defaults."""
        ...

    def upsert(self, target: T, owner: str = ...) -> None: ...
    def remove(self, key: str, owner: str | None = None) -> bool: ...
    def status(self, key: str) -> StatusView | None: ...
    def statuses(self) -> Sequence[StatusView]: ...
    def set_host_state(self, ip: str, state: str, port: int | None = None,
                       proto: str | None = None) -> int: ...


class EndpointAdapter(Generic[T]):
    """The four endpoint routes' operations, in loxilb's terms and with its error reasons."""

    def __init__(self, book: ProbeBook[T]) -> None:
        self._book = book

    def api_add(self, ep: EndPoint) -> T:
        """POST /config/endpoint. Raises InvalidInput (400) and changes nothing on bad input."""
        ip = ep.host_name  # the model's canonical text form
        ptype = str(ep.probe_type or "ping")
        port = ep.probe_port
        if ptype in ("tcp", "udp", "sctp") and port == 0:
            raise InvalidInput("host-args unknown probe port: probePort is required for "
                               f"{ptype} probes")
        if ptype in ("http", "https") and port == 0:
            port = 80 if ptype == "http" else 443
        target = self._book.new_target(
            key=ep.name or f"{ip}_{ptype}_{port}", ip=ip, ptype=ptype, port=port,
            req=ep.probe_req, resp=ep.probe_resp,
            period=float(ep.probe_duration), retries=ep.inactive_retries,
        )
        self._book.upsert(target, API_OWNER)
        return target

    def api_delete(self, ip: str, name: str = "", probe_type: str = "",
                   probe_port: int = 0) -> None:
        """DELETE /config/endpoint/epipaddress/{ip}."""
        addr = _parse_ip(ip)
        key = name or f"{addr}_{(probe_type or 'ping').lower()}_{probe_port}"
        status = self._book.status(key)
        if status is None:
            raise NotFound(f"host-notfound error: no endpoint {key}")
        if API_OWNER in status.owners:
            self._book.remove(key, API_OWNER)
            return
        raise Conflict(f"LB Rule-referred: endpoint {key} is probed for a load-balancer rule")

    def api_list(self) -> list[EndPointGetEntry]:
        return [_entry(s) for s in self._book.statuses()]

    def api_host_state(self, hs: EndPointHostState) -> int:
        """POST /config/endpointhoststate."""
        ip = hs.host_name  # the model's canonical text form
        state = hs.state.lower()
        if state not in HOST_STATES:
            raise InvalidInput(f"invalid state {hs.state!r}: expected green, yellow or red")
        given = (hs.ep_port != 0, bool(hs.ep_proto))
        if given[0] != given[1]:
            raise InvalidInput("invalid epPort/epProto: give both or neither")
        port = hs.ep_port if given[0] else None
        proto = hs.ep_proto if given[1] else None
        matched = self._book.set_host_state(ip, state, port, proto)
        if not matched:
            raise NotFound(f"host-notfound error: no endpoint for {ip}")
        return matched


def _entry(s: StatusView) -> EndPointGetEntry:
    t = s.target
    ping = t.ptype == "ping"
    last = ""
    if s.last_probe_time is not None:
        last = dt.datetime.fromtimestamp(s.last_probe_time, dt.UTC).isoformat(
            timespec="milliseconds").replace("+00:00", "Z")
    return EndPointGetEntry(  # wire names type-check with and without the pydantic mypy plugin
        hostName=t.ip, name=s.key, inactiveReTries=t.eff_retries,
        probeType=t.ptype, probeReq=t.req, probeResp=t.resp,
        probeDuration=int(round(t.eff_period)), probePort=t.port,
        minDelay=go_duration(s.rtt_min or 0.0) if ping else "",
        avgDelay=go_duration(s.rtt_avg or 0.0) if ping else "",
        maxDelay=go_duration(s.rtt_max or 0.0) if ping else "",
        currState=s.state, lastProbeTime=last,
        lastProbeResult="" if s.last_ok is None else ("success" if s.last_ok else "failure"),
        reason=s.last_reason,
    )


def _parse_ip(text: str) -> str:
    try:
        return ipaddress.ip_address(text.strip()).compressed
    except ValueError:
        raise InvalidInput(f"host-parse error: hostName {text!r} is not an IP address") from None


def go_duration(seconds: float) -> str:
    """Format like Go's time.Duration.String(): "0s", "850ns", "12.5µs", "1.234ms", "2.5s"."""
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    if ns < 1_000:
        return f"{ns}ns"
    if ns < 1_000_000:
        return _trim(f"{ns / 1e3:.3f}") + "µs"
    if ns < 1_000_000_000:
        return _trim(f"{ns / 1e6:.6f}") + "ms"
    return _trim(f"{ns / 1e9:.9f}") + "s"


def _trim(text: str) -> str:
    return text.rstrip("0").rstrip(".") if "." in text else text
