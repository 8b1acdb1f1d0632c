"""Configuration backup routes (loxilb handler/backup.go):

- GET  /config/export   ?components=loadbalancer,firewall,...  loxilb's export file
                        (`loxilb-config-<ts>.json`, keys per component in loxilb's *Mod names)
- POST /config/import   multipart field `configuration` (or the file as an application/json
                        body): back up, clear the rules, firewall, mirror, policy and endpoint
                        entries, add the file's entries

Both speak to this same app through its own routes (an in-process HTTP client over ASGI, with
the caller's token): a component is exported and imported exactly as a client would list and
create it, and adding a component is one entry in pyloxi.client.backup.EXPORTED.

The import is all-or-nothing as far as the API allows: the file is checked whole before anything
changes (400); if an entry is refused midway, what was added is removed and the backup is added
back, and the refusal is answered.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import datetime
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import urlsplit

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

import pyloxi
from pyloxi.api.errors import SUCCESS, LoxiRoute, error_response
from pyloxi.api.guard import read_json_object
from pyloxi.client import ApiError, AsyncClient, Conflict, NotFound
from pyloxi.client.backup import (
    CLEAR_ORDER,
    EXPORTED,
    EXPORTED_BY_NAME,
    BadConfigFile,
    Exported,
    Item,
    components_from_query,
    read_import,
)
from pyloxi.model.errors import InvalidInput

log = logging.getLogger(__name__)

IMPORT_PATH = "/config/import"
FORM_FIELD = "configuration"
_LOOPBACK = "http://pyloxi-loopback"


class ComponentError(Exception):
    """A component could not be listed or written; `status` is the answer to give."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _loopback(request: Request) -> AsyncClient:
    """A client of this app, in process, carrying the caller's credentials."""
    auth = request.headers.get("authorization", "")
    token = auth.split(" ", 1)[1] if auth.lower().startswith("bearer ") else auth
    # an exception escaping a route is a 500 answer here, not a crash of this request
    transport = httpx.ASGITransport(app=request.app, raise_app_exceptions=False)
    return AsyncClient(_LOOPBACK, transport=transport, token=token or None, timeout=60.0)


async def _list(api: AsyncClient, comp: Exported) -> list[Item] | None:
    """The component's entries; None if this server has no such component (its list 404s:
    policy and mirror before they exist)."""
    try:
        return await api.send(comp.list_call())
    except NotFound:
        return None
    except ApiError as exc:
        raise ComponentError(exc.status or 500,
                             f"{comp.name}: listing {comp.get_path} failed: {exc.message}"
                             ) from None


async def dump(api: AsyncClient, components: tuple[Exported, ...] = EXPORTED) -> dict[str, Any]:
    """The export file: a key per component this server has, loxilb's *Mod names."""
    out: dict[str, Any] = {}
    for comp in components:
        items = await _list(api, comp)
        if items:  # loxilb's DumpFile: omitempty
            out[comp.name] = [comp.to_mod(i) for i in items]
    out["timestamp"] = datetime.now().astimezone().isoformat(timespec="seconds")  # RFC 3339
    out["version"] = pyloxi.__version__
    return out


async def _clear(api: AsyncClient, errors: list[str] | None = None) -> None:
    """Remove what an import replaces (loxilb's DeleteAllConfiguration; cluster state is kept).
    Entries that are gone already (an endpoint made by a deleted rule) are no failure. A
    refusal raises ComponentError, or, restoring (`errors` given), is noted and passed."""
    for name in CLEAR_ORDER:
        comp = EXPORTED_BY_NAME[name]
        if comp.delete is None:
            continue
        for item in await _list(api, comp) or []:
            try:
                await api.send(comp.delete(item))
            except ApiError as exc:
                message = f"{name}: removing an entry failed: {exc.message}"
                if errors is None:
                    raise ComponentError(exc.status or 500, message) from None
                errors.append(message)


async def _add(api: AsyncClient, bodies: dict[str, list[Item]],
               errors: list[str] | None = None) -> None:
    """Create the entries; restoring (`errors` given), an entry that is there already (one
    that could not be removed) is no failure, and a refusal is noted and passed."""
    for comp in EXPORTED:
        for n, body in enumerate(bodies.get(comp.name, [])):
            try:
                await api.post(comp.post_path, body)
            except ApiError as exc:
                message = f"{comp.name}[{n}]: {exc.message}"
                if errors is None:
                    raise ComponentError(exc.status or 500, message) from None
                if not isinstance(exc, Conflict):
                    errors.append(message)


async def import_config(api: AsyncClient, data: Any) -> None:
    """Replace the configuration by `data` (an export file), or leave it as it was."""
    bodies = read_import(data)  # BadConfigFile: nothing changed
    backup = await dump(api)
    counts = ", ".join(f"{len(v)} {k}" for k, v in backup.items() if isinstance(v, list))
    log.info("import: replacing the configuration (%s)", counts or "empty")
    # the whole backup only at debug: it can be megabytes
    log.debug("import: the configuration replaced: %s", json.dumps(backup, separators=(",", ":")))
    try:
        await _clear(api)
        await _add(api, bodies)
    except ComponentError as exc:
        log.warning("import failed (%s): restoring the configuration it replaced", exc.message)
        # an entry that cannot be removed is only logged: if it is one of the backup's, adding
        # it back finds it there; what the backup cannot add is the restore's failure
        stuck: list[str] = []
        await _clear(api, stuck)
        for message in stuck:
            log.error("import: restoring: %s", message)
        errors: list[str] = []
        await _add(api, read_import(backup), errors)
        if errors:
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            exc.message += f"; restoring the previous configuration was incomplete: " \
                           f"{errors[0]}{more}"
            log.error("import: restore incomplete: %s", "; ".join(errors))
        else:
            exc.message += "; the previous configuration was restored"
        raise


def _form_field(body: bytes, content_type: str, name: str) -> bytes:
    """The value of one field of a multipart/form-data body."""
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    if not message.is_multipart():
        raise InvalidInput("malformed multipart body")
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == name:
            payload = part.get_payload(decode=True)
            return payload if isinstance(payload, bytes) else b""
    raise InvalidInput(f"invalid import: no {name!r} field in the form")


def _same_site(request: Request) -> bool:
    """A form POST can be sent cross-site by any web page (no CORS preflight): accept one
    only from no browser (no Origin), this server's own pages, or an origin let in by
    /config/cors."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    cors = getattr(request.app.state, "cors", None)
    if cors is not None and cors.allows(origin):
        return True
    return urlsplit(origin).netloc == request.headers.get("host", "")


def backup_router() -> APIRouter:
    router = APIRouter(prefix="/config", tags=["backup"], route_class=LoxiRoute)

    @router.get("/export", summary="Export the configuration as loxilb's JSON file")
    async def export(request: Request, components: str | None = None) -> Response:
        try:
            wanted = components_from_query(components)
        except BadConfigFile as exc:
            raise InvalidInput(f"invalid components: {exc}") from None
        try:
            async with _loopback(request) as api:
                data = await dump(api, wanted)
        except ComponentError as exc:
            return error_response(exc.status, f"export failed: {exc.message}")
        filename = time.strftime("loxilb-config-%Y%m%d-%H%M%S.json")
        return JSONResponse(data, headers={
            "Content-Disposition": f"attachment; filename={filename}"})

    @router.post(IMPORT_PATH.removeprefix("/config"),
                 summary="Replace the configuration by an exported file",
                 openapi_extra={"requestBody": {"required": True, "content": {
                     "multipart/form-data": {"schema": {
                         "type": "object", "properties": {
                             FORM_FIELD: {"type": "string", "format": "binary"}}}},
                     "application/json": {"schema": {"type": "object"}}}}})
    async def import_(request: Request) -> Any:
        if not _same_site(request):
            return error_response(403, "import refused: cross-site form (origin not allowed "
                                       "by /config/cors)")
        body = await request.body()
        content_type = request.headers.get("content-type", "")
        if content_type.lower().startswith("multipart/form-data"):
            # off the event loop: a file may be megabytes
            body = await asyncio.to_thread(_form_field, body, content_type, FORM_FIELD)
        data = await read_json_object(body, "an export file")
        try:
            async with _loopback(request) as api:
                await import_config(api, data)
        except BadConfigFile as exc:
            raise InvalidInput(f"invalid import: {exc}") from None
        except ComponentError as exc:
            return error_response(exc.status, f"import failed: {exc.message}")
        return SUCCESS

    return router
