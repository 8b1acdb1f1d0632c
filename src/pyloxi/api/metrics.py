"""Metric routes (loxilb api/prometheus, handler/metrics*.go):

- GET    /metrics              Prometheus text; 503 while the exporter is off
- GET    /config/metrics       {"prometheus": bool}
- POST   /config/metrics       turn the exporter on (200 "already enabled" if it is)
- DELETE /config/metrics       turn it off (200 "already disabled" if it is)
- GET    /metrics/<view>       loxilb's JSON views (flowcount, hostcount, ...), legacy names

The api layer does not import pyloxi.metrics (a sibling layer); the daemon hands in its
MetricsExporter, reached through the Exporter protocol.

Also the request-counting middleware: every request's method, route template and status go to
a RequestObserver (pyloxi.metrics.ApiStats in the daemon).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from fastapi import APIRouter, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pyloxi.api.errors import SUCCESS, LoxiRoute

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


class Exporter(Protocol):
    @property
    def enabled(self) -> bool: ...
    def turn_on(self) -> None: ...
    def turn_off(self) -> None: ...
    async def scrape(self) -> bytes: ...
    async def view(self, name: str) -> dict[str, Any]: ...


def metrics_router(exporter: Exporter, views: Sequence[str]) -> APIRouter:
    router = APIRouter(tags=["metrics"], route_class=LoxiRoute)

    @router.get("/metrics", summary="Prometheus metrics (503 while turned off)",
                response_class=Response,
                responses={200: {"content": {PROMETHEUS_TEXT: {}},
                                 "description": "Metrics in Prometheus text format"},
                           503: {"description": "Prometheus is turned off"}})
    async def scrape() -> Response:
        return Response(await exporter.scrape(), media_type=PROMETHEUS_TEXT)

    @router.get("/config/metrics", summary="Whether the Prometheus exporter is on")
    async def get_config() -> dict[str, bool]:
        return {"prometheus": exporter.enabled}

    @router.post("/config/metrics", summary="Turn the Prometheus exporter on")
    async def turn_on() -> dict[str, str]:
        if exporter.enabled:  # loxilb: 200 with this result (handler/prometheus.go)
            return {"result": "Prometheus is already enabled."}
        exporter.turn_on()
        return SUCCESS

    @router.delete("/config/metrics", summary="Turn the Prometheus exporter off")
    async def turn_off() -> dict[str, str]:
        if not exporter.enabled:
            return {"result": "Prometheus is already disabled."}
        exporter.turn_off()
        return SUCCESS

    for name in views:
        _add_view(router, exporter, name)
    return router


def _add_view(router: APIRouter, exporter: Exporter, name: str) -> None:
    async def view() -> dict[str, Any]:
        return await exporter.view(name)

    view.__name__ = f"metrics_{name}"
    router.add_api_route(f"/metrics/{name}", view, methods=["GET"],
                         summary=f"loxilb's {name} metrics (JSON)")


class RequestObserver(Protocol):
    def observe(self, method: str, route: str | None, status: int) -> None: ...


class RequestCounter:
    """ASGI middleware: tells `observer` each HTTP request's method, matched route template
    (None when no route matched) and response status (500 if the app failed to answer).

    Routers are included under `prefix`; FastAPI's included routers leave the route's own
    template (without that prefix) in the scope, so the prefix is put back; but not to the
    templates in `unprefixed` (routes mounted outside the prefix, such as the web view's)."""

    def __init__(self, app: ASGIApp, *, observer: RequestObserver, prefix: str = "",
                 unprefixed: Iterable[str] = ()) -> None:
        self.app = app
        self.observer = observer
        self.prefix = prefix
        self.unprefixed = frozenset(unprefixed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            # the router writes the matched route into the (shared) scope
            route = getattr(scope.get("route"), "path", None)
            if route is not None and not route.startswith(self.prefix) \
                    and route not in self.unprefixed:
                route = self.prefix + route
            self.observer.observe(scope.get("method", "GET"), route, status)
