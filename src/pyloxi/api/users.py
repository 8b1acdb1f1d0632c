"""loxilb's user service (`--userservice`): users, their passwords, and login tokens.

loxilb keeps users and tokens in MySQL; pyloxi keeps both in one JSON file,
`<state-dir>/users.json` (mode 0600, replaced atomically on each change):

- a password is stored only as a salted scrypt hash (`scrypt$n$r$p$salt$hash`, base64), checked
  in constant time; the password rules are loxilb's (at least 9 characters, upper and lower
  case, a digit, a symbol, no character three times in a row, not the user name);
- a login token is 32 random bytes (URL-safe base64) handed to the client once; the server keeps
  only its SHA-256 digest, with its user and expiry (24 h, loxilb's TokenExpirationMinutes), so
  the file gives nobody a usable token. Logout and refresh revoke it; deleting a user or
  changing a password revokes all of that user's tokens.

Roles are loxilb's: `admin` may do anything, `viewer` only read (security.TokenAuth enforces it).
A user created without a role is a viewer (loxilb leaves the role empty, which its check then
lets write: not copied). The last admin cannot be deleted or made a viewer.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
import time
import unicodedata
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from pyloxi.api.security import Principal, TokenCheck
from pyloxi.model.errors import Conflict, InvalidInput, NotFound, PyloxiError

log = logging.getLogger("pyloxi.api.users")

ROLES: Final = ("admin", "viewer")
TOKEN_TTL_S: Final = 24 * 3600.0  # loxilb: TokenExpirationMinutes = 1440
MIN_PASSWORD: Final = 9  # loxilb: MinPasswordLength
MAX_PASSWORD: Final = 256
# scrypt cost: 16 MiB of memory, ~50 ms a check; enough against offline guessing of a stolen
# file without making a login slow.
SCRYPT_N: Final = 2**14
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
_USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
BAD_LOGIN: Final = "invalid username or password"
FILE_NAME: Final = "users.json"


class Unauthorized(PyloxiError):
    def __init__(self, message: str) -> None:
        super().__init__(401, message)


def hash_password(password: str, *, n: int = SCRYPT_N) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=SCRYPT_R, p=SCRYPT_P,
                            maxmem=64 * 1024 * 1024, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${n}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def password_matches(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        want = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode("utf-8"), salt=base64.b64decode(salt), n=int(n),
                             r=int(r), p=int(p), maxmem=64 * 1024 * 1024, dklen=len(want))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


def check_password(username: str, password: str) -> None:
    """loxilb's password rules (pkg/user/user_util.go validatePassword). InvalidInput if not."""
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(f"password must be at least {MIN_PASSWORD} characters long")
    if len(password) > MAX_PASSWORD:
        raise InvalidInput(f"password must be at most {MAX_PASSWORD} characters long")
    if password == username:
        raise InvalidInput("password must not be the same as the username")
    if any(unicodedata.category(c) == "Cc" for c in password):
        raise InvalidInput("password must not contain control characters")
    for i in range(2, len(password)):
        if password[i] == password[i - 1] == password[i - 2]:
            raise InvalidInput("password must not contain the same character more than twice "
                               "in a row")
    for test, what in ((str.isupper, "one uppercase letter"), (str.islower, "one lowercase letter"),
                       (str.isdigit, "one number"),
                       (lambda c: unicodedata.category(c)[0] in "PS", "one special character")):
        if not any(test(c) for c in password):
            raise InvalidInput(f"password must contain at least {what}")


def check_username(username: str) -> None:
    if not _USERNAME.fullmatch(username):
        raise InvalidInput("invalid username: 1-64 of A-Z a-z 0-9 . _ @ -, starting with a "
                           "letter or digit")


def check_role(role: str) -> None:
    if role not in ROLES:
        raise InvalidInput(f"invalid role {role[:40]!r}: admin or viewer")


@dataclass(slots=True)
class User:
    id: int
    username: str
    password: str  # the scrypt hash, never the password
    role: str
    created_at: str

    def wire(self) -> dict[str, Any]:
        """loxilb's User object, without the password (loxilb sends its hash: not copied)."""
        return {"id": self.id, "username": self.username, "role": self.role,
                "created_at": self.created_at}


@dataclass(slots=True)
class Session:
    user_id: int
    expires: float  # unix time


def _digest(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()


def _now_text(clock: Callable[[], float]) -> str:
    return datetime.fromtimestamp(clock(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class UserStore:
    """Users and login tokens, kept in `path` (module docstring). Thread-safe."""

    def __init__(self, path: str | os.PathLike[str], *, ttl: float = TOKEN_TTL_S,
                 clock: Callable[[], float] = time.time, scrypt_n: int = SCRYPT_N) -> None:
        self.path = Path(path)
        self.ttl = ttl
        self.clock = clock
        self.scrypt_n = scrypt_n
        self._lock = threading.Lock()
        self._users: dict[int, User] = {}
        self._sessions: dict[bytes, Session] = {}
        self._next_id = 1
        self._load()
        # a login of an unknown user costs one hash too: the time does not tell who exists
        self._dummy = hash_password(secrets.token_hex(8), n=scrypt_n)

    def __repr__(self) -> str:
        return f"UserStore({str(self.path)!r}, {len(self._users)} users)"

    # -- persistence --

    def _load(self) -> None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except OSError as exc:
            raise ValueError(f"user file {self.path}: {exc.strerror or exc}") from None
        try:
            data = json.loads(text)
            for raw in data.get("users", []):
                user = User(id=int(raw["id"]), username=str(raw["username"]),
                            password=str(raw["password"]), role=str(raw["role"]),
                            created_at=str(raw.get("created_at", "")))
                self._users[user.id] = user
            for raw in data.get("sessions", []):
                self._sessions[bytes.fromhex(raw["digest"])] = Session(
                    int(raw["user_id"]), float(raw["expires"]))
            self._next_id = max([int(data.get("next_id", 1)), *(u + 1 for u in self._users)])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"user file {self.path}: not a pyloxi user file ({exc})") from None

    def _save(self) -> None:
        now = self.clock()
        data = {"next_id": self._next_id,
                "users": [asdict(u) for u in self._users.values()],
                "sessions": [{"digest": d.hex(), "user_id": s.user_id, "expires": s.expires}
                             for d, s in self._sessions.items() if s.expires > now]}
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    # -- users --

    def list(self) -> list[User]:
        with self._lock:
            return sorted(self._users.values(), key=lambda u: u.id)

    def has_users(self) -> bool:
        return bool(self._users)

    def _by_name(self, username: str) -> User | None:
        return next((u for u in self._users.values() if u.username == username), None)

    def add(self, username: str, password: str, role: str | None = None) -> User:
        role = role or "viewer"
        check_username(username)
        check_role(role)
        check_password(username, password)
        hashed = hash_password(password, n=self.scrypt_n)  # slow: outside the lock
        with self._lock:
            if self._by_name(username) is not None:
                raise Conflict(f"username {username} already exists")
            user = User(self._next_id, username, hashed, role, _now_text(self.clock))
            self._users[user.id] = user
            self._next_id += 1
            self._save()
        log.info("user %s (%s) created", username, role)
        return user

    def update(self, user_id: int, *, username: str | None = None, password: str | None = None,
               role: str | None = None) -> User:
        if username is not None:
            check_username(username)
        if role is not None:
            check_role(role)
        with self._lock:
            current = self._users.get(user_id)
        if current is None:
            raise NotFound(f"user {user_id} not found")
        hashed = None
        if password is not None:
            check_password(username or current.username, password)
            if password_matches(password, current.password):
                raise InvalidInput("password must not be the same as the previous password")
            hashed = hash_password(password, n=self.scrypt_n)
        with self._lock:
            user = self._users.get(user_id)
            if user is None:
                raise NotFound(f"user {user_id} not found")
            if username not in (None, user.username) and self._by_name(username or ""):
                raise Conflict(f"username {username} already exists")
            if role == "viewer" and user.role == "admin":
                self._keep_an_admin(user_id)
            user.username = username or user.username
            user.role = role or user.role
            if hashed is not None:
                user.password = hashed
                self._revoke_user(user_id)  # a new password logs the old tokens out
            self._save()
            return User(**asdict(user))

    def delete(self, user_id: int) -> None:
        with self._lock:
            user = self._users.get(user_id)
            if user is None:
                raise NotFound(f"user {user_id} not found")
            if user.role == "admin":
                self._keep_an_admin(user_id)
            del self._users[user_id]
            self._revoke_user(user_id)
            self._save()
        log.info("user %s deleted", user.username)

    def _keep_an_admin(self, user_id: int) -> None:
        if not any(u.role == "admin" for u in self._users.values() if u.id != user_id):
            raise Conflict("cant modify the last admin user: nobody could manage users then")

    def _revoke_user(self, user_id: int) -> None:
        for digest in [d for d, s in self._sessions.items() if s.user_id == user_id]:
            del self._sessions[digest]

    # -- tokens --

    def login(self, username: str, password: str) -> tuple[str, float]:
        """(token, expiry as unix time). Unauthorized (401) for a wrong name or password."""
        with self._lock:
            user = self._by_name(username)
            stored = user.password if user is not None else self._dummy
        if not password_matches(password, stored) or user is None:
            log.warning("failed login for %r", username[:64])
            raise Unauthorized(BAD_LOGIN)
        return self._issue(user.id)

    def _issue(self, user_id: int) -> tuple[str, float]:
        token = secrets.token_urlsafe(32)
        expires = self.clock() + self.ttl
        with self._lock:
            self._purge()
            self._sessions[_digest(token.encode())] = Session(user_id, expires)
            self._save()
        return token, expires

    def _purge(self) -> None:
        now = self.clock()
        for digest in [d for d, s in self._sessions.items() if s.expires <= now]:
            del self._sessions[digest]

    def identify(self, token: bytes) -> Principal | None:
        digest = _digest(token)
        with self._lock:
            session = self._sessions.get(digest)  # a dict lookup by digest: no timing to learn
            if session is None:
                return None
            user = self._users.get(session.user_id)
            if user is None or session.expires <= self.clock():
                return None
            return Principal(user.username, user.role, digest)

    def accepts(self, token: bytes) -> bool:
        return self.identify(token) is not None

    def logout(self, session: bytes) -> None:
        with self._lock:
            if self._sessions.pop(session, None) is not None:
                self._save()

    def refresh(self, session: bytes) -> tuple[str, float]:
        """A new token for the session's user; the old one stops working."""
        with self._lock:
            old = self._sessions.pop(session, None)
        if old is None or old.expires <= self.clock():
            raise Unauthorized("invalid token")
        return self._issue(old.user_id)


class Credentials:
    """The daemon's token check: manual tokens (security.TokenFile, admin) and login tokens
    (UserStore), whichever the daemon has."""

    def __init__(self, manual: TokenCheck | None, users: UserStore | None) -> None:
        self.manual = manual
        self.users = users

    def identify(self, token: bytes) -> Principal | None:
        if self.users is not None:
            who = self.users.identify(token)
            if who is not None:
                return who
        if self.manual is not None and self.manual.accepts(token):
            return Principal("manual-token", "admin")
        return None

    def accepts(self, token: bytes) -> bool:
        return self.identify(token) is not None


def first_admin(users: UserStore, password_file: str | None) -> None:
    """--admin-password-file: with no user yet, create `admin` (role admin) with the password
    in the file's first line (a file, never an argument: /proc shows arguments to everyone)."""
    if users.has_users():
        if password_file:
            log.info("users exist: --admin-password-file %s not used", password_file)
        return
    if not password_file:
        log.warning("--userservice: no user yet and no --admin-password-file: only a manual "
                    "token (--token-file) can create one")
        return
    try:
        text = Path(password_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ValueError(f"--admin-password-file {password_file}: {reason}") from None
    password = next((line.strip() for line in text.splitlines() if line.strip()), "")
    try:
        users.add("admin", password, "admin")
    except PyloxiError as exc:
        raise ValueError(f"--admin-password-file {password_file}: {exc.message}") from None
    log.info("user admin created from %s", password_file)


def user_store(state_dir: str, admin_password_file: str | None) -> UserStore:
    users = UserStore(Path(state_dir) / FILE_NAME)
    first_admin(users, admin_password_file)
    return users
