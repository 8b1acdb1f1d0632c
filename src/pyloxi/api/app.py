"""The REST server: loxilb's API under /netlox/v1, built around one Engine.

`create_app(engine, version=...)` returns a FastAPI app; the daemon serves it with uvicorn.
Handlers that touch the engine are plain `def`, so FastAPI runs them in its threadpool (the engine
is thread-safe and may block on the datapath).
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi

from pyloxi.api import conntrack, lb, ui
from pyloxi.api.backup import IMPORT_PATH, backup_router
from pyloxi.api.cors import CorsMiddleware, CorsOrigins, cors_router
from pyloxi.api.errors import LoxiRoute, install_handlers
from pyloxi.api.guard import RequestGuard
from pyloxi.api.meta import meta_router
from pyloxi.api.metrics import RequestCounter, RequestObserver
from pyloxi.api.nodegraph import nodegraph_router
from pyloxi.api.security import TokenAuth, TokenCheck
from pyloxi.api.status import status_router
from pyloxi.model.lb import LoadBalancerEntry

BASE_PATH = "/netlox/v1"

_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Error",
    "properties": {
        "code": {"type": "integer", "description": "HTTP status"},
        "message": {"type": "string"},
        "result": {"type": "string", "description": "raw error text"},
    },
}
_ERROR_RESPONSES = {
    "400": "Malformed arguments for API call",
    "404": "Resource not found",
    "409": "Resource conflict",
    "413": "Request body too large",
    "415": "Content-Type is not application/json",
    "500": "Internal service error",
}


def _version_router(version: str, build_info: str) -> APIRouter:
    router = APIRouter(tags=["status"], route_class=LoxiRoute)

    @router.get("/version", summary="Version of the running daemon")
    def get_version() -> dict[str, str]:
        return {"version": version, "buildInfo": build_info}

    return router


_LOCAL_DEFS = "#/$defs/"
_COMPONENTS = "#/components/schemas/"


def _rebase_refs(node: Any) -> Any:
    """`#/$defs/X` (pydantic's, relative to a model's own schema) -> `#/components/schemas/X`."""
    if isinstance(node, dict):
        return {k: (_COMPONENTS + v[len(_LOCAL_DEFS):]
                    if k == "$ref" and isinstance(v, str) and v.startswith(_LOCAL_DEFS)
                    else _rebase_refs(v))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_rebase_refs(v) for v in node]
    return node


def _hoist_body_defs(schema: dict[str, Any], components: dict[str, Any]) -> None:
    """Request bodies declared with a model's own JSON schema (openapi_extra) carry `$defs`
    and refs into them, which mean nothing inside the whole document (a client generator,
    or a fuzzer, cannot resolve them): their definitions move to the components."""
    for item in schema.get("paths", {}).values():
        for op in item.values():
            content = op.get("requestBody", {}).get("content", {})
            for media in content.values():
                body = media.get("schema")
                if not isinstance(body, dict):
                    continue
                for name, sub in body.pop("$defs", {}).items():
                    components.setdefault(name, _rebase_refs(sub))
                media["schema"] = _rebase_refs(body)


def _install_openapi(app: FastAPI, *, authenticated: bool = False,
                     open_calls: Sequence[tuple[str, str]] = ()) -> None:
    """OpenAPI with the hand-parsed LoadBalancerEntry body schema added to the components;
    with token authentication, loxilb's `BearerAuth` scheme on every route but the exempt."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        body = LoadBalancerEntry.model_json_schema(
            by_alias=True, ref_template="#/components/schemas/{model}"
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, sub in body.pop("$defs", {}).items():
            components.setdefault(name, sub)
        components.setdefault("LoadBalancerEntry", body)
        _hoist_body_defs(schema, components)
        errors = dict(_ERROR_RESPONSES)
        if authenticated:
            # loxilb's definition: an apiKey in the Authorization header (bare or "Bearer t")
            schema["components"]["securitySchemes"] = {"BearerAuth": {
                "type": "apiKey", "name": "Authorization", "in": "header"}}
            schema["security"] = [{"BearerAuth": []}]
            errors["401"] = "Invalid authentication credentials"
        # Failures answer loxilb's Error object; FastAPI's 422 never happens here (it is a 400).
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        components["Error"] = _ERROR_SCHEMA
        exempt = _exempt_paths()
        for path, item in schema.get("paths", {}).items():
            exempt |= {(path, m.lower()) for m, p in open_calls
                       if path == BASE_PATH + p or (p.endswith("/") and
                                                    path.startswith(BASE_PATH + p))}
            for method, op in item.items():
                if authenticated and (path, method) in exempt:
                    op["security"] = []
                responses = op.setdefault("responses", {})
                responses.pop("422", None)
                for code, why in errors.items():
                    if code == "401" and (path, method) in exempt:
                        continue
                    responses.setdefault(
                        code,
                        {
                            "description": why,
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Error"}
                                }
                            },
                        },
                    )
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _exempt_paths() -> set[tuple[str, str]]:
    """(path, method) that need no token, as loxilb's `security: []` routes."""
    return {(f"{BASE_PATH}{p}", "get") for p in ("/version", "/swagger.json", "/docs", "/meta")}


def create_app(
    engine: Any,
    *,
    version: str,
    build_info: str | None = None,
    extra_routers: Sequence[APIRouter] = (),
    tokens: TokenCheck | None = None,
    request_observer: RequestObserver | None = None,
    open_calls: Sequence[tuple[str, str]] = (),
    viewer_may: Sequence[tuple[str, str]] = (),
) -> FastAPI:
    """The API app. `extra_routers` are mounted under /netlox/v1 beside the built-in ones.
    `tokens`: every request but the exempt ones must carry one it accepts (security.py).
    `request_observer` is told every request's method, route and status (metrics).
    `open_calls`, `viewer_may`: (METHOD, path under /netlox/v1) that need no token, and that a
    viewer may call beside reads (security.TokenAuth; api/auth.py's AuthApi has them).
    The web view (api/ui.py) is served at /ui beside the API."""
    app = FastAPI(
        title="pyloxi REST API",
        description="loxilb-compatible REST API of pyloxi (base path /netlox/v1).",
        version=version,
        openapi_url=f"{BASE_PATH}/swagger.json",
        docs_url=f"{BASE_PATH}/docs",
        redoc_url=None,
    )
    app.state.engine = engine
    install_handlers(app)
    # innermost: the rule create answered below FastAPI's routing (lb.CreateLane)
    app.add_middleware(lb.CreateLane, path=BASE_PATH + "/config/loadbalancer")
    # URL, Content-Type and body-size limits for every route, built-in or extra (guard.py).
    app.add_middleware(RequestGuard, form_paths=frozenset({BASE_PATH + IMPORT_PATH}))
    if tokens is not None:
        # before the guard: an unauthenticated request is refused before its body is read
        app.add_middleware(TokenAuth, tokens=tokens,
                           exempt={path for path, _ in _exempt_paths()} | ui.exempt_paths(),
                           open_calls=[(m, BASE_PATH + p) for m, p in open_calls],
                           viewer_may=[(m, BASE_PATH + p) for m, p in viewer_may])
    # CORS (cors.py) outside auth and guard: a preflight carries no token and no body
    app.state.cors = CorsOrigins()
    app.add_middleware(CorsMiddleware, origins=app.state.cors)
    if request_observer is not None:  # outermost: counts what auth and guard refuse too
        app.add_middleware(RequestCounter, observer=request_observer, prefix=BASE_PATH,
                           unprefixed=ui.ROUTES)
    if build_info is None:
        build_info = f"pyloxi {version} (python {platform.python_version()})"
    app.include_router(lb.router, prefix=BASE_PATH)
    app.include_router(conntrack.router, prefix=BASE_PATH)
    app.include_router(_version_router(version, build_info), prefix=BASE_PATH)
    for router in (status_router(), meta_router(BASE_PATH), nodegraph_router(), cors_router(),
                   backup_router()):
        app.include_router(router, prefix=BASE_PATH)
    for router in extra_routers:
        app.include_router(router, prefix=BASE_PATH)
    # the web view (/ui), outside the API's base path and its OpenAPI document
    app.include_router(ui.ui_router())
    _install_openapi(app, authenticated=tokens is not None, open_calls=open_calls)
    return app
