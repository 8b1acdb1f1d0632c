"""The web view: GET /ui (one page) and /ui/static/<file>, on the API's own port.

The page is plain HTML, CSS and JavaScript shipped in the package (pyloxi/ui/): nothing is
fetched from outside the machine. It polls the ordinary API once a second (rules with their
per-endpoint counters, conntrack, endpoint health) and works out packets/s, active flows and
recent events in the browser, so the server side is only these static files.

With token authentication the page and its files need no token (they hold no data); the page
asks for one and sends it with each API call, as any client does.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Final

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response

UI_PATH: Final = "/ui"
STATIC_PATH: Final = "/ui/static"
# every file the page uses, with its type: nothing else under /ui/static is served
STATIC_FILES: Final = {
    "ui.js": "text/javascript; charset=utf-8",
    "ui.css": "text/css; charset=utf-8",
}
# The page runs only its own files, talks only to its own origin and cannot be framed.
_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


@cache
def _asset(name: str) -> bytes:
    return (resources.files("pyloxi") / "ui" / name).read_bytes()


def exempt_paths() -> set[str]:
    """The paths that need no token (they carry no state, only the page's code)."""
    return {UI_PATH, f"{UI_PATH}/", *(f"{STATIC_PATH}/{name}" for name in STATIC_FILES)}


# the route templates, for the request metrics (they are not under the API's base path)
ROUTES: Final = frozenset({UI_PATH, f"{UI_PATH}/", STATIC_PATH + "/{name}"})


def ui_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get(UI_PATH)
    @router.get(f"{UI_PATH}/")
    async def page() -> Response:
        return Response(_asset("index.html"), media_type="text/html; charset=utf-8",
                        headers=_HEADERS)

    @router.get(STATIC_PATH + "/{name}")
    async def static(name: str) -> Response:
        media = STATIC_FILES.get(name)
        if media is None:
            raise HTTPException(404, f"no such file: {name[:64]!r}")
        return Response(_asset(name), media_type=media, headers=_HEADERS)

    return router
