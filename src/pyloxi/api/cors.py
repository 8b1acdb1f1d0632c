"""Cross-origin access for web pages (loxilb handler/cors.go, apiutils/cors):

- GET    /config/cors/all         {"corsAttr": [origin]}
- POST   /config/cors             body CorsEntry {"cors": [origin]}: allow these origins
- DELETE /config/cors/{cors_url}  stop allowing one (the origin percent-encoded, or as is)

An origin is `scheme://host[:port]` (http or https; no path), kept as a browser sends it in
its `Origin` header: lower case, default port left out. A request whose Origin is allowed gets
`Access-Control-Allow-Origin: <that origin>` (and `Vary: Origin`); a preflight (OPTIONS with
Access-Control-Request-Method) from it is answered 204 with the methods and headers the API
takes, before authentication (a browser sends no credentials on a preflight). Requests from any
other origin are answered as before: no CORS headers, a preflight gets 405, so the browser
refuses to send the request.

Differences from loxilb, deliberate: the default is no origin at all (loxilb allows `*` until
an origin is added, and sends `Access-Control-Allow-Credentials: true` beside it); no
credentials header is ever sent (the API's token travels in the Authorization header, which
needs no browser credentials); origins that are not origins are refused (400); the list is
kept in memory, not persisted, as in loxilb.

How this meets the CSRF rule of api/guard.py: a cross-origin POST must still be JSON, which a
browser sends only after a preflight, and only an allowed origin's preflight succeeds. Allowing
an origin therefore means trusting its pages to call the API with whatever token they hold
(and, on an API without tokens, to change the rules through a visitor's browser); a `text/plain`
or form POST from anywhere is still refused (415).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.convertors import Convertor, register_url_convertor

from pyloxi.api.errors import SUCCESS, LoxiRoute, validation_reason
from pyloxi.api.guard import ASGIApp, Message, Receive, Scope, Send, read_json_object, show_value
from pyloxi.model.errors import CapacityExceeded, Conflict, InvalidInput, NotFound
from pyloxi.model.status import MAX_CORS_ORIGINS, CorsEntry, CorsList


class _AnyText(Convertor[str]):
    """Starlette's `path`, newlines included: `path` (`.*`) stops at a newline, so an origin
    with an encoded newline (`%0A`) matched no route (404) or lost a trailing newline."""

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("anytext", _AnyText())

ALLOW_METHODS = b"GET, POST, PUT, DELETE, OPTIONS"
ALLOW_HEADERS = b"Content-Type, Authorization, X-Requested-With"
MAX_AGE = b"86400"  # loxilb's: a browser may cache a preflight for a day
_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_origin(text: str) -> str:
    """`scheme://host[:port]` as a browser writes it in Origin; InvalidInput if not one."""
    value = text.strip()
    if value == "*":
        raise InvalidInput("failed to add Cors URL: wildcard '*' is not allowed")
    if not value:
        raise InvalidInput("invalid Cors URL: cannot be empty")
    bad = InvalidInput(f"invalid Cors URL {show_value(value)}: expected an origin, "
                       "http(s)://host[:port] with no path")
    if not value.isascii() or any(c.isspace() for c in value):
        raise bad
    try:
        parts = urlsplit(value.rstrip("/") if value.count("/") == 3 else value)
        port = parts.port
    except ValueError:
        raise bad from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or parts.path or parts.query \
            or parts.fragment or parts.username or parts.password or "@" in parts.netloc:
        raise bad
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}" + (f":{port}" if port not in (None, _DEFAULT_PORTS[scheme])
                                   else "")


class CorsOrigins:
    """The allowed origins, thread-safe."""

    def __init__(self, limit: int = MAX_CORS_ORIGINS) -> None:
        self._origins: list[str] = []
        self._lock = threading.Lock()
        self._limit = limit

    def list(self) -> list[str]:
        with self._lock:
            return list(self._origins)

    def allows(self, origin: str) -> bool:
        with self._lock:
            return origin in self._origins

    def add(self, origins: Sequence[str]) -> None:
        """All or nothing: a refused origin (bad, already there) adds none of them."""
        wanted = [normalize_origin(o) for o in origins]
        with self._lock:
            fresh: list[str] = []
            for origin in wanted:
                if origin in self._origins or origin in fresh:
                    raise Conflict(f"Failed to add Cors URL: origin {origin} already exists "
                                   "in allowed origins")
                fresh.append(origin)
            if len(self._origins) + len(fresh) > self._limit:
                raise CapacityExceeded(f"Failed to add Cors URL: at most {self._limit} "
                                       "origins (capacity)")
            self._origins.extend(fresh)

    def remove(self, origin: str) -> None:
        key = normalize_origin(origin)
        with self._lock:
            if key not in self._origins:
                raise NotFound(f"Failed to delete Cors URL: origin {key} not found in "
                               "allowed origins")
            self._origins.remove(key)


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value)
    return None


class CorsMiddleware:
    """ASGI middleware: CORS headers for allowed origins, preflights answered (module doc)."""

    def __init__(self, app: ASGIApp, *, origins: CorsOrigins) -> None:
        self.app = app
        self.origins = origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = _header(scope, b"origin") if scope["type"] == "http" else None
        origin = raw.decode("latin-1") if raw is not None else ""
        if not origin or not self.origins.allows(origin):
            await self.app(scope, receive, send)
            return
        allow = [(b"access-control-allow-origin", raw or b""), (b"vary", b"Origin")]
        if scope.get("method") == "OPTIONS" and \
                _header(scope, b"access-control-request-method") is not None:
            await send({"type": "http.response.start", "status": 204, "headers": [
                *allow, (b"access-control-allow-methods", ALLOW_METHODS),
                (b"access-control-allow-headers", ALLOW_HEADERS),
                (b"access-control-max-age", MAX_AGE), (b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ())
                           if k.lower() not in (b"access-control-allow-origin", b"vary")]
                message = {**message, "headers": [
                    *headers, *allow, (b"access-control-expose-headers",
                                       b"Content-Disposition, WWW-Authenticate")]}
            await send(message)

        await self.app(scope, receive, send_with_cors)


def _origins(request: Request) -> CorsOrigins:
    origins = request.app.state.cors
    assert isinstance(origins, CorsOrigins)
    return origins


def cors_router() -> APIRouter:
    """Routes over the app's `state.cors` (create_app sets it, beside the middleware)."""
    router = APIRouter(prefix="/config/cors", tags=["cors"], route_class=LoxiRoute)

    @router.get("/all", summary="Origins whose web pages may call the API",
                response_model=CorsList)
    def list_cors(request: Request) -> dict[str, Any]:
        return {"corsAttr": _origins(request).list()}

    @router.post("", summary="Allow web pages of these origins to call the API",
                 openapi_extra={"requestBody": {"required": True, "content": {
                     "application/json": {
                         "schema": CorsEntry.model_json_schema(by_alias=True)}}}})
    async def add_cors(request: Request) -> dict[str, str]:
        data = await read_json_object(await request.body(), "a CorsEntry")
        try:
            entry = CorsEntry.model_validate(data)
        except ValidationError as exc:
            raise InvalidInput(validation_reason(exc.errors())) from None
        _origins(request).add(entry.cors)
        return SUCCESS

    @router.delete("/{cors_url:anytext}", summary="Stop allowing an origin")
    def delete_cors(request: Request, cors_url: str) -> dict[str, str]:
        # the origin arrives percent-encoded (http%3A%2F%2Fhost) or with its slashes as is
        _origins(request).remove(unquote(cors_url))
        return SUCCESS

    return router
