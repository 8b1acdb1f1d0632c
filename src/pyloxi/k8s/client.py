"""REST client for one pyloxi (or loxilb) instance: /netlox/v1 load-balancer rules.

As kube-loxilb does, a write counts as done only on HTTP 200 with `{"result":"Success"}`, and a
create that fails because the rule already exists ("exist" in the error) counts as done.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

BASE = "/netlox/v1"


class LoxiError(Exception):
    pass


class LoxiClient:
    def __init__(self, url: str, session: aiohttp.ClientSession, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.host = urlsplit(self.url).hostname or ""
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    def __repr__(self) -> str:
        return f"LoxiClient({self.url})"

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        url = f"{self.url}{BASE}{path}"
        try:
            async with self._session.request(
                method, url, json=body, timeout=self._timeout
            ) as resp:
                text = await resp.text()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise LoxiError(f"{method} {url}: {exc or type(exc).__name__}") from None
        try:
            data = json.loads(text) if text.strip() else {}
        except ValueError:
            data = {"result": text}
        if method == "GET":
            if status // 100 != 2:
                raise LoxiError(f"GET {url}: HTTP {status}: {text[:200]}")
            return data
        result = str(data.get("result", "")) if isinstance(data, dict) else ""
        if status == 200 and result == "Success":
            return data
        raise LoxiError(f"{method} {url}: HTTP {status}: {result or text[:200]}")

    async def healthy(self) -> bool:
        for path in ("/version", ""):  # pyloxi serves /version; loxilb answers the base path
            try:
                await self._call("GET", path)
                return True
            except LoxiError:
                continue
        return False

    async def list_rules(self) -> list[dict[str, Any]]:
        data = await self._call("GET", "/config/loadbalancer/all")
        return list((data or {}).get("lbAttr") or [])

    async def create_rule(self, body: dict[str, Any]) -> None:
        try:
            await self._call("POST", "/config/loadbalancer", body)
        except LoxiError as exc:
            if "exist" not in str(exc):
                raise

    async def delete_rule(self, ip: str, port: int, proto: str, block: int = 0,
                          port_max: int = 0) -> None:
        path = f"/config/loadbalancer/externalipaddress/{quote(ip, safe='')}/port/{port}"
        if port_max:
            path += f"/portmax/{port_max}"
        path += f"/protocol/{proto}?block={block}"
        try:
            await self._call("DELETE", path)
        except LoxiError as exc:
            if "HTTP 404" not in str(exc):
                raise

    async def delete_by_name(self, name: str) -> None:
        try:
            await self._call("DELETE", f"/config/loadbalancer/name/{quote(name, safe='')}")
        except LoxiError as exc:
            if "HTTP 404" not in str(exc):
                raise
