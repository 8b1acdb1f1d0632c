"""The one error type that crosses layers: carries loxilb's HTTP code and message."""

from __future__ import annotations


class PyloxiError(Exception):
    """A request that cannot be carried out. `code` is the HTTP status loxilb would answer."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class InvalidInput(PyloxiError):
    def __init__(self, message: str) -> None:
        super().__init__(400, message)


class Conflict(PyloxiError):
    def __init__(self, message: str) -> None:
        super().__init__(409, message)


class NotFound(PyloxiError):
    def __init__(self, message: str) -> None:
        super().__init__(404, message)


class CapacityExceeded(PyloxiError):
    def __init__(self, message: str) -> None:
        super().__init__(403, message)
