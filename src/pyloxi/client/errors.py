"""What went wrong talking to /netlox/v1, one exception type per meaning (as httpx and kopf do).

Every error carries the HTTP status (None when no API answered), the message the server gave,
and the request's method and URL. Callers branch on the type, never on the message text: the
one place that reads message text is `error_class`, because loxilb says "already exists" and
"no such rule" in words, not in its status.
"""

from __future__ import annotations

import re


class ApiError(Exception):
    """The API refused a request, or could not be reached. `message` is one line."""

    def __init__(self, status: int | None, message: str, method: str = "", url: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.method = method
        self.url = url

    @property
    def code(self) -> int | None:
        """The status under the name loxilb's error bodies give it."""
        return self.status

    def __str__(self) -> str:
        where = f"{self.method} {self.url}: " if self.method else ""
        status = f"HTTP {self.status}: " if self.status is not None else ""
        return f"{where}{status}{self.message}"


class BadRequest(ApiError):
    """The request was refused as invalid (400; 413/415/422 are the same refusal)."""


class NotFound(ApiError):
    """The object named by the request does not exist (404, or loxilb's "no-rule" answer)."""


class Conflict(ApiError):
    """The object exists already, or clashes with one that does (409, or loxilb's "exists")."""


class Unauthorized(ApiError):
    """The API wants a token, or did not accept the one sent (401)."""


class CapacityExceeded(ApiError):
    """A table or limit is full (403, what pyloxi answers for a full table)."""


class ServerError(ApiError):
    """The server failed (5xx)."""


class Unreachable(ApiError):
    """No /netlox/v1 answer: connection refused, timed out, or something else answered."""

    def __init__(self, message: str, method: str = "", url: str = "") -> None:
        super().__init__(None, message, method, url)


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    413: BadRequest,
    415: BadRequest,
    422: BadRequest,
    401: Unauthorized,
    403: CapacityExceeded,
    404: NotFound,
    409: Conflict,
}

# loxilb answers a failed write with HTTP 200 and the error text in `result` (its handlers'
# ResultResponse never sets a status), e.g. "lbrule-exists error", "lbrule-exist error: cant
# modify ...", "lbrule not-exists error", "no-rule error"; other loxilb builds send the same
# words with a 5xx. Only the words carry the meaning there, so they are read here and nowhere
# else, and only when the status itself says nothing more specific (a 400 "... of an existing
# rule ..." stays a BadRequest). "not-exists" also contains "exists": not-found is checked first.
_NOT_FOUND_WORDS = re.compile(r"not[- ]exist|no-rule|not found", re.IGNORECASE)
_EXISTS_WORDS = re.compile(r"\bexists?\b|already exist", re.IGNORECASE)


def error_class(status: int, message: str) -> type[ApiError]:
    """The exception type for an error answer with this status and message."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if _NOT_FOUND_WORDS.search(message):
        return NotFound
    if _EXISTS_WORDS.search(message):
        return Conflict
    if status >= 500:
        return ServerError
    return ApiError
