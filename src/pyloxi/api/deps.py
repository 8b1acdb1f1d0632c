"""Request-scoped access to the objects the app was built with."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request


def get_engine(request: Request) -> Any:
    """The Engine given to create_app (typed loosely: the API only needs its methods)."""
    return request.app.state.engine


EngineDep = Annotated[Any, Depends(get_engine)]
