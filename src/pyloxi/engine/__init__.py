"""Decisions without I/O: validation, the rule table, endpoint indexes, selection tables."""

from pyloxi.engine.engine import Engine
from pyloxi.engine.storage import (
    Commit,
    Delete,
    Put,
    RuleStore,
    StoreFailure,
    StoreOp,
    entry_store_key,
    store_key,
)

__all__ = ["Commit", "Delete", "Engine", "Put", "RuleStore", "StoreFailure", "StoreOp",
           "entry_store_key", "store_key"]
