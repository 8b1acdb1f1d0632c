"""One client for /netlox/v1 (pyloxi's and loxilb's REST API), used by the CLI and the k8s agent.

    with Client("http://127.0.0.1:11111") as api:
        api.create_loadbalancer(entry)
    async with AsyncClient(url) as api:
        await api.delete_loadbalancer("20.0.0.1", 80, "tcp", missing_ok=True)

Failures raise one ApiError subclass per meaning (BadRequest, NotFound, Conflict,
CapacityExceeded, ServerError, Unreachable), each with the HTTP status, message, method and URL.
"""

from pyloxi.client.calls import API_PREFIX, Call, path_segment, rule_body
from pyloxi.client.errors import (
    ApiError,
    BadRequest,
    CapacityExceeded,
    Conflict,
    NotFound,
    ServerError,
    Unauthorized,
    Unreachable,
)
from pyloxi.client.http import AsyncClient, Client

__all__ = [
    "API_PREFIX",
    "ApiError",
    "AsyncClient",
    "BadRequest",
    "Call",
    "CapacityExceeded",
    "Client",
    "Conflict",
    "NotFound",
    "ServerError",
    "Unauthorized",
    "Unreachable",
    "path_segment",
    "rule_body",
]
