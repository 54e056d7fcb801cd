"""Database URLs: which backend a URL names, and how to show it with its password masked."""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from cloacina import _native
from cloacina.errors import ConfigurationError

DEFAULT_URL = "sqlite:///cloacina.db"
"""Used when neither an explicit URL nor ``$CLOACINA_DATABASE_URL`` is given."""

ENV_VAR = "CLOACINA_DATABASE_URL"


@dataclass(frozen=True)
class SqliteTarget:
    """An embedded SQLite database: a file path, or None for a private in-memory one."""

    path: str | None


def mask(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    except ValueError:
        return "<unparseable URL>"


def default_url() -> str:
    """``$CLOACINA_DATABASE_URL``, else ``sqlite:///cloacina.db``."""
    return os.environ.get(ENV_VAR) or DEFAULT_URL


def resolve(url: str) -> SqliteTarget:
    """The backend target a URL names; ``ConfigurationError`` if it is not supported."""
    if not isinstance(url, str):
        raise ConfigurationError(f"a database URL must be a str, not {type(url).__name__}")
    scheme, sep, rest = url.partition(":")
    scheme = scheme.lower()
    if not sep or not scheme:
        raise ConfigurationError(
            f"not a database URL: {mask(url)!r}; expected e.g. 'sqlite:///path/to/file.db'"
        )
    if scheme == "sqlite":
        return _sqlite_target(url, rest)
    if scheme in ("postgres", "postgresql"):
        raise ConfigurationError(
            f"the PostgreSQL backend is not available in this version of cloacina: {mask(url)!r}"
        )
    raise ConfigurationError(
        f"unsupported database URL {mask(url)!r}: cloacina supports 'sqlite:///path/to/file.db' "
        "and 'sqlite::memory:'"
    )


def _sqlite_target(url: str, rest: str) -> SqliteTarget:
    if "?" in rest:
        raise ConfigurationError(
            f"query parameters are not supported in SQLite URLs: {mask(url)!r}"
        )
    if rest.startswith("///"):
        path = rest[3:]
    elif rest.startswith("//"):
        path = rest[2:]
    else:
        path = rest
    if not path:
        raise ConfigurationError(f"the SQLite URL {mask(url)!r} names no file")
    bind_sqlite()
    if path == ":memory:":
        return SqliteTarget(path=None)
    return SqliteTarget(path=os.path.abspath(os.path.expanduser(path)))


_bound: dict[str, object] | None = None


def bind_sqlite() -> dict[str, object]:
    """Binds the engine to the SQLite library of Python's own ``sqlite3`` module (so the
    two share locks), once per process; returns what library is in use."""
    global _bound
    if _bound is None:
        module_file: str | None
        try:
            import _sqlite3

            module_file = getattr(_sqlite3, "__file__", None)
        except ImportError:
            module_file = None
        _bound = dict(_native.bind_sqlite(module_file))
    return _bound
