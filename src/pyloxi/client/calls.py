"""The /netlox/v1 calls without I/O: what each operation sends, and how an answer is read.

`Client` and `AsyncClient` differ only in how they wait; both send `build_request(call)` and
hand the answer to `decode(call, response)` (or a failure to `transport_error`), so a rule about
paths, bodies or errors is written once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from pyloxi.client.errors import ApiError, Conflict, NotFound, Unreachable, error_class
from pyloxi.model.lb import LoadBalancerEntry

API_PREFIX = "/netlox/v1"
LB_PATH = "/config/loadbalancer"
EP_PATH = "/config/endpoint"
CT_PATH = "/config/conntrack"
CISTATE_PATH = "/config/cistate"
BGP_PATH = "/config/bgp"
SUCCESS = "Success"

T = TypeVar("T")


def _raw(data: Any) -> Any:
    return data


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One request below /netlox/v1 and how to read its answer."""

    method: str
    path: str
    body: Any = None
    params: Mapping[str, Any] | None = None
    read: Callable[[Any], T] = field(default=_raw)  # decoded JSON -> the operation's result
    # Errors that mean the call's intent already holds (a create of a rule that is there, a
    # delete of one that is gone): answered as success, with `read(None)`.
    done_if: tuple[type[ApiError], ...] = ()


def path_segment(value: str) -> str:
    """One URL path segment (IPv6 colons stay; '/' and the like are escaped)."""
    return quote(value, safe=":")


def attr_list(data: Any, key: str) -> list[dict[str, Any]]:
    """The list under `key` of a list answer ({"lbAttr": [...]}), key letter case ignored."""
    if isinstance(data, dict):
        for k, v in data.items():
            if isinstance(k, str) and k.lower() == key.lower():
                return list(v or [])
    return []


def _none(_data: Any) -> None:
    return None


def rule_body(entry: LoadBalancerEntry) -> dict[str, Any]:
    """The POST body of a rule: its wire form without output-only endpoint fields and nulls."""
    body = entry.wire()
    for ep in body["endpoints"]:
        ep.pop("state", None)
        ep.pop("counter", None)
    return {k: v for k, v in body.items() if v is not None}


# ---- operations -------------------------------------------------------------------------------


def version() -> Call[Any]:
    return Call("GET", "/version")


def list_loadbalancers() -> Call[list[dict[str, Any]]]:
    return Call("GET", f"{LB_PATH}/all", read=lambda d: attr_list(d, "lbAttr"))


def create_loadbalancer(
    entry: LoadBalancerEntry | Mapping[str, Any], *, exist_ok: bool = False
) -> Call[None]:
    body = rule_body(entry) if isinstance(entry, LoadBalancerEntry) else dict(entry)
    return Call("POST", LB_PATH, body=body, read=_none, done_if=(Conflict,) if exist_ok else ())


def loadbalancer_path(
    vip: str, port: int, protocol: str, *, port_max: int = 0, host: str = ""
) -> str:
    """The path naming one rule by its key (loxicmd's delete path)."""
    prefix = f"{LB_PATH}/hosturl/{path_segment(host)}" if host else LB_PATH
    path = f"{prefix}/externalipaddress/{path_segment(vip)}/port/{port}"
    if port_max:
        path += f"/portmax/{port_max}"
    return f"{path}/protocol/{path_segment(protocol)}"


def delete_loadbalancer(
    vip: str,
    port: int,
    protocol: str,
    *,
    block: int = 0,
    port_max: int = 0,
    bgp: bool = False,
    host: str = "",
    missing_ok: bool = False,
) -> Call[None]:
    params: dict[str, Any] = {"block": block}
    if bgp:
        params["bgp"] = "true"
    return _delete(loadbalancer_path(vip, port, protocol, port_max=port_max, host=host),
                   params, missing_ok)


def delete_loadbalancer_by_name(name: str, *, missing_ok: bool = False) -> Call[None]:
    return _delete(f"{LB_PATH}/name/{path_segment(name)}", None, missing_ok)


def delete_all_loadbalancers() -> Call[None]:
    return _delete(f"{LB_PATH}/all", None, False)


def list_conntrack() -> Call[list[dict[str, Any]]]:
    return Call("GET", f"{CT_PATH}/all", read=lambda d: attr_list(d, "ctAttr"))


def list_endpoints() -> Call[list[dict[str, Any]]]:
    return Call("GET", f"{EP_PATH}/all", read=lambda d: attr_list(d, "Attr"))


def create_endpoint(body: Mapping[str, Any]) -> Call[None]:
    return Call("POST", EP_PATH, body=dict(body), read=_none)


def delete_endpoint(
    host: str, *, probe_type: str = "ping", probe_port: int = 0, name: str = ""
) -> Call[None]:
    params: dict[str, Any] = {"probe_port": probe_port}
    if name:
        params["name"] = name
    params["probe_type"] = probe_type
    return _delete(f"{EP_PATH}/epipaddress/{path_segment(host)}", params, False)


def list_cistates() -> Call[list[dict[str, Any]]]:
    """This node's state in each HA instance ({"Attr": [{instance, state, vip}]})."""
    return Call("GET", f"{CISTATE_PATH}/all", read=lambda d: attr_list(d, "Attr"))


def set_cistate(instance: str, state: str, vip: str = "0.0.0.0") -> Call[None]:
    return Call("POST", CISTATE_PATH, body={"instance": instance, "state": state, "vip": vip},
                read=_none)


def set_bgp_global(router_id: str, local_as: int) -> Call[None]:
    """BGP's global config; the same config again is no change (an "exists" answer is done)."""
    return Call("POST", f"{BGP_PATH}/global", body={"routerId": router_id, "localAs": local_as},
                read=_none, done_if=(Conflict,))


def list_bgp_neighbors() -> Call[list[dict[str, Any]]]:
    return Call("GET", f"{BGP_PATH}/neigh/all", read=lambda d: attr_list(d, "bgpNeiAttr"))


def create_bgp_neighbor(ip: str, remote_as: int, *, exist_ok: bool = False) -> Call[None]:
    return Call("POST", f"{BGP_PATH}/neigh", body={"ipAddress": ip, "remoteAs": remote_as},
                read=_none, done_if=(Conflict,) if exist_ok else ())


def _delete(path: str, params: Mapping[str, Any] | None, missing_ok: bool) -> Call[None]:
    return Call("DELETE", path, params=params, read=_none,
                done_if=(NotFound,) if missing_ok else ())


# ---- the wire -----------------------------------------------------------------------------------


def build_request(call: Call[Any], base_url: str, timeout: float) -> httpx.Request:
    return httpx.Request(
        call.method,
        base_url.rstrip("/") + API_PREFIX + call.path,
        json=call.body,
        params=dict(call.params) if call.params else None,
        headers={"Accept": "application/json"},
        extensions={"timeout": httpx.Timeout(timeout).as_dict()},
    )


def _error_message(resp: httpx.Response, body: Any) -> str:
    if isinstance(body, dict):
        for key in ("message", "result", "detail"):
            if isinstance(body.get(key), str) and body[key]:
                return str(body[key])
    text = resp.text.strip().splitlines()
    return text[0] if text else f"HTTP {resp.status_code} {resp.reason_phrase}"


def decode(call: Call[T], resp: httpx.Response, base_url: str) -> T:
    """The call's result from an answer, or the ApiError the answer means."""
    try:
        body = resp.json() if resp.content else None
        parsed = True
    except ValueError:
        body, parsed = None, False
    failed = resp.status_code >= 400
    if not failed and call.method != "GET" and isinstance(body, dict):
        # loxilb's writes answer 200 either way; `result` says whether it worked
        result = body.get("result")
        failed = isinstance(result, str) and result != SUCCESS
    if failed:
        message = _error_message(resp, body)
        cls = error_class(resp.status_code, message)
        exc = cls(resp.status_code, message, call.method, str(resp.request.url))
        if isinstance(exc, call.done_if):
            return call.read(None)
        raise exc
    if not parsed:
        raise Unreachable(f"the API at {base_url} answered with non-JSON data", call.method,
                          str(resp.request.url))
    return call.read({} if body is None else body)


def transport_error(
    call: Call[Any], exc: httpx.HTTPError, base_url: str, timeout: float
) -> Unreachable:
    """The Unreachable a failed exchange means (no answer to read)."""
    url = base_url.rstrip("/") + API_PREFIX + call.path
    if isinstance(exc, httpx.ConnectError):
        reason = str(exc) or "connection failed"
        message = f"cannot connect to the pyloxi API at {base_url}: {reason}"
    elif isinstance(exc, httpx.TimeoutException):
        message = f"no answer from the pyloxi API at {base_url} within {timeout:g}s"
    else:
        message = f"request to {base_url} failed: {exc}"
    return Unreachable(message, call.method, url)
