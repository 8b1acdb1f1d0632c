"""Persisted desired state: the LB rules.

`SqliteStore` is the daemon's store: one row per rule in SQLite (WAL mode, synchronous=FULL),
written by one thread that commits everything submitted since its last commit in one
transaction, so concurrent requests share one flush (group commit) and a change is answered
only once it is on disk. `JsonStore` reads (and writes) loxilb's lbconfig.txt shape
`{"lbAttr": [...]}`: the format of earlier pyloxi versions, imported once on first start.

Both store the wire form (`LoadBalancerEntry`, loxilb's keys), so state written by an earlier
version loads as it is. Options earlier versions accepted and ignored, and this one answers
"not supported yet" (none today; bgp was one), are dropped on load with a warning, so such a
rule applies as it did rather than failing to.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import ValidationError

from pyloxi.engine import Put, StoreFailure, StoreOp, entry_store_key
from pyloxi.engine.validate import drop_unsupported
from pyloxi.model.base import REFUSED_VALUE_ERRORS
from pyloxi.model.firewall import FirewallEntry
from pyloxi.model.lb import LoadBalancerEntry, LoadBalancerList
from pyloxi.model.mirror import MirrorEntry
from pyloxi.model.policy import PolicyEntry

log = logging.getLogger("pyloxi.store")


class StoreError(Exception):
    """The store file exists but cannot be read as rules."""


def _describe(item: object) -> str:
    """' (20.20.20.1:80/tcp)' from a raw stored rule, best effort, for the skip report."""
    if not isinstance(item, dict):
        return ""
    svc = {str(k).lower(): v for k, v in item.items()}.get("servicearguments")
    if not isinstance(svc, dict):
        return ""
    low = {str(k).lower(): v for k, v in svc.items()}
    return ascii(f" ({low.get('externalip')}:{low.get('port')}/{low.get('protocol')})")[1:-1]


def _without_unsupported(
    entry: LoadBalancerEntry, where: str, notes: list[str]
) -> LoadBalancerEntry:
    """`entry` without the options earlier versions ignored and this one refuses; a note of
    what was dropped goes to `notes` and the log."""
    entry, note = drop_unsupported(entry)
    if note is not None:
        a = entry.service_arguments
        notes.append(f"{where} ({a.external_ip}:{a.port}/{a.protocol}): {note}")
        log.warning("%s", notes[-1])
    return entry


class JsonStore:
    """Rules as JSON at `path`. Saving is atomic: a crash leaves the old or the new file,
    never a torn one (temp file in the same directory, fsync, rename, fsync the directory)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        # id(entry) -> (entry, its JSON text); the entry is kept so its id cannot be reused
        self._dumped: dict[int, tuple[LoadBalancerEntry, str]] = {}
        self.skipped: list[str] = []  # rules the last load() left out, one reason each
        self.upgraded: list[str] = []  # rules the last load() dropped an option of

    def load(self) -> list[LoadBalancerEntry]:
        """The saved rules; [] if the file does not exist. Raises StoreError if it is corrupt.
        Rules holding a value this version refuses are left out and listed in `skipped`."""
        self.skipped, self.upgraded = [], []
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StoreError(f"cannot read rule store {self.path}: {exc}") from exc
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError('top level must be an object {"lbAttr": [...]}')
            return self._upgrade(LoadBalancerList.model_validate(data).lb_attr)
        except ValidationError as exc:
            if not all(e["type"] in REFUSED_VALUE_ERRORS for e in exc.errors()):
                first = str(exc).splitlines()[0]
                raise StoreError(f"corrupt rule store {self.path}: {first}") from exc
            # Only values an older version accepted and this one refuses (e.g. a name with a
            # lone surrogate): report and skip those rules instead of refusing to start or
            # serving them (they would break every GET).
            items = next(v for k, v in data.items() if str(k).lower() == "lbattr")
            return self._upgrade(self._load_skipping(items))
        except ValueError as exc:
            first = str(exc).splitlines()[0]
            raise StoreError(f"corrupt rule store {self.path}: {first}") from exc

    def _upgrade(self, rules: list[LoadBalancerEntry]) -> list[LoadBalancerEntry]:
        where = f"rule store {self.path}: rule"
        return [_without_unsupported(r, where, self.upgraded) for r in rules]

    def _load_skipping(self, items: list[object]) -> list[LoadBalancerEntry]:
        rules: list[LoadBalancerEntry] = []
        for i, item in enumerate(items):
            try:
                rules.append(LoadBalancerEntry.model_validate(item))
            except ValidationError as exc:
                err = exc.errors()[0]
                where = ".".join(str(p) for p in err["loc"])
                self.skipped.append(f"rule #{i}{_describe(item)}: invalid {where}: {err['msg']}")
                log.error("rule store %s: skipping %s", self.path, self.skipped[-1])
        return rules

    def save(self, rules: list[LoadBalancerEntry]) -> None:
        # Stored entries are never mutated (the engine replaces them), so each is dumped once.
        cache, self._dumped = self._dumped, {}
        for r in rules:
            hit = cache.get(id(r))
            self._dumped[id(r)] = hit if hit is not None and hit[0] is r else (
                r, json.dumps(r.model_dump(by_alias=True, mode="json", exclude_none=True)))
        payload = '{"lbAttr": [' + ", ".join(self._dumped[id(r)][1] for r in rules) + "]}\n"
        write_atomic(self.path, payload)


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text`: a crash leaves the old or the new file, never a torn one
    (temp file in the same directory, fsync, rename, fsync the directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


DB_NAME = "lbconfig.db"
LEGACY_NAME = "lbconfig.json"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rules (
    key   TEXT PRIMARY KEY,
    ord   INTEGER NOT NULL,   -- listing order: a new key goes last, an update keeps its place
    entry TEXT NOT NULL       -- the rule as posted (canonical), lbconfig.txt's object shape
);
CREATE INDEX IF NOT EXISTS rules_ord ON rules(ord);
"""


def _dump(entry: LoadBalancerEntry) -> str:
    # pydantic's own JSON encoder: a third of json.dumps(model_dump(...))'s time, in the writer
    # thread, which shares the GIL with the event loop. The same keys and values (compact, UTF-8
    # rather than \u escapes); load() reads rows with model_validate_json either way.
    return entry.model_dump_json(by_alias=True, exclude_none=True)


# Guards every commit's done flag against its callback list (a registration racing the
# writer's resolve must not be lost); held for a few instructions at a time.
_CALLBACKS = threading.Lock()


class _Commit:
    """One submission: its ops, and how its submitter learns the outcome: `wait` (a thread),
    or the callbacks it registered (an asyncio caller waits without a thread of its own). The
    event `wait` blocks on is made only for a commit someone waits on: most are answered
    through a callback, and an Event (a Condition and two locks) per create is not free."""

    __slots__ = ("seq", "ops", "_done", "_event", "_error", "_callbacks")

    def __init__(self, seq: int, ops: Sequence[StoreOp]) -> None:
        self.seq = seq
        self.ops = ops
        self._done = False
        self._event: threading.Event | None = None
        self._error: StoreFailure | None = None
        self._callbacks: list[Callable[[], None]] | None = None

    def add_done_callback(self, callback: Callable[[], None]) -> None:
        """Call `callback` once resolved (at once if it is): from the writer thread, so it
        must be quick and thread-safe (loop.call_soon_threadsafe)."""
        with _CALLBACKS:
            if not self._done:
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append(callback)
                return
        callback()

    def resolve(self, error: StoreFailure | None) -> None:
        self._error = error
        with _CALLBACKS:
            self._done = True
            callbacks, self._callbacks = self._callbacks, None
            event = self._event
        if event is not None:
            event.set()
        for callback in callbacks or ():
            try:
                callback()
            except Exception:  # the writer thread must survive to answer the others
                log.exception("rule store: commit callback failed")

    def wait(self) -> None:
        with _CALLBACKS:
            if not self._done and self._event is None:
                self._event = threading.Event()
            event = None if self._done else self._event
        if event is not None:
            event.wait()
        if self._error is not None:
            raise self._error


class SqliteStore:
    """The engine's RuleStore, in `<state_dir>/lbconfig.db`.

    - `load()` at start reads (and checks) the rules without writing: a corrupt, truncated or
      unreadable file is a StoreError naming the file, and stays untouched. A `lbconfig.json`
      of an earlier pyloxi, with no database yet, is imported (and renamed `.imported`).
    - `submit()` queues ops and returns at once; the writer thread commits all that is queued
      in one transaction (synchronous=FULL: the WAL is fsynced before COMMIT returns) and then
      wakes every submitter. A failed transaction is rolled back whole, and every submission
      from it on fails with the same StoreFailure until the engine, having undone them, calls
      `resume()`. Nothing is retried in a loop: each write is a client's request, so a full or
      read-only disk costs one failed attempt per request, and the log says so at most every
      LOG_EVERY_S. If the database cannot even be opened for writing (read-only directory),
      reopening is attempted at most every REOPEN_MIN_S..REOPEN_MAX_S (doubling).
    """

    LOG_EVERY_S = 10.0
    REOPEN_MIN_S = 1.0
    REOPEN_MAX_S = 30.0

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(state_dir)
        self.path = self.dir / DB_NAME
        self.legacy = self.dir / LEGACY_NAME
        self._conn: sqlite3.Connection | None = None
        self._down: str | None = None  # why there is no writable connection
        self._reopen_at = 0.0
        self._reopen_wait = self.REOPEN_MIN_S
        # The queue's lock, and how the writer sleeps: on an eventfd, not a Condition. A
        # Condition's notify releases a lock with the GIL held; on a busy machine the woken
        # writer preempted the event loop right there, on its core, and the loop then waited
        # for its next time slice still holding the GIL (nobody could run Python: py-spy put
        # 19 % of the loop's GIL time under 16 clients inside notify). os.eventfd_write drops
        # the GIL around the syscall, so the writer can run while the loop is preempted.
        self._mutex = threading.Lock()
        self._wake = os.eventfd(0, os.EFD_CLOEXEC)
        self._sleeping = False  # the writer is (about to be) blocked reading `_wake`
        self._queue: list[_Commit] = []
        self._seq = 0
        self._halted: StoreFailure | None = None
        self._closing = False
        self._failures = 0  # failed writes not yet reported in the log
        self._log_at = 0.0
        self._thread: threading.Thread | None = None
        self.skipped: list[str] = []  # stored rules load() left out, one reason each
        self.upgraded: list[str] = []  # stored rules load() dropped an option of

    # ------------------------------------------------------------------ start

    def load(self) -> tuple[list[str], list[LoadBalancerEntry]]:
        """The persisted rules (store keys, entries) in listing order, then the store opened
        for writing (or marked read-only). Raises StoreError if the state cannot be read."""
        if self.path.exists() or self.path.is_symlink():
            keys, entries = self._read_db()
            self._open_rw(migrate=None)
        elif self.legacy.exists():
            legacy = JsonStore(self.legacy)
            entries = legacy.load()
            self.skipped += legacy.skipped
            self.upgraded += legacy.upgraded
            keys = [entry_store_key(e) or f"?{n}" for n, e in enumerate(entries)]
            self._open_rw(migrate=(keys, entries))
        else:
            keys, entries = [], []
            self._open_rw(migrate=None)
        self._thread = threading.Thread(target=self._run, name="rule-store", daemon=True)
        self._thread.start()
        return keys, entries

    def _read_db(self) -> tuple[list[str], list[LoadBalancerEntry]]:
        if not self.path.is_file():
            raise StoreError(f"cannot read rule store {self.path}: not a regular file")
        try:
            with open(self.path, "rb") as f:
                f.read(1)
        except OSError as exc:
            raise StoreError(f"cannot read rule store {self.path}: {exc.strerror}") from exc
        if self.path.stat().st_size == 0:
            raise StoreError(f"corrupt rule store {self.path}: empty file (truncated?)")
        sides = [self.path.with_name(self.path.name + s) for s in ("-wal", "-shm")]
        existed = [p.exists() for p in sides]
        try:
            return self._parse(self._read_any())
        except StoreError:
            # Leave the directory as we found it: drop the side files this read created.
            for side, was in zip(sides, existed, strict=True):
                if not was:
                    with contextlib.suppress(OSError):
                        side.unlink()
            raise

    def _read_any(self) -> list[tuple[str, str]]:
        try:
            return self._read_rows(f"file:{self.path}?mode=ro")
        except sqlite3.OperationalError as exc:
            if "unable to open" not in str(exc):
                raise StoreError(f"cannot read rule store {self.path}: {exc}") from exc
            # Read-only directory and no -shm file to share: read the file as it is.
            try:
                return self._read_rows(f"file:{self.path}?immutable=1")
            except sqlite3.Error as exc2:
                raise StoreError(f"cannot read rule store {self.path}: {exc2}") from exc2
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"corrupt rule store {self.path}: {exc}") from exc

    def _parse(self, rows: list[tuple[str, str]]) -> tuple[list[str], list[LoadBalancerEntry]]:
        keys: list[str] = []
        entries: list[LoadBalancerEntry] = []
        for key, text in rows:
            try:
                entry = LoadBalancerEntry.model_validate_json(text)
            except ValidationError as exc:
                first = str(exc).splitlines()[0]
                if all(e["type"] in REFUSED_VALUE_ERRORS for e in exc.errors()):
                    # a value this version refuses: report the rule and leave it out (kept
                    # on disk) rather than serve something that breaks every listing
                    self.skipped.append(f"rule {key!r}: {first}")
                    log.error("stored rule %r not loaded: %s", key, first)
                    continue
                raise StoreError(f"corrupt rule store {self.path}: rule {key!r}: {first}") from exc
            entries.append(_without_unsupported(entry, f"stored rule {key!r}", self.upgraded))
            keys.append(key)
        return keys, entries

    def _read_rows(self, uri: str) -> list[tuple[str, str]]:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None)
        try:
            problems = [r[0] for r in conn.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise sqlite3.DatabaseError("; ".join(problems[:3]))
            names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            if "rules" not in names:
                raise sqlite3.DatabaseError("no rules table (not a pyloxi rule store)")
            return [(str(k), str(e)) for k, e in
                    conn.execute("SELECT key, entry FROM rules ORDER BY ord")]
        finally:
            conn.close()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")  # fsync the WAL at every commit
            conn.execute("PRAGMA journal_size_limit=4194304")
            conn.executescript(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        return conn

    def _open_rw(self, migrate: tuple[list[str], list[LoadBalancerEntry]] | None) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            conn = self._connect()
        except (sqlite3.Error, OSError) as exc:
            self._went_down(self._explain(exc))
            log.error("%s; rule changes will be refused until it can be written", self._down)
            return
        self._conn = conn
        self._down = None
        if migrate is None:
            return
        keys, entries = migrate
        try:
            self._write([_Commit(0, [Put(k, e) for k, e in zip(keys, entries, strict=True)])])
            os.replace(self.legacy, self.legacy.with_name(LEGACY_NAME + ".imported"))
            _fsync_dir(self.dir)
        except (sqlite3.Error, OSError) as exc:
            # The old file stays the source of truth (the next start imports it again).
            raise StoreError(f"cannot import {self.legacy} into {self.path}: {exc}") from exc
        log.info("imported %d rules from %s into %s", len(entries), self.legacy, self.path)

    def _went_down(self, why: str) -> None:
        self._down = why
        self._reopen_at = time.monotonic() + self._reopen_wait
        self._reopen_wait = min(self._reopen_wait * 2, self.REOPEN_MAX_S)

    def _explain(self, exc: BaseException) -> str:
        why = str(exc)
        with contextlib.suppress(OSError):
            if os.statvfs(self.dir).f_flag & os.ST_RDONLY:
                why = f"state directory {self.dir} is on a read-only filesystem ({why})"
        return f"cannot persist rules to {self.path}: {why}"

    @property
    def writable(self) -> bool:
        return self._conn is not None

    # ------------------------------------------------------------------ RuleStore

    def submit(self, ops: Sequence[StoreOp]) -> _Commit:
        with self._mutex:
            self._seq += 1
            commit = _Commit(self._seq, ops)
            if self._halted is not None:
                commit.resolve(self._halted)
                return commit
            if self._closing:
                commit.resolve(StoreFailure(commit.seq, f"rule store {self.path} is closed"))
                return commit
            self._queue.append(commit)
            wake, self._sleeping = self._sleeping, False
        if wake:  # outside the lock, and without the GIL (see __init__)
            os.eventfd_write(self._wake, 1)
        return commit

    def resume(self, from_seq: int) -> None:
        with self._mutex:
            if self._halted is not None and self._halted.from_seq == from_seq:
                self._halted = None

    def close(self) -> None:
        """Write what is queued, stop the writer, close the database (checkpointed)."""
        with self._mutex:
            first, self._closing = not self._closing, True
        if first:
            os.eventfd_write(self._wake, 1)
        if self._thread is not None:
            self._thread.join(timeout=30)
        if first and (self._thread is None or not self._thread.is_alive()):
            os.close(self._wake)
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None

    # ------------------------------------------------------------------ writer

    def _run(self) -> None:
        while True:
            with self._mutex:
                idle = not self._queue and not self._closing
                self._sleeping = idle
            if idle:
                os.eventfd_read(self._wake)  # a submit (or close) after `_sleeping` was set
                continue
            with self._mutex:
                if not self._queue:
                    return  # closing, nothing left
                batch, self._queue = self._queue, []
            error = self._try_write(batch)
            if error is None:
                for c in batch:
                    c.resolve(None)
                continue
            failure = StoreFailure(batch[0].seq, error)
            with self._mutex:
                self._halted = failure
                later, self._queue = self._queue, []
            for c in batch + later:
                c.resolve(failure)

    def _try_write(self, batch: list[_Commit]) -> str | None:
        if self._conn is None:
            if time.monotonic() < self._reopen_at:
                return self._report(self._down or "rule store not open")
            try:
                self._conn = self._connect()
            except (sqlite3.Error, OSError) as exc:
                self._went_down(self._explain(exc))
                return self._report(self._down or "")
            log.warning("rule store %s is writable again", self.path)
            self._down = None
            self._reopen_wait = self.REOPEN_MIN_S
        try:
            self._write(batch)
        except Exception as exc:  # anything: the writer thread must survive to answer others
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
            return self._report(self._explain(exc))
        if self._failures:
            log.warning("rule store %s: writes succeed again (%d failed since last report)",
                        self.path, self._failures)
            self._failures = 0
        return None

    def _write(self, batch: list[_Commit]) -> None:
        assert self._conn is not None
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        for commit in batch:
            for op in commit.ops:
                if isinstance(op, Put):
                    conn.execute(
                        "INSERT INTO rules(key, ord, entry) VALUES "
                        "(?, (SELECT COALESCE(MAX(ord), 0) + 1 FROM rules), ?) "
                        "ON CONFLICT(key) DO UPDATE SET entry = excluded.entry",
                        (op.key, _dump(op.entry)))
                else:
                    conn.execute("DELETE FROM rules WHERE key = ?", (op.key,))
        conn.execute("COMMIT")

    def _report(self, why: str) -> str:
        """Log a failed write, at most once every LOG_EVERY_S (a client retrying in a loop
        must not fill the disk with tracebacks)."""
        self._failures += 1
        now = time.monotonic()
        if now >= self._log_at:
            log.error("%s (%d failed writes since last report)", why, self._failures)
            self._failures = 0
            self._log_at = now + self.LOG_EVERY_S
        return why


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_firewall(path: Path) -> list[FirewallEntry]:
    """The firewall rules `save_firewall` wrote ({"fwAttr": [...]}, loxicmd's FWconfig form);
    none when the file is missing. A rule this version refuses, or an unreadable file, is
    logged and left out: the daemon still starts."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        log.warning("firewall file %s unreadable, starting with no rules: %s", path, exc)
        return []
    items = data.get("fwAttr") if isinstance(data, dict) else None
    if not isinstance(items, list):
        log.warning("firewall file %s: no fwAttr list, starting with no rules", path)
        return []
    out = []
    for item in items:
        try:
            out.append(FirewallEntry.model_validate(item))
        except ValidationError as exc:
            log.warning("firewall file %s: rule %r left out: %s", path, item, exc)
    return out


def save_firewall(path: Path, rules: list[FirewallEntry]) -> None:
    body = [r.model_dump(by_alias=True, mode="json", exclude={"opts": {"counter"}})
            for r in rules]
    write_atomic(path, json.dumps({"fwAttr": body}) + "\n")


def load_mirrors(path: Path) -> list[MirrorEntry]:
    """The mirrors `save_mirrors` wrote ({"mirrAttr": [...]}); none when the file is missing.
    A mirror this version refuses, or an unreadable file, is logged and left out."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        log.warning("mirror file %s unreadable, starting with no mirrors: %s", path, exc)
        return []
    items = data.get("mirrAttr") if isinstance(data, dict) else None
    if not isinstance(items, list):
        log.warning("mirror file %s: no mirrAttr list, starting with no mirrors", path)
        return []
    out = []
    for item in items:
        try:
            out.append(MirrorEntry.model_validate(item))
        except ValidationError as exc:
            log.warning("mirror file %s: mirror %r left out: %s", path, item, exc)
    return out


def save_mirrors(path: Path, mirrors: list[MirrorEntry]) -> None:
    body = [m.wire() for m in mirrors]
    write_atomic(path, json.dumps({"mirrAttr": body}) + "\n")


def load_policies(path: Path) -> list[PolicyEntry]:
    """The policers `save_policies` wrote ({"polAttr": [...]}); none when the file is missing.
    One this version refuses, or an unreadable file, is logged and left out."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        log.warning("policy file %s unreadable, starting with no policers: %s", path, exc)
        return []
    items = data.get("polAttr") if isinstance(data, dict) else None
    if not isinstance(items, list):
        log.warning("policy file %s: no polAttr list, starting with no policers", path)
        return []
    out = []
    for item in items:
        try:
            out.append(PolicyEntry.model_validate(item))
        except ValidationError as exc:
            log.warning("policy file %s: policer %r left out: %s", path, item, exc)
    return out


def save_policies(path: Path, pols: list[PolicyEntry]) -> None:
    body = [p.model_dump(by_alias=True, mode="json", exclude={"stats"}) for p in pols]
    write_atomic(path, json.dumps({"polAttr": body}) + "\n")
