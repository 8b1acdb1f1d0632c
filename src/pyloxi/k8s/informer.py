"""A local cache of one resource kept current by list+watch (client-go's informer, small).

List, then watch from the list's resourceVersion; every event updates the cache and calls the
handler with (kind, old, new). BOOKMARK events only advance the resourceVersion. A 410 Gone
(history compacted past our resourceVersion) relists, and the relist reports the differences
(changes and deletions missed meanwhile) as events; any other failure backs off and watches again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from pyloxi.k8s.kube import Gone, KubeClient

log = logging.getLogger(__name__)

Obj = dict[str, Any]
Handler = Callable[[str, Obj | None, Obj | None], None]


def obj_key(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta.get('name')}" if ns else str(meta.get("name"))


def _rv(obj: Obj) -> Any:
    return (obj.get("metadata") or {}).get("resourceVersion")


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
        self.store: dict[str, Obj] = {}
        self.synced = asyncio.Event()
        self.resource_version = ""
        self.relists = 0

    def _fire(self, old: Obj | None, new: Obj | None) -> None:
        try:
            self.handler(self.kind, old, new)
        except Exception:  # a handler bug must not kill the watch
            log.exception("%s handler failed", self.kind)

    async def relist(self) -> None:
        items, rv = await self.kube.list_objects(self.path, self.label_selector)
        fresh = {obj_key(o): o for o in items}
        old_store, self.store = self.store, fresh
        self.resource_version = rv
        self.relists += 1
        for key, obj in fresh.items():
            old = old_store.get(key)
            if old is None or _rv(old) != _rv(obj):
                self._fire(old, obj)
        for key, old in old_store.items():
            if key not in fresh:
                self._fire(old, None)
        self.synced.set()

    def _apply(self, ev: dict[str, Any]) -> None:
        obj: Obj = ev.get("object") or {}
        rv = _rv(obj)
        if rv:
            self.resource_version = str(rv)
        typ = ev.get("type")
        if typ == "BOOKMARK":
            return
        key = obj_key(obj)
        old = self.store.get(key)
        if typ == "DELETED":
            self.store.pop(key, None)
            self._fire(old, None)
        elif typ in ("ADDED", "MODIFIED"):
            self.store[key] = obj
            self._fire(old, obj)

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
                    self._apply(ev)
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
