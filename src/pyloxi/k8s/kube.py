"""The Kubernetes API as the agent uses it: plain JSON over httpx, list and watch streams.

kubernetes_asyncio only loads the configuration (kubeconfig or in-cluster: server, CA, client
certificate, token, token refresh); requests are made here on dicts, so the agent handles objects
exactly as the API server sends them.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import httpx

TokenSource = Callable[[], str | None]


class KubeError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class Gone(KubeError):
    """410: the resourceVersion is older than the server's history; list again."""

    def __init__(self, message: str = "resourceVersion too old") -> None:
        super().__init__(410, message)


async def load_config(path: str = "") -> tuple[str, ssl.SSLContext | bool, TokenSource]:
    """(server URL, TLS verification, token source) from a kubeconfig, or in-cluster if ''."""
    from kubernetes_asyncio import config as kconfig
    from kubernetes_asyncio.client import Configuration

    conf = Configuration()
    if path:
        await kconfig.load_kube_config(config_file=path, client_configuration=conf)
    else:
        kconfig.load_incluster_config(client_configuration=conf)
    verify: ssl.SSLContext | bool = True
    if conf.host.startswith("https"):
        ctx = ssl.create_default_context(cafile=conf.ssl_ca_cert or None)
        if conf.cert_file:
            ctx.load_cert_chain(conf.cert_file, conf.key_file)
        if not conf.verify_ssl:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        verify = ctx

    def token() -> str | None:
        # in-cluster: the hook behind this re-reads the projected (rotating) token file
        key = conf.get_api_key_with_prefix("authorization")
        return str(key) if key else None

    return str(conf.host), verify, token


def _message(text: str) -> str:
    try:
        return str(json.loads(text).get("message", text))
    except (ValueError, AttributeError):
        return text


class KubeClient:
    def __init__(self, host: str, *, verify: ssl.SSLContext | bool = True,
                 token: TokenSource | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.host = host.rstrip("/")
        self._token = token
        self._http = httpx.AsyncClient(verify=verify, transport=transport)

    @classmethod
    async def from_kubeconfig(cls, path: str = "") -> KubeClient:
        host, verify, token = await load_config(path)
        return cls(host, verify=verify, token=token)

    async def close(self) -> None:
        await self._http.aclose()

    def _headers(self) -> dict[str, str]:
        h = {"Accept": "application/json"}
        tok = self._token() if self._token else None
        if tok:
            h["Authorization"] = tok if " " in tok else f"Bearer {tok}"
        return h

    async def request(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
                      body: Any = None, timeout: float = 30) -> Any:
        resp = await self._http.request(method, self.host + path, params=params, json=body,
                                        headers=self._headers(), timeout=timeout)
        if resp.status_code == 410:
            raise Gone(resp.text[:200])
        if resp.status_code // 100 != 2:
            raise KubeError(resp.status_code, _message(resp.text)[:300])
        return resp.json() if resp.content else {}

    async def list_objects(self, path: str,
                           label_selector: str = "") -> tuple[list[dict[str, Any]], str]:
        params = {"labelSelector": label_selector} if label_selector else None
        data = await self.request("GET", path, params=params)
        return list(data.get("items") or []), str(data.get("metadata", {}).get(
            "resourceVersion", ""))

    async def watch(self, path: str, resource_version: str, *, label_selector: str = "",
                    timeout_seconds: int = 300) -> AsyncIterator[dict[str, Any]]:
        """Events after `resource_version` until the server ends the stream; Gone on 410."""
        params = {"watch": "1", "resourceVersion": resource_version,
                  "allowWatchBookmarks": "true", "timeoutSeconds": str(timeout_seconds)}
        if label_selector:
            params["labelSelector"] = label_selector
        # the server ends the stream after timeoutSeconds; silence beyond that is a dead peer
        timeout = httpx.Timeout(30, connect=10, read=timeout_seconds + 30)
        async with self._http.stream("GET", self.host + path, params=params,
                                     headers=self._headers(), timeout=timeout) as resp:
            if resp.status_code == 410:
                raise Gone()
            if resp.status_code // 100 != 2:
                raise KubeError(resp.status_code, (await resp.aread()).decode()[:300])
            async for line in resp.aiter_lines():
                if not line.strip():
                    continue
                ev: dict[str, Any] = json.loads(line)
                if ev.get("type") == "ERROR":
                    obj = ev.get("object") or {}
                    if obj.get("code") == 410:
                        raise Gone(str(obj.get("message", "")))
                    raise KubeError(int(obj.get("code") or 500), str(obj.get("message")))
                yield ev
