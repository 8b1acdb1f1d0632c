"""Decisions without I/O: validation, the rule table, endpoint indexes, selection tables."""

from pyloxi.engine.engine import Engine, RuleStore

__all__ = ["Engine", "RuleStore"]
