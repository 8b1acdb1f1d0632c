"""The daemon's own log: loxilb's level names, where lines go, and how they are read back.

- Levels: loxilb's nine names (trace ... emergency) over Python's numbers. `LogControl` reads and
  sets the level of the `pyloxi` loggers (POST /config/params); libraries (uvicorn, pyroute2)
  keep the level the daemon started with, so `trace` does not flood the log with theirs. The
  level is not persisted (loxilb neither): a restart takes --loglevel again.
- Where: always stderr (journald, `docker logs`). With --log-file, also that file, rotated at
  --log-max-size MB into --log-max-backups gzipped archives (`pyloxi.log.1.gz` ...), as
  loxilb's lumberjack does. Without it, the last RING_LINES lines are kept in memory
  (`LogRing`), so GET /logs always has something to answer.
- Reading back (GET /logs): newest line first, paging backwards with a cursor of byte offsets
  (a file's, or the ring's count of bytes logged since start), filtered by substring, as
  loxilb's handler/log.go does. Files are named by the client only among the log's own files
  in its directory (`LogFiles.resolve`): no name can reach another path.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import gzip
import io
import logging
import logging.handlers
import os
import re
import shutil
import stat
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, TextIO

from pyloxi.model.status import LOG_LEVELS

# loxilb's levels (loxilib LogIt), most verbose first, over Python's numbers. trace, notice,
# alert and emergency have no Python level: they get their own numbers between and above.
LEVELS: Final = {
    "trace": 5, "debug": logging.DEBUG, "info": logging.INFO, "notice": 25,
    "warning": logging.WARNING, "error": logging.ERROR, "critical": logging.CRITICAL,
    "alert": 60, "emergency": 70,
}
LEVEL_NAMES: Final = LOG_LEVELS
assert set(LEVELS) == set(LOG_LEVELS)
PYLOXI_LOGGER: Final = "pyloxi"
LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
RING_LINES: Final = 10_000
MAX_RING_LINE: Final = 4096  # characters kept of one line in memory
MEMORY_LOG: Final = "memory"  # the name GET /logs gives the in-memory ring

DEFAULT_LINES: Final = 100
MAX_LINES: Final = 10_000
# A filtered search stops after examining this much (loxilb's cap), answering has_more and a
# cursor, so a keyword that matches nothing cannot pin a CPU on a huge log.
MAX_SCAN_BYTES: Final = 32 << 20
# A .gz archive is inflated in memory to be paged backwards; larger ones are refused (download
# them whole from /log-archives/{name} instead).
MAX_INFLATE_BYTES: Final = 64 << 20
READ_CHUNK: Final = 64 * 1024
MAX_LINE_BYTES: Final = 64 * 1024  # a longer "line" is cut: a file with no newline stays bounded


def _register_names() -> None:
    for name in ("trace", "notice", "alert", "emergency"):
        logging.addLevelName(LEVELS[name], name.upper())


_register_names()


class LogError(Exception):
    """A log read that cannot be answered. `code`: the HTTP status to answer with."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class LogControl:
    """The level of the `pyloxi` loggers, by loxilb's name."""

    def __init__(self, level: str = "info", logger: str = PYLOXI_LOGGER) -> None:
        self._logger = logging.getLogger(logger)
        self._lock = threading.Lock()
        self._level = ""
        self.set(level)

    def level(self) -> str:
        with self._lock:
            return self._level

    def set(self, level: str) -> None:
        """ValueError (nothing changed) for a name that is not one of LEVEL_NAMES."""
        name = level.lower()
        if name not in LEVELS:
            raise ValueError(f"invalid logLevel {level[:40]!r}: one of {', '.join(LEVEL_NAMES)}")
        with self._lock:
            self._logger.setLevel(LEVELS[name])
            self._level = name


# ------------------------------------------------------------------------------ sources


class LogRing(logging.Handler):
    """The last `capacity` lines logged, each with its byte offset since the start (one line a
    record line: a traceback is several), read back like a file that forgets its beginning."""

    def __init__(self, capacity: int = RING_LINES) -> None:
        super().__init__()
        self._lines: deque[tuple[int, str]] = deque(maxlen=capacity)
        self._total = 0
        self._ring_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # as logging.Handler does: a bad record must not break the caller
            self.handleError(record)
            return
        with self._ring_lock:
            for line in text.splitlines() or [""]:
                if len(line) > MAX_RING_LINE:  # the ring's memory is bounded by lines x this
                    line = line[:MAX_RING_LINE] + "..."
                self._lines.append((self._total, line))
                self._total += len(line.encode("utf-8", "backslashreplace")) + 1

    def snapshot(self) -> tuple[list[tuple[int, str]], int]:
        with self._ring_lock:
            return list(self._lines), self._total


def _ring_before(lines: list[tuple[int, str]], end: int) -> Iterator[tuple[int, str]]:
    i = bisect.bisect_left(lines, end, key=lambda item: item[0])
    for offset, text in reversed(lines[:i]):
        text = text.strip()
        if text:
            yield offset, text


def _file_before(f: BinaryIO, end: int) -> Iterator[tuple[int, str]]:
    """The lines of `f` that start before `end`, newest first, with their offsets."""
    pos = end
    tail = b""  # the bytes of a line whose start is not read yet
    while pos > 0:
        n = min(READ_CHUNK, pos)
        pos -= n
        f.seek(pos)
        buf = f.read(n) + tail
        parts = buf.split(b"\n")
        if pos > 0:
            tail = parts[0][-MAX_LINE_BYTES:]
            whole = parts[1:]
            offset = pos + len(parts[0]) + 1
        else:
            tail, whole, offset = b"", parts, 0
        found: list[tuple[int, bytes]] = []
        for part in whole:
            found.append((offset, part))
            offset += len(part) + 1
        for off, part in reversed(found):
            text = part[:MAX_LINE_BYTES].decode("utf-8", "replace").strip()
            if text:
                yield off, text


@dataclass(frozen=True, slots=True)
class Page:
    logs: list[str]
    log_file: str
    total_size: int
    next_offset: int  # 0: the start was reached
    scanned: int
    mtime: int

    def wire(self) -> dict[str, object]:
        has_more = self.next_offset > 0
        out: dict[str, object] = {
            "logs": self.logs, "log_file": self.log_file, "log_count": len(self.logs),
            "total_size": self.total_size, "has_more": has_more,
            "scanned_bytes": self.scanned}
        if has_more:
            out["next_cursor"] = encode_cursor(self.log_file, self.next_offset, self.mtime,
                                               self.total_size)
        return out


def collect(records: Iterable[tuple[int, str]], end: int, lines: int, level: str,
            keyword: str, scan_cap: int = MAX_SCAN_BYTES) -> tuple[list[str], int, int]:
    """Up to `lines` matching lines, newest first; (page, next offset, bytes examined). Next
    is 0 when the start was reached; a filtered search that examined `scan_cap` bytes stops
    with the offset it reached, so the client resumes there."""
    page: list[str] = []
    filtering = bool(level or keyword)
    reached = end
    for offset, text in records:
        if filtering and end - offset > scan_cap and reached < end:
            return page, reached, end - reached
        reached = offset
        if (not level or level in text) and (not keyword or keyword in text):
            page.append(text)
            if len(page) == lines:
                return page, offset, end - offset
    return page, 0, end - (reached if reached < end else end)


def encode_cursor(name: str, offset: int, mtime: int, size: int) -> str:
    """loxilb's cursor: base64 of `name:offset:mtime:size`."""
    return base64.b64encode(f"{name}:{offset}:{mtime}:{size}".encode()).decode()


def decode_cursor(text: str) -> tuple[str, int]:
    """(file name, offset); LogError(400) if it is not a cursor."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True).decode("utf-8")
        name, offset, mtime, size = raw.split(":")
        values = [int(v) for v in (offset, mtime, size)]
    except (UnicodeError, ValueError, binascii.Error):
        raise LogError(400, "Invalid cursor format") from None
    if values[0] < 0:
        raise LogError(400, "Invalid cursor format")
    return name, values[0]


def parse_lines(value: str | None) -> int:
    """?lines=: loxilb's leniency (absent, not a number or < 1 -> 100), capped."""
    if value is not None and value.strip().isdigit() and len(value.strip()) <= 9:
        n = int(value.strip())
        if n > 0:
            return min(n, MAX_LINES)
    return DEFAULT_LINES


# ------------------------------------------------------------------------------ files

_VALID_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")


@dataclass(frozen=True, slots=True)
class LogFileInfo:
    name: str
    size: int
    mtime: float


class LogFiles:
    """The --log-file and its rotated archives, all in one directory."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).absolute()
        self.dir = self.path.parent
        self.name = self.path.name
        if not _VALID_NAME.fullmatch(self.name):
            raise ValueError(f"--log-file {path}: the file name must be letters, digits, "
                             "'.', '_' or '-'")
        self._pattern = re.compile(re.escape(self.name) + r"(\.[1-9][0-9]{0,3})?(\.gz)?")

    def handler(self, max_mb: int, backups: int, compress: bool) -> logging.Handler:
        """The file handler: rotated at `max_mb` MB (0: never) into `backups` archives."""
        self.dir.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(
            self.path, maxBytes=max_mb << 20, backupCount=max(backups, 1 if max_mb else 0),
            encoding="utf-8")
        if compress:
            handler.namer = lambda name: name + ".gz"
            handler.rotator = _gzip_rotate
        return handler

    def list(self) -> list[LogFileInfo]:
        """The live file and its archives that exist, newest first."""
        out: list[LogFileInfo] = []
        try:
            entries = list(os.scandir(self.dir))
        except OSError:
            return []
        for entry in entries:
            if not self._pattern.fullmatch(entry.name):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                out.append(LogFileInfo(entry.name, st.st_size, st.st_mtime))
        out.sort(key=lambda info: (-info.mtime, info.name))
        return out

    def resolve(self, name: str) -> Path:
        """The path of one of this log's files. LogError 400 for a name that is not one of
        them (anything with a separator or `..` among others), 404 if it does not exist. A
        symbolic link is not followed: the name must be a regular file in the directory."""
        if "/" in name or "\\" in name or "\0" in name or ".." in name \
                or not self._pattern.fullmatch(name):
            raise LogError(400, "Invalid log file name")
        path = self.dir / name
        try:
            st = path.lstat()
        except OSError:
            raise LogError(404, f"log file {name} not found") from None
        if not stat.S_ISREG(st.st_mode):
            raise LogError(404, f"log file {name} not found")
        return path


def _gzip_rotate(source: str, dest: str) -> None:
    with open(source, "rb") as src, gzip.open(dest, "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.remove(source)


def _inflate(path: Path) -> bytes:
    try:
        with gzip.open(path, "rb") as f:
            data = f.read(MAX_INFLATE_BYTES + 1)
    except (OSError, EOFError, gzip.BadGzipFile):
        raise LogError(400, "archive is not a valid gzip stream") from None
    if len(data) > MAX_INFLATE_BYTES:
        raise LogError(400, "archive too large to read; download it from "
                            "/log-archives/{filename} instead")
    return data


class LogSource:
    """What GET /logs and /log-archives read: the log files, else the in-memory ring."""

    def __init__(self, files: LogFiles | None = None, ring: LogRing | None = None) -> None:
        self.files = files
        self.ring = ring

    def archives(self) -> list[LogFileInfo]:
        return self.files.list() if self.files is not None else []

    def archive_path(self, name: str) -> Path:
        if self.files is None:
            raise LogError(404, f"log file {name} not found")
        return self.files.resolve(name)

    def page(self, *, lines: int, level: str = "", keyword: str = "", cursor: str = "",
             file: str = "") -> Page:
        want_name, want_offset = decode_cursor(cursor) if cursor else ("", -1)
        if self.files is None:
            if file and file != MEMORY_LOG:
                raise LogError(404, f"log file {file} not found (no --log-file)")
            ring_lines, total = self.ring.snapshot() if self.ring is not None else ([], 0)
            end = want_offset if want_name == MEMORY_LOG and 0 <= want_offset <= total \
                else total
            page, nxt, scanned = collect(_ring_before(ring_lines, end), end, lines, level,
                                         keyword)
            return Page(page, MEMORY_LOG, total, nxt, scanned, 0)
        name = file or self.files.name
        path = self.files.resolve(name)
        with open(path, "rb") as raw:
            mtime = int(os.fstat(raw.fileno()).st_mtime)
            data: BinaryIO = io.BytesIO(_inflate(path)) if name.endswith(".gz") else raw
            size = data.seek(0, io.SEEK_END)
            # a cursor for another file, or past the end (rotated since): from the newest
            end = want_offset if want_name == name and 0 <= want_offset <= size else size
            page, nxt, scanned = collect(_file_before(data, end), end, lines, level, keyword)
        return Page(page, name, size, nxt, scanned, mtime)


def setup(level: str, *, log_file: str | None = None, max_mb: int = 50, backups: int = 4,
          compress: bool = True, stream: TextIO | None = None) -> tuple[LogControl, LogSource]:
    """The daemon's logging: stderr, plus the log file or the ring; the `pyloxi` loggers at
    `level`, the root (libraries) at `level` too but never below debug."""
    formatter = logging.Formatter(LOG_FORMAT)
    root = logging.getLogger()
    handlers: list[logging.Handler] = [logging.StreamHandler(stream)]
    files = LogFiles(log_file) if log_file else None
    ring = None if files is not None else LogRing()
    if files is not None:
        handlers.append(files.handler(max_mb, backups, compress))
    if ring is not None:
        handlers.append(ring)
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(max(LEVELS[level.lower()], logging.DEBUG))
    return LogControl(level), LogSource(files, ring)
