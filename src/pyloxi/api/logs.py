"""The daemon's log over the API (loxilb handler/log.go):

- GET /logs                    query lines (default 100, at most 10000), level, keyword (each a
                               substring a line must contain), cursor (a previous answer's
                               next_cursor: the next, older page), file (one of /log-archives'
                               names; default the live log). Newest line first. Answers Logs
                               {logs, log_file, log_count, total_size, has_more, next_cursor,
                               scanned_bytes}.
- GET /log-archives            {archives: [name], archive_info: [{name, size_bytes, modified}]}
                               the log file and its rotated archives, newest first.
- GET /log-archives/{filename} one of them, as it is on disk (application/octet-stream).

A name that is not one of the log's own files is a 400 (a path, `..`, another file of the
directory), one that no longer exists a 404 (loxilb answers 500). Without --log-file the
daemon keeps its last lines in memory: /logs reads those (log_file "memory") and there are no
archives. What is read comes from pyloxi.oplog.LogSource.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from pyloxi.api.errors import LoxiRoute
from pyloxi.model.errors import PyloxiError
from pyloxi.model.status import LogArchives, Logs
from pyloxi.oplog import LogError, LogSource, parse_lines

CHUNK = 64 * 1024


def _raise(exc: LogError) -> PyloxiError:
    return PyloxiError(exc.code, exc.message)


def _send_file(path: Path) -> StreamingResponse:
    """The file's bytes as they are when opened: the live log grows while it is sent, and
    more bytes than the Content-Length announced would break the response."""
    f = open(path, "rb")  # noqa: SIM115 (closed by the generator)
    size = os.fstat(f.fileno()).st_size

    def chunks() -> Iterator[bytes]:
        with f:
            left = size
            while left > 0:
                data = f.read(min(CHUNK, left))
                if not data:
                    break  # truncated meanwhile: the client sees a short body
                left -= len(data)
                yield data

    return StreamingResponse(chunks(), media_type="application/octet-stream", headers={
        "content-length": str(size),
        "content-disposition": f'attachment; filename="{path.name}"'})


def logs_router(source: LogSource) -> APIRouter:
    router = APIRouter(tags=["logs"], route_class=LoxiRoute)

    @router.get("/logs", summary="The daemon's log lines, newest first, filtered and paged",
                response_model=Logs, response_model_exclude_none=True)
    def get_logs(lines: str | None = Query(None, max_length=32),
                 level: str = Query("", max_length=256),
                 keyword: str = Query("", max_length=1024),
                 cursor: str = Query("", max_length=2048),
                 file: str = Query("", max_length=512)) -> dict[str, Any]:
        try:
            page = source.page(lines=parse_lines(lines), level=level, keyword=keyword,
                               cursor=cursor, file=file)
        except LogError as exc:
            raise _raise(exc) from None
        return page.wire()

    @router.get("/log-archives", summary="The log file and its rotated archives",
                response_model=LogArchives)
    def list_archives() -> dict[str, Any]:
        infos = source.archives()
        return {"archives": [i.name for i in infos],
                "archive_info": [{"name": i.name, "size_bytes": i.size,
                                  "modified": dt.datetime.fromtimestamp(
                                      i.mtime, dt.UTC).isoformat().replace("+00:00", "Z")}
                                 for i in infos]}

    @router.get("/log-archives/{filename}", summary="Download the log file or an archive",
                response_class=StreamingResponse,
                responses={200: {"content": {"application/octet-stream": {}}}})
    def get_archive(filename: str) -> StreamingResponse:
        try:
            return _send_file(source.archive_path(filename))
        except LogError as exc:
            raise _raise(exc) from None
        except OSError as exc:  # removed (rotated away) between the check and the open
            raise PyloxiError(404, f"log file {filename} not found: {exc.strerror}") from None

    return router
