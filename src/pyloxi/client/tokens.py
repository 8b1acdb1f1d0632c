"""API tokens kept in files (never in process arguments, where `ps` shows them)."""

from __future__ import annotations


def read_token_file(path: str, what: str = "--token-file") -> str:
    """The first line of a token file that is neither blank nor a `#` comment. ValueError with
    the reason if the file cannot be read or holds no usable token."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(64 * 1024)
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ValueError(f"invalid {what} {path!r}: {reason}") from None
    for line in text.splitlines():
        token = line.strip()
        if token and not token.startswith("#"):
            if not visible_ascii(token):
                raise ValueError(f"invalid {what} {path!r}: the token is not visible ASCII")
            return token
    raise ValueError(f"invalid {what} {path!r}: no token in it")


def visible_ascii(token: str) -> bool:
    """What an Authorization header can carry as a bearer token."""
    return token.isascii() and token.isprintable() and " " not in token
