"""REST server, loxilb-compatible under /netlox/v1."""

from pyloxi.api.app import BASE_PATH, create_app

__all__ = ["BASE_PATH", "create_app"]
