"""A small Kubernetes API client (plain JSON over aiohttp) and list+watch informers.

kubernetes_asyncio loads the kubeconfig or the in-cluster config (host, TLS, token refresh);
requests and watch streams are done here on dicts, so the agent handles objects exactly as the
API server sends them. Informers keep a local cache per resource: list, then watch from the
list's resourceVersion; a 410 Gone (stale resourceVersion) relists, any other failure backs off
and watches again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp

log = logging.getLogger(__name__)


class KubeError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class Gone(KubeError):
    def __init__(self, message: str = "resourceVersion too old") -> None:
        super().__init__(410, message)


class KubeClient:
    def __init__(self, host: str, *, ssl_ctx: ssl.SSLContext | bool | None = None,
                 token: Callable[[], str | None] | None = None) -> None:
        self.host = host.rstrip("/")
        self._ssl = ssl_ctx
        self._token = token
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    async def from_kubeconfig(cls, path: str = "") -> KubeClient:
        from kubernetes_asyncio import config as kconfig
        from kubernetes_asyncio.client import Configuration

        conf = Configuration()
        if path:
            await kconfig.load_kube_config(config_file=path, client_configuration=conf)
        else:
            kconfig.load_incluster_config(client_configuration=conf)
        ctx: ssl.SSLContext | bool | None = None
        if conf.host.startswith("https"):
            ctx = ssl.create_default_context(cafile=conf.ssl_ca_cert or None)
            if conf.cert_file:
                ctx.load_cert_chain(conf.cert_file, conf.key_file)
            if not conf.verify_ssl:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE

        def token() -> str | None:
            return conf.get_api_key_with_prefix("authorization") or None

        return cls(conf.host, ssl_ctx=ctx, token=token)

    async def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _headers(self) -> dict[str, str]:
        h = {"Accept": "application/json"}
        tok = self._token() if self._token else None
        if tok:
            h["Authorization"] = tok if " " in tok else f"Bearer {tok}"
        return h

    async def request(self, method: str, path: str, *, params: dict[str, str] | None = None,
                      body: Any = None, timeout: float = 30) -> Any:
        s = await self.session()
        async with s.request(method, self.host + path, params=params, json=body,
                             headers=self._headers(), ssl=self._ssl,
                             timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            text = await resp.text()
            if resp.status == 410:
                raise Gone(text[:200])
            if resp.status // 100 != 2:
                try:
                    msg = json.loads(text).get("message", text)
                except (ValueError, AttributeError):
                    msg = text
                raise KubeError(resp.status, str(msg)[:300])
            return json.loads(text) if text else {}

    async def list(self, path: str, label_selector: str = "") -> tuple[list[dict[str, Any]], str]:
        params = {"labelSelector": label_selector} if label_selector else None
        data = await self.request("GET", path, params=params)
        return list(data.get("items") or []), str(data.get("metadata", {}).get(
            "resourceVersion", ""))

    async def watch(self, path: str, resource_version: str, *, label_selector: str = "",
                    timeout_seconds: int = 300) -> AsyncIterator[dict[str, Any]]:
        params = {"watch": "1", "resourceVersion": resource_version,
                  "allowWatchBookmarks": "true", "timeoutSeconds": str(timeout_seconds)}
        if label_selector:
            params["labelSelector"] = label_selector
        s = await self.session()
        async with s.get(self.host + path, params=params, headers=self._headers(), ssl=self._ssl,
                         timeout=aiohttp.ClientTimeout(total=None, sock_connect=10,
                                                       sock_read=timeout_seconds + 30)) as resp:
            if resp.status == 410:
                raise Gone()
            if resp.status // 100 != 2:
                raise KubeError(resp.status, (await resp.text())[:300])
            buf = b""
            async for chunk in resp.content.iter_any():
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if not line.strip():
                        continue
                    ev = json.loads(line)
                    if ev.get("type") == "ERROR":
                        obj = ev.get("object") or {}
                        if obj.get("code") == 410:
                            raise Gone(str(obj.get("message", "")))
                        raise KubeError(int(obj.get("code") or 500), str(obj.get("message")))
                    yield ev


def obj_key(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta.get('name')}" if ns else str(meta.get("name"))


Handler = Callable[[str, dict[str, Any] | None, dict[str, Any] | None], None]


class Informer:
    """Cache of one resource kept current by list+watch; calls handler(kind, old, new)."""

    def __init__(self, kube: KubeClient, kind: str, path: str, handler: Handler, *,
                 label_selector: str = "", watch_timeout: int = 300) -> None:
        self.kube = kube
        self.kind = kind
        self.path = path
        self.handler = handler
        self.label_selector = label_selector
        self.watch_timeout = watch_timeout
        self.store: dict[str, dict[str, Any]] = {}
        self.synced = asyncio.Event()
        self.resource_version = ""
        self.relists = 0

    def _fire(self, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        try:
            self.handler(self.kind, old, new)
        except Exception:  # a handler bug must not kill the watch
            log.exception("%s handler failed", self.kind)

    async def relist(self) -> None:
        items, rv = await self.kube.list(self.path, self.label_selector)
        fresh = {obj_key(o): o for o in items}
        old_store, self.store = self.store, fresh
        self.resource_version = rv
        self.relists += 1
        for key, obj in fresh.items():
            old = old_store.get(key)
            if old is None or old.get("metadata", {}).get("resourceVersion") != \
                    obj.get("metadata", {}).get("resourceVersion"):
                self._fire(old, obj)
        for key, old in old_store.items():
            if key not in fresh:
                self._fire(old, None)
        self.synced.set()

    async def run(self) -> None:
        backoff = 0.5
        need_list = True
        while True:
            try:
                if need_list:
                    await self.relist()
                    need_list = False
                async for ev in self.kube.watch(self.path, self.resource_version,
                                                label_selector=self.label_selector,
                                                timeout_seconds=self.watch_timeout):
                    backoff = 0.5
                    obj = ev.get("object") or {}
                    rv = (obj.get("metadata") or {}).get("resourceVersion")
                    if rv:
                        self.resource_version = str(rv)
                    typ = ev.get("type")
                    if typ == "BOOKMARK":
                        continue
                    key = obj_key(obj)
                    old = self.store.get(key)
                    if typ == "DELETED":
                        self.store.pop(key, None)
                        self._fire(old, None)
                    elif typ in ("ADDED", "MODIFIED"):
                        self.store[key] = obj
                        self._fire(old, obj)
            except asyncio.CancelledError:
                raise
            except Gone:
                log.info("%s watch: resourceVersion %s gone, relisting", self.kind,
                         self.resource_version)
                need_list = True
            except Exception as exc:
                log.warning("%s watch failed: %s; retrying in %.1fs", self.kind, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30)


async def cancel_all(tasks: list[asyncio.Task[Any]]) -> None:
    for t in tasks:
        t.cancel()
    for t in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await t
