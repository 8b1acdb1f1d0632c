"""Decisions without I/O: validation, the rule table, endpoint indexes, selection tables."""

from pyloxi.engine.engine import (
    Commit,
    Delete,
    Engine,
    Put,
    RuleStore,
    StoreFailure,
    StoreOp,
    entry_store_key,
    store_key,
)

__all__ = ["Commit", "Delete", "Engine", "Put", "RuleStore", "StoreFailure", "StoreOp",
           "entry_store_key", "store_key"]
