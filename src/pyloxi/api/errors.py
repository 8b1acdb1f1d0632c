"""loxilb's error and success bodies, and the handlers that turn every failure into one.

loxilb answers failures with `{"code": N, "message": "...", "result": "..."}` and HTTP status N
(handler/common.go), and successes of POST/DELETE with HTTP 200 `{"result": "Success"}`. We keep
that shape for *every* failure, including the ones FastAPI would otherwise answer itself (422 for
validation, its own 404/405 bodies, a bare 500).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from pyloxi.model.errors import PyloxiError

log = logging.getLogger("pyloxi.api")

SUCCESS: dict[str, str] = {"result": "Success"}


MAX_MESSAGE_LEN = 1024


def _safe_message(message: str) -> str:
    """One line of valid UTF-8, bounded: an error must always be answerable, even when it
    quotes what a client sent (a lone surrogate would make the JSON encoder fail -> 500)."""
    text = message.encode("utf-8", "backslashreplace").decode("utf-8")
    text = " ".join(text.splitlines()) if "\n" in text or "\r" in text else text
    return text if len(text) <= MAX_MESSAGE_LEN else text[: MAX_MESSAGE_LEN - 3] + "..."


def error_body(code: int, message: str) -> dict[str, Any]:
    """The loxilb error object. `result` carries the raw error text, as loxilb's does."""
    message = _safe_message(message)
    return {"code": code, "message": message, "result": message}


def error_response(code: int, message: str) -> JSONResponse:
    return JSONResponse(status_code=code, content=error_body(code, message))


def _loc_name(loc: Sequence[int | str]) -> str:
    """('body', 'serviceArguments', 'port') -> 'serviceArguments.port'; list indexes as [i]."""
    out = ""
    for part in loc:
        if part in ("body", "path", "query") and not out:
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "body"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    for kind, name in ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"),
                       (list, "array"), (dict, "object")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


_RANGE_ERRORS = frozenset({"greater_than", "greater_than_equal", "less_than", "less_than_equal"})


def validation_reason(errors: Sequence[Any]) -> str:
    """One line naming the first offending field: `invalid serviceArguments.port: <why>`."""
    if not errors:
        return "invalid request"
    first = errors[0]
    name = _loc_name(first.get("loc", ()))[:200]
    msg = str(first.get("msg", "invalid value"))
    kind = str(first.get("type", ""))
    if kind == "missing":
        line = f"invalid {name}: field required"
    elif kind.endswith("_type") and "input" in first:
        # Strict types: say what was sent, e.g. "should be a valid integer, got boolean".
        line = f"invalid {name}: {msg}, got {_json_type(first['input'])}"
    elif kind in _RANGE_ERRORS and _json_type(first.get("input")) == "integer":
        # A number out of its range: say which, e.g. "...less than or equal to 65535, got 70000".
        got = str(first["input"])
        line = f"invalid {name}: {msg}" + (f", got {got}" if len(got) <= 20 else "")
    else:
        line = f"invalid {name}: {msg}"
    if len(errors) > 1:
        line += f" (and {len(errors) - 1} more)"
    return line


async def _pyloxi_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PyloxiError)
    return error_response(exc.code, exc.message)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError | ValidationError)
    return error_response(400, validation_reason(exc.errors()))


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse(
        status_code=exc.status_code,
        content=error_body(exc.status_code, str(exc.detail)),
        headers=getattr(exc, "headers", None),
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    return unexpected_error(request.method, request.url.path, exc)


def unexpected_error(method: str, path: str, exc: Exception) -> JSONResponse:
    """A handler bug: logged with its traceback, answered 500 in loxilb's body."""
    log.exception("unhandled error on %s %s", method, path, exc_info=exc)
    return error_response(500, f"internal error: {exc}" if str(exc) else "internal error")


def install_handlers(app: Any) -> None:
    app.add_exception_handler(PyloxiError, _pyloxi_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    # Fallback for routers that do not use LoxiRoute (Starlette's ServerErrorMiddleware).
    app.add_exception_handler(Exception, _unexpected)


class LoxiRoute(APIRoute):
    """A route that answers unexpected exceptions itself (500, loxilb body, logged).

    The app-level `Exception` handler runs inside Starlette's ServerErrorMiddleware, which
    re-raises after answering; catching here keeps a handler bug from escaping the app.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        inner = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await inner(request)
            except (PyloxiError, RequestValidationError, StarletteHTTPException):
                raise
            except ValidationError as exc:
                return error_response(400, validation_reason(exc.errors()))
            except Exception as exc:
                return await _unexpected(request, exc)

        return handler
