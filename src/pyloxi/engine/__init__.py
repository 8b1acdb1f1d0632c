"""Decisions without I/O: validation, the rule table, endpoint indexes, selection tables."""
