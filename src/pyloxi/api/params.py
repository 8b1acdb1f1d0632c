"""Operational parameters (loxilb handler/params.go): the daemon's log level.

- GET  /config/params   {"logLevel": "<level>"}
- POST /config/params   body OperParams {"logLevel": trace|debug|info|notice|warning|error|
                        critical|alert|emergency}: takes effect at once on the `pyloxi`
                        loggers (pyloxi.oplog.LogControl); another value is a 400 and changes
                        nothing. Not persisted, as in loxilb: a restart takes --loglevel again.
"""

from __future__ import annotations

from typing import Protocol

from fastapi import APIRouter, Request
from pydantic import ValidationError

from pyloxi.api.errors import SUCCESS, LoxiRoute, validation_reason
from pyloxi.api.guard import read_json_object
from pyloxi.model.errors import InvalidInput
from pyloxi.model.status import OperParams


class LogLevels(Protocol):
    def level(self) -> str: ...
    def set(self, level: str) -> None: ...


def params_router(levels: LogLevels) -> APIRouter:
    router = APIRouter(prefix="/config", tags=["params"], route_class=LoxiRoute)

    @router.post("/params", summary="Set the daemon's operational parameters (log level)",
                 openapi_extra={"requestBody": {"required": True, "content": {
                     "application/json": {
                         "schema": OperParams.model_json_schema(by_alias=True)}}}})
    async def set_params(request: Request) -> dict[str, str]:
        data = await read_json_object(await request.body(), "an OperParams")
        try:
            params = OperParams.model_validate(data)
        except ValidationError as exc:
            raise InvalidInput(validation_reason(exc.errors())) from None
        try:
            levels.set(params.log_level)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        return SUCCESS

    @router.get("/params", summary="The daemon's operational parameters",
                response_model=OperParams)
    async def get_params() -> dict[str, str]:
        return {"logLevel": levels.level()}

    return router
