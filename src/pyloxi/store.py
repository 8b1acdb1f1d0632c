"""Persisted desired state: the LB rules, in loxilb's lbconfig.txt shape `{"lbAttr": [...]}`."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path

from pydantic import ValidationError

from pyloxi.model.base import REFUSED_VALUE_ERRORS
from pyloxi.model.lb import LoadBalancerEntry, LoadBalancerList

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


class JsonStore:
    """Rules as JSON at `path`. Saving is atomic: a crash leaves the old or the new file,
    never a torn one (temp file in the same directory, fsync, rename, fsync the directory)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        # id(entry) -> (entry, its JSON text); the entry is kept so its id cannot be reused
        self._dumped: dict[int, tuple[LoadBalancerEntry, str]] = {}
        self.skipped: list[str] = []  # rules the last load() left out, one reason each

    def load(self) -> list[LoadBalancerEntry]:
        """The saved rules; [] if the file does not exist. Raises StoreError if it is corrupt.
        Rules holding a value this version refuses are left out and listed in `skipped`."""
        self.skipped = []
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
            return LoadBalancerList.model_validate(data).lb_attr
        except ValidationError as exc:
            if not all(e["type"] in REFUSED_VALUE_ERRORS for e in exc.errors()):
                first = str(exc).splitlines()[0]
                raise StoreError(f"corrupt rule store {self.path}: {first}") from exc
            # Only values an older version accepted and this one refuses (e.g. a name with a
            # lone surrogate): report and skip those rules instead of refusing to start or
            # serving them (they would break every GET).
            items = next(v for k, v in data.items() if str(k).lower() == "lbattr")
            return self._load_skipping(items)
        except ValueError as exc:
            first = str(exc).splitlines()[0]
            raise StoreError(f"corrupt rule store {self.path}: {first}") from exc

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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
