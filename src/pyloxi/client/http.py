"""`Client` (blocking) and `AsyncClient` (asyncio) for one /netlox/v1 server, on httpx.

Both only send: what a call puts on the wire and what its answer means live in `calls`, so the
two classes are the same list of one-line operations. Tests pass an httpx (Async)MockTransport.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any, Self, TypeVar

import httpx

from pyloxi.client import calls
from pyloxi.client.calls import Call
from pyloxi.model.lb import LoadBalancerEntry

T = TypeVar("T")
Rule = LoadBalancerEntry | Mapping[str, Any]


def tls_verify(ca_file: str | None) -> ssl.SSLContext | bool:
    """https: the server's certificate checked against `ca_file` only, if given (a private
    CA, or the server's own self-signed certificate), else against httpx's default CAs."""
    return ssl.create_default_context(cafile=ca_file) if ca_file else True


class _Base:
    def __init__(self, base_url: str, timeout: float, token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        # the token goes in the Authorization header as loxilb's BearerAuth (RFC 6750 form)
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}

    def _build(self, call: Call[Any]) -> httpx.Request:
        request = calls.build_request(call, self.base_url, self.timeout)
        request.headers.update(self._auth)
        return request

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url})"


class Client(_Base):
    """Blocking client of one pyloxi (or loxilb) API."""

    def __init__(self, base_url: str, *, timeout: float = 10.0,
                 transport: httpx.BaseTransport | None = None, token: str | None = None,
                 ca_file: str | None = None) -> None:
        super().__init__(base_url, timeout, token)
        self._http = httpx.Client(transport=transport, verify=tls_verify(ca_file))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def send(self, call: Call[T]) -> T:
        request = self._build(call)
        try:
            resp = self._http.send(request)
        except httpx.HTTPError as exc:
            raise calls.transport_error(call, exc, self.base_url, self.timeout) from None
        return calls.decode(call, resp, self.base_url)

    # generic requests: the decoded JSON body
    def request(self, method: str, path: str, *, body: Any = None,
                params: Mapping[str, Any] | None = None) -> Any:
        return self.send(Call(method, path, body, params))

    def get(self, path: str, *, params: Mapping[str, Any] | None = None) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any, *, params: Mapping[str, Any] | None = None) -> Any:
        return self.request("POST", path, body=body, params=params)

    def delete(self, path: str, *, params: Mapping[str, Any] | None = None) -> Any:
        return self.request("DELETE", path, params=params)

    # operations
    def version(self) -> Any:
        return self.send(calls.version())

    def list_loadbalancers(self) -> list[dict[str, Any]]:
        return self.send(calls.list_loadbalancers())

    def create_loadbalancer(self, entry: Rule, *, exist_ok: bool = False) -> None:
        self.send(calls.create_loadbalancer(entry, exist_ok=exist_ok))

    def delete_loadbalancer(self, vip: str, port: int, protocol: str, *, block: int = 0,
                            port_max: int = 0, bgp: bool = False, host: str = "",
                            missing_ok: bool = False) -> None:
        self.send(calls.delete_loadbalancer(vip, port, protocol, block=block, port_max=port_max,
                                            bgp=bgp, host=host, missing_ok=missing_ok))

    def delete_loadbalancer_by_name(self, name: str, *, missing_ok: bool = False) -> None:
        self.send(calls.delete_loadbalancer_by_name(name, missing_ok=missing_ok))

    def delete_all_loadbalancers(self) -> None:
        self.send(calls.delete_all_loadbalancers())

    def list_conntrack(self) -> list[dict[str, Any]]:
        return self.send(calls.list_conntrack())

    def list_endpoints(self) -> list[dict[str, Any]]:
        return self.send(calls.list_endpoints())

    def create_endpoint(self, body: Mapping[str, Any]) -> None:
        self.send(calls.create_endpoint(body))

    def delete_endpoint(self, host: str, *, probe_type: str = "ping", probe_port: int = 0,
                        name: str = "") -> None:
        self.send(calls.delete_endpoint(host, probe_type=probe_type, probe_port=probe_port,
                                        name=name))

    def list_cistates(self) -> list[dict[str, Any]]:
        return self.send(calls.list_cistates())

    def set_cistate(self, instance: str, state: str, vip: str = "0.0.0.0") -> None:
        self.send(calls.set_cistate(instance, state, vip))

    def set_bgp_global(self, router_id: str, local_as: int) -> None:
        self.send(calls.set_bgp_global(router_id, local_as))

    def list_bgp_neighbors(self) -> list[dict[str, Any]]:
        return self.send(calls.list_bgp_neighbors())

    def create_bgp_neighbor(self, ip: str, remote_as: int, *, exist_ok: bool = False) -> None:
        self.send(calls.create_bgp_neighbor(ip, remote_as, exist_ok=exist_ok))


class AsyncClient(_Base):
    """asyncio client of one pyloxi (or loxilb) API."""

    def __init__(self, base_url: str, *, timeout: float = 5.0,
                 transport: httpx.AsyncBaseTransport | None = None, token: str | None = None,
                 ca_file: str | None = None) -> None:
        super().__init__(base_url, timeout, token)
        self._http = httpx.AsyncClient(transport=transport, verify=tls_verify(ca_file))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def send(self, call: Call[T]) -> T:
        request = self._build(call)
        try:
            resp = await self._http.send(request)
        except httpx.HTTPError as exc:
            raise calls.transport_error(call, exc, self.base_url, self.timeout) from None
        return calls.decode(call, resp, self.base_url)

    async def request(self, method: str, path: str, *, body: Any = None,
                      params: Mapping[str, Any] | None = None) -> Any:
        return await self.send(Call(method, path, body, params))

    async def get(self, path: str, *, params: Mapping[str, Any] | None = None) -> Any:
        return await self.request("GET", path, params=params)

    async def post(self, path: str, body: Any, *,
                   params: Mapping[str, Any] | None = None) -> Any:
        return await self.request("POST", path, body=body, params=params)

    async def delete(self, path: str, *, params: Mapping[str, Any] | None = None) -> Any:
        return await self.request("DELETE", path, params=params)

    async def version(self) -> Any:
        return await self.send(calls.version())

    async def list_loadbalancers(self) -> list[dict[str, Any]]:
        return await self.send(calls.list_loadbalancers())

    async def create_loadbalancer(self, entry: Rule, *, exist_ok: bool = False) -> None:
        await self.send(calls.create_loadbalancer(entry, exist_ok=exist_ok))

    async def delete_loadbalancer(self, vip: str, port: int, protocol: str, *, block: int = 0,
                                  port_max: int = 0, bgp: bool = False, host: str = "",
                                  missing_ok: bool = False) -> None:
        await self.send(calls.delete_loadbalancer(vip, port, protocol, block=block,
                                                  port_max=port_max, bgp=bgp, host=host,
                                                  missing_ok=missing_ok))

    async def delete_loadbalancer_by_name(self, name: str, *, missing_ok: bool = False) -> None:
        await self.send(calls.delete_loadbalancer_by_name(name, missing_ok=missing_ok))

    async def delete_all_loadbalancers(self) -> None:
        await self.send(calls.delete_all_loadbalancers())

    async def list_conntrack(self) -> list[dict[str, Any]]:
        return await self.send(calls.list_conntrack())

    async def list_endpoints(self) -> list[dict[str, Any]]:
        return await self.send(calls.list_endpoints())

    async def create_endpoint(self, body: Mapping[str, Any]) -> None:
        await self.send(calls.create_endpoint(body))

    async def delete_endpoint(self, host: str, *, probe_type: str = "ping", probe_port: int = 0,
                              name: str = "") -> None:
        await self.send(calls.delete_endpoint(host, probe_type=probe_type,
                                              probe_port=probe_port, name=name))

    async def list_cistates(self) -> list[dict[str, Any]]:
        return await self.send(calls.list_cistates())

    async def set_cistate(self, instance: str, state: str, vip: str = "0.0.0.0") -> None:
        await self.send(calls.set_cistate(instance, state, vip))

    async def set_bgp_global(self, router_id: str, local_as: int) -> None:
        await self.send(calls.set_bgp_global(router_id, local_as))

    async def list_bgp_neighbors(self) -> list[dict[str, Any]]:
        return await self.send(calls.list_bgp_neighbors())

    async def create_bgp_neighbor(self, ip: str, remote_as: int, *,
                                  exist_ok: bool = False) -> None:
        await self.send(calls.create_bgp_neighbor(ip, remote_as, exist_ok=exist_ok))
