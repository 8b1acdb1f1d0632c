"""loxilb's user, token and OAuth routes (handler/auth.go, user.go, oauth2.go).

With `--userservice` (api/users.py):

- POST   /auth/login          {username, password} -> {"token": t}   (open: no token needed)
- POST   /auth/logout         revokes the token it carries           {"message": "Success"}
- GET    /auth/users          [{id, username, role, created_at}]     (never a password or hash)
- POST   /auth/users          {username, password, role?}            admin only
- PUT    /auth/users/{id}     {username?, password?, role?}          admin only
- DELETE /auth/users/{id}                                             admin only

Without it those paths answer 404 "user service is not enabled" (loxilb leaves them
unregistered: go-openapi's 501 "not implemented", a 5xx not copied).

- POST /auth/token/upgrade, always: `{"license_key": T}` makes T the manual token (loxilb: the
  token file is rewritten with it, mode 0600); an empty body or `{}` with a login token renews
  it (pyloxi's refresh: a new token, the old one revoked; loxilb has no refresh for its users).
- GET /oauth/{provider}, /callback, /token: no OAuth2 provider can be reached from pyloxi (they
  need the internet and a registered client), so every provider answers 400 (the swagger's
  code for an invalid provider) with why, with or without `--oauth2`.

loxilb answers a failed login 200 with an empty token; pyloxi answers 401.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Final, TypeVar

from fastapi import APIRouter, Request
from pydantic import AfterValidator, BaseModel, Field, ValidationError
from pydantic_core import PydanticCustomError
from starlette.concurrency import run_in_threadpool

from pyloxi.api.errors import SUCCESS, LoxiRoute, validation_reason
from pyloxi.api.guard import read_json_object
from pyloxi.api.security import (
    MAX_TOKEN_BYTES,
    PERMISSION_DENIED,
    Principal,
    TokenCheck,
    parse_tokens,
)
from pyloxi.api.users import MAX_PASSWORD, Credentials, UserStore
from pyloxi.model.base import WireModel, text_problem, wire_names
from pyloxi.model.errors import InvalidInput, NotFound, PyloxiError

LOGIN: Final = "/auth/login"
LOGOUT: Final = "/auth/logout"
UPGRADE: Final = "/auth/token/upgrade"
log = logging.getLogger("pyloxi.api.auth")
M = TypeVar("M", bound=BaseModel)
NOT_ENABLED: Final = "user service is not enabled (start the daemon with --userservice)"


def _text(value: str) -> str:
    problem = text_problem(value)
    if problem is not None:
        raise PydanticCustomError(problem[0], problem[1])
    return value


Secret = Annotated[str, Field(max_length=MAX_PASSWORD), AfterValidator(_text)]
UserName = Annotated[str, Field(max_length=64), AfterValidator(_text)]


class LoginBody(WireModel):
    model_config = wire_names(username="username", password="password")
    username: UserName
    password: Secret


class UserBody(WireModel):
    """loxilb's User (id and created_at are the server's: ignored if sent)."""

    model_config = wire_names(username="username", password="password", role="role")
    username: UserName
    password: Secret
    role: Annotated[str, Field(max_length=16)] = ""


class UserUpdate(WireModel):
    model_config = wire_names(username="username", password="password", role="role")
    username: UserName | None = None
    password: Secret | None = None
    role: Annotated[str, Field(max_length=16)] | None = None


class UpgradeBody(WireModel):
    model_config = wire_names(license_key="license_key")
    license_key: Annotated[str, Field(max_length=MAX_TOKEN_BYTES)] | None = None


def _body(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    return {"requestBody": {"required": required, "content": {"application/json": {
        "schema": model.model_json_schema(by_alias=True)}}}}


async def _parse(request: Request, model: type[M], what: str, *, empty_ok: bool = False) -> M:
    raw = await request.body()
    data = {} if empty_ok and not raw.strip() else await read_json_object(raw, what)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(validation_reason(exc.errors())) from None


def _principal(request: Request) -> Principal | None:
    who = getattr(request.state, "principal", None)
    return who if isinstance(who, Principal) else None


def users_router(users: UserStore) -> APIRouter:
    router = APIRouter(prefix="/auth", tags=["auth"], route_class=LoxiRoute)

    @router.post("/login", summary="Log in: a token for the user's name and password",
                 openapi_extra=_body(LoginBody),
                 responses={401: {"description": "wrong username or password"}})
    async def login(request: Request) -> dict[str, Any]:
        body = await _parse(request, LoginBody, "a User")
        token, _expires = await run_in_threadpool(users.login, body.username, body.password)
        return {"token": token}

    @router.post("/logout", summary="Log out: the token of this request stops working")
    def logout(request: Request) -> dict[str, str]:
        who = _principal(request)
        if who is None or who.session is None:
            raise InvalidInput("only a login token can log out (a manual token is removed "
                               "from the token file)")
        users.logout(who.session)
        return {"message": "Success"}

    @router.get("/users", summary="List the users (never their passwords)")
    def list_users() -> list[dict[str, Any]]:
        return [u.wire() for u in users.list()]

    @router.post("/users", summary="Create a user (admin)", openapi_extra=_body(UserBody))
    async def create_user(request: Request) -> dict[str, str]:
        body = await _parse(request, UserBody, "a User")
        await run_in_threadpool(users.add, body.username, body.password, body.role or None)
        return SUCCESS

    @router.put("/users/{user_id}", summary="Change a user's name, password or role (admin)",
                openapi_extra=_body(UserUpdate))
    async def update_user(user_id: int, request: Request) -> dict[str, str]:
        body = await _parse(request, UserUpdate, "a User")
        if body.username is None and body.password is None and not body.role:
            raise InvalidInput("nothing to change: give username, password or role")
        await run_in_threadpool(lambda: users.update(
            user_id, username=body.username, password=body.password, role=body.role or None))
        return SUCCESS

    @router.delete("/users/{user_id}", summary="Delete a user and revoke its tokens (admin)")
    def delete_user(user_id: int) -> dict[str, str]:
        users.delete(user_id)
        return SUCCESS

    return router


def disabled_users_router() -> APIRouter:
    """The same paths without --userservice: a clear 404 rather than FastAPI's bare one."""
    router = APIRouter(prefix="/auth", tags=["auth"], route_class=LoxiRoute)

    def not_enabled() -> None:
        raise NotFound(NOT_ENABLED)

    def user_not_enabled(user_id: str) -> None:
        raise NotFound(NOT_ENABLED)

    # one route per method: each operation gets its own id in the OpenAPI document
    for path, method in ((LOGIN, "POST"), (LOGOUT, "POST"), ("/users", "GET"), ("/users", "POST")):
        router.add_api_route(path.removeprefix("/auth"), not_enabled, methods=[method],
                             summary="(needs --userservice)",
                             operation_id=f"{method.lower()}_{path.strip('/').replace('/', '_')}"
                                          "_not_enabled")
    for method in ("PUT", "DELETE"):
        router.add_api_route("/users/{user_id}", user_not_enabled, methods=[method],
                             summary="(needs --userservice)",
                             operation_id=f"{method.lower()}_auth_user_not_enabled")
    return router


def write_manual_token(path: Path, token: str) -> None:
    """loxilb's UpdateManualToken: the file now holds this one token (0600, atomically)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(token + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def token_router(users: UserStore | None, manual_path: str | os.PathLike[str] | None
                 ) -> APIRouter:
    router = APIRouter(prefix="/auth", tags=["auth"], route_class=LoxiRoute)

    @router.post("/token/upgrade", summary="Replace the manual token, or renew a login token",
                 openapi_extra=_body(UpgradeBody, required=False))
    async def upgrade(request: Request) -> dict[str, Any]:
        body = await _parse(request, UpgradeBody, "an UpdateLicenseRequest", empty_ok=True)
        who = _principal(request)
        if body.license_key is not None:
            if who is not None and who.role != "admin":
                raise PyloxiError(403, PERMISSION_DENIED)
            if manual_path is None:
                raise InvalidInput("manual token mode is not enabled (start the daemon with "
                                   "--token-file)")
            tokens, bad = parse_tokens(body.license_key)
            if bad or len(tokens) != 1 or body.license_key.strip() != body.license_key:
                raise InvalidInput("invalid license_key: one token, visible ASCII, no spaces, "
                                   f"at most {MAX_TOKEN_BYTES} bytes")
            await run_in_threadpool(write_manual_token, Path(manual_path), body.license_key)
            return {"license_key": body.license_key}
        if users is None or who is None or who.session is None:
            raise InvalidInput("give license_key (a new manual token), or send a login token "
                               "to renew it (needs --userservice)")
        token, _expires = await run_in_threadpool(users.refresh, who.session)
        return {"token": token}

    return router


class OauthNotConfigured(PyloxiError):
    def __init__(self, message: str) -> None:
        super().__init__(400, message)


def oauth_router(enabled: bool, providers: Sequence[str] = ()) -> APIRouter:
    """Every provider answers 400 "not configured", with the reason (module docstring)."""
    router = APIRouter(prefix="/oauth", tags=["auth"], route_class=LoxiRoute)
    listed = {p.strip().lower() for p in providers if p.strip()}
    if enabled:
        log.warning("--oauth2: pyloxi has no OAuth2 client; /oauth/* answer 'not configured' "
                    "and OAuth tokens are never accepted")

    def refuse(provider: str) -> None:
        name = provider[:40]
        if not enabled:
            why = "oauth2 is not enabled, and pyloxi has no OAuth2 client"
        elif name.lower() not in listed:
            why = "not in --oauth2provider"
        else:
            why = "pyloxi has no OAuth2 client: providers need the internet"
        raise OauthNotConfigured(f"OAuth provider {name!r} is not configured ({why}); log in "
                                 "with --userservice users or a --token-file token")

    @router.get("/{provider}", summary="OAuth login (no provider is configured in pyloxi)")
    def oauth_login(provider: str) -> None:
        refuse(provider)

    @router.get("/{provider}/callback", summary="OAuth callback (no provider is configured)")
    def oauth_callback(provider: str) -> None:
        refuse(provider)

    @router.get("/{provider}/token", summary="OAuth token refresh (no provider is configured)")
    def oauth_token(provider: str) -> None:
        refuse(provider)

    return router


class AuthApi:
    """What the daemon mounts for authentication: the token check (None: no check), the
    routers, and the calls that need no token."""

    def __init__(self, manual: TokenCheck | None, users: UserStore | None, *,
                 manual_path: str | os.PathLike[str] | None = None, oauth2: bool = False,
                 oauth2_providers: Sequence[str] = ()) -> None:
        self.check: TokenCheck | None = (Credentials(manual, users)
                                         if users is not None else manual)
        self.routers = [users_router(users) if users is not None else disabled_users_router(),
                        token_router(users, manual_path),
                        oauth_router(oauth2, oauth2_providers)]
        # loxilb's `security: []` among these: login (only with users), every /oauth/ path
        self.open_calls: list[tuple[str, str]] = [("GET", "/oauth/")]
        if users is not None:
            self.open_calls.append(("POST", LOGIN))
        # a viewer may also renew its own login token (not replace the manual one)
        self.viewer_may = [("POST", LOGOUT), ("POST", UPGRADE)]
