"""What every request must satisfy before a handler sees it, and the one JSON body reader.

Limits (each answers loxilb's error object, and a refused request changes nothing):

- URL: the percent-decoded path and query must be UTF-8 (400). Servers otherwise replace bad
  bytes with U+FFFD silently, so a name would be looked up as something else than was sent.
- Content-Type: POST, PUT and PATCH must declare `application/json` (charset, if given,
  UTF-8), with or without a body; so must any other request that carries a body (415). loxilb
  (go-openapi, `consumes: application/json`) refuses other types with 415 as well.
- Body: at most MAX_BODY_BYTES (413; MAX_FILE_BYTES on `form_paths`), read before the app
  runs.
- JSON (in `parse_json_object`): UTF-8 text, no NaN/Infinity, nesting at most MAX_JSON_DEPTH
  (400, never a RecursionError), no lone surrogates in any key or value (400), an object at the
  top.

Cross-site requests (CSRF): a browser sends a cross-origin request without asking first (a
"simple request") only for GET/HEAD/POST with a form or text/plain content type (or none).
GETs change nothing here; a POST must be application/json, which a browser sends cross-site
only after a CORS preflight; DELETE always needs a preflight. The API sends CORS headers only
to origins added through /config/cors (api/cors.py), so every other preflight fails (405) and
the browser never sends the request. A page on an origin not allowed therefore cannot change
the rule table through a user's browser.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final
from urllib.parse import unquote_to_bytes

from starlette.routing import Match

from pyloxi.api.errors import error_body
from pyloxi.model.base import text_problem
from pyloxi.model.errors import InvalidInput

MAX_BODY_BYTES: Final = 1024 * 1024
# a whole configuration (POST /config/import, the form_paths) may be much larger than one object
MAX_FILE_BYTES: Final = 16 * 1024 * 1024
MAX_JSON_DEPTH: Final = 32  # a LoadbalanceEntry is 3 deep
# Bodies above this are parsed in a worker thread: a 1 MiB document costs ~0.4 s of CPU, which
# must not stall the event loop (and every other request) while it is checked.
INLINE_PARSE_BYTES: Final = 64 * 1024
ROUTED_CACHE_SIZE: Final = 4096
JSON_TYPE: Final = "application/json"
BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class RequestTooLarge(Exception):
    pass


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value)
    return None


def content_type_problem(value: bytes | None) -> str | None:
    """Why this Content-Type header is not JSON, or None if it is."""
    if value is None:
        return "missing Content-Type: send application/json"
    text = value.decode("latin-1")
    mime, _, params = text.partition(";")
    if mime.strip().lower() != JSON_TYPE:
        return f"unsupported Content-Type {show_value(mime.strip())}: send application/json"
    for param in params.split(";"):
        key, _, val = param.partition("=")
        if key.strip().lower() == "charset" and val.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            return (f"unsupported charset {show_value(val.strip())}: send application/json "
                    "in UTF-8")
    return None


def _is_form(value: bytes | None) -> bool:
    return value is not None and value.split(b";")[0].strip().lower() == b"multipart/form-data"


def show_value(value: str, limit: int = 64) -> str:
    """A client-supplied value for an error message: quoted, escaped, bounded."""
    text = value if len(value) <= limit else value[:limit] + "..."
    return ascii(text)


def _routed(scope: Scope) -> bool:
    """Whether a route takes this method on this path: if none does, the app's 404/405 is the
    better answer than a 415 about the body."""
    router = getattr(scope.get("app"), "router", None)
    if router is None:
        return True
    return any(route.matches(scope)[0] == Match.FULL for route in router.routes)


def _url_problem(scope: Scope) -> str | None:
    raw_path = scope.get("raw_path")
    parts = [("path", raw_path)] if raw_path is not None else []
    parts.append(("query", scope.get("query_string") or b""))
    for what, raw in parts:
        try:
            unquote_to_bytes(bytes(raw).replace(b"+", b" ")).decode("utf-8")
        except UnicodeDecodeError:
            return f"malformed URL: the {what} is not valid UTF-8 once percent-decoded"
    return None


class RequestGuard:
    """ASGI middleware applying the URL, Content-Type and body-size limits (module docstring).

    The body is read here, up to the limit, and replayed to the app: a handler never sees a
    partial body, and an over-long one is refused before anything parses it.
    """

    def __init__(self, app: ASGIApp, *, max_body: int = MAX_BODY_BYTES,
                 form_paths: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.max_body = max_body
        # paths that also take multipart/form-data (a file upload: POST /config/import)
        self.form_paths = form_paths
        self._routed_cache: dict[tuple[str, str, str], bool] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problem = _url_problem(scope)
        if problem is not None:
            await _answer(send, 400, problem)
            return
        length_h = _header(scope, b"content-length")
        chunked = _header(scope, b"transfer-encoding") is not None
        try:
            length = int(length_h) if length_h is not None else 0
        except ValueError:
            await _answer(send, 400, "malformed Content-Length header")
            return
        method = scope.get("method", "GET").upper()
        if (method in BODY_METHODS or length > 0 or chunked) and self._routed(scope):
            content_type = _header(scope, b"content-type")
            problem = content_type_problem(content_type)
            if (problem is not None and scope.get("path") in self.form_paths
                    and _is_form(content_type)):
                problem = None
            if problem is not None:
                await _answer(send, 415, problem)
                return
        limit = MAX_FILE_BYTES if scope.get("path") in self.form_paths else self.max_body
        if length > limit:
            await _answer(send, 413, self._too_large(limit))
            return
        if not (length > 0 or chunked):
            await self.app(scope, receive, send)
            return
        try:
            body = await self._read(receive, limit)
        except RequestTooLarge:
            await _answer(send, 413, self._too_large(limit))
            return
        if body is None:
            return  # the client went away mid-body: nobody to answer

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as servers do

        await self.app(scope, replay, send)

    def _routed(self, scope: Scope) -> bool:
        # Matching every route costs ~50 us a request (a tenth of a rule create): remembered
        # per method and path (bounded: the paths are the clients').
        key = (scope.get("method", "GET"), scope.get("path", ""), scope.get("root_path", ""))
        routed = self._routed_cache.get(key)
        if routed is None:
            routed = _routed(scope)
            if len(self._routed_cache) >= ROUTED_CACHE_SIZE:
                self._routed_cache.clear()
            self._routed_cache[key] = routed
        return routed

    def _too_large(self, limit: int) -> str:
        return f"request body larger than {limit} bytes"

    async def _read(self, receive: Receive, limit: int) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise RequestTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


async def answer(send: Send, code: int, message: str,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """loxilb's error object as a whole response, from middleware (before any route)."""
    payload = json.dumps(error_body(code, message), separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *(headers or ()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


_answer = answer


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _where(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = part if len(part) <= 32 else part[:32] + "..."  # keep the tail readable
            out += f".{name}" if out else name
    return out or "body"


def _check_tree(data: Any) -> None:
    """Depth and Unicode of every key and string in a parsed document; iterative, so no input
    can exhaust the stack here. Paths are tuples of references (at most MAX_JSON_DEPTH long),
    formatted only for the error: a long key over a wide list costs no copies."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(data, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict | list):
            if len(path) >= MAX_JSON_DEPTH:
                raise InvalidInput(
                    f"malformed JSON body: nested deeper than {MAX_JSON_DEPTH} levels"
                )
            if isinstance(node, dict):
                for key, value in node.items():
                    _check_string(key, path, is_key=True)
                    stack.append((value, (*path, key)))
            else:
                stack.extend((v, (*path, i)) for i, v in enumerate(node))
        elif isinstance(node, str):
            _check_string(node, path)


def _check_string(value: str, path: tuple[str | int, ...], *, is_key: bool = False) -> None:
    if value.isascii():
        return  # control characters are the model's business (some fields allow them)
    problem = text_problem(value, single_line=False)
    if problem is not None:
        where = show_value(_where(path), 128)[1:-1]
        if is_key:
            where = f"key {show_value(value)}" + (f" in {where}" if path else "")
        raise InvalidInput(f"invalid {where}: {problem[1]}")


def parse_json_object(raw: bytes, what: str) -> dict[str, Any]:
    """A request body as a JSON object, or InvalidInput (400) saying why not."""
    if not raw.strip():
        raise InvalidInput(f"malformed request: empty body, expected {what} object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"malformed JSON body: not valid UTF-8 (byte {exc.start})"
        ) from None
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise InvalidInput(
            f"malformed JSON body: nested deeper than {MAX_JSON_DEPTH} levels"
        ) from None
    except ValueError as exc:
        raise InvalidInput(f"malformed JSON body: {exc}") from None
    if not isinstance(data, dict):
        kind = {list: "list", str: "str", int: "int", float: "float", bool: "bool"}.get(
            type(data), "null" if data is None else type(data).__name__
        )
        raise InvalidInput(f"malformed request: body must be a JSON object, got {kind}")
    _check_tree(data)
    return data


async def read_json_object(raw: bytes, what: str) -> dict[str, Any]:
    """`parse_json_object`, off the event loop when the body is large."""
    if len(raw) <= INLINE_PARSE_BYTES:
        return parse_json_object(raw, what)
    return await asyncio.to_thread(parse_json_object, raw, what)
