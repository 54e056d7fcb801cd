"""Database URLs: which backend a URL names, and how to show it with its password masked.

Backends are registered in one place, the ``cloacina.backends`` entry-point group (the
built-in SQLite backend is registered by the package itself): a backend is a
:class:`Backend` object naming the URL schemes it serves. :func:`available` lists the
schemes this installation serves.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote

from cloacina.errors import ConfigurationError

DEFAULT_URL = "sqlite:///cloacina.db"
"""Used when neither an explicit URL nor ``$CLOACINA_DATABASE_URL`` is given."""

ENV_VAR = "CLOACINA_DATABASE_URL"


@dataclass(frozen=True)
class SqliteTarget:
    """An embedded SQLite database: a file path, or None for a private in-memory one."""

    path: str | None


@dataclass(frozen=True)
class PostgresTarget:
    """A PostgreSQL database: its URL (``repr`` shows it masked) and the tenant's schema
    (None: the URL's ``options=-c search_path=...``, else ``public``)."""

    url: str = field(repr=False)
    schema: str | None = None

    @property
    def masked(self) -> str:
        """The URL with its password masked."""
        return mask(self.url)


_SECRET_PARAMS = frozenset({"password", "pwd", "pass", "sslpassword", "secret", "token"})
"""Query parameters whose values :func:`mask` hides (names compared case-insensitively)."""

# A query parameter: '?' or '&', its name, '=', and its value, which runs to the next
# '&name=' or the end: a raw '&' or '#' in a password stays inside the masked value.
_PARAM = re.compile(r"[?&]([^?&=#]*)=(.*?)(?=&[^&=]*=|\Z)", re.DOTALL)


def mask(url: str) -> str:
    """``url`` with its password replaced by ``***``: the userinfo password (everything
    between the first ``:`` after ``//`` and the last ``@``) and the values of
    ``password``, ``pwd``, ``pass``, ``sslpassword``, ``secret`` and ``token`` query
    parameters. When the password cannot be located reliably (a raw ``/``, ``?`` or
    ``#`` before the last ``@``), only the scheme and host are shown:
    ``postgresql://***@host``. Never raises."""
    scheme, colon, rest = url.partition(":")
    body = len(scheme) + 1 if colon else 0
    spans = [
        m.span(2)
        for m in _PARAM.finditer(url, body)
        if m.group(2) and unquote(m.group(1)).strip().lower() in _SECRET_PARAMS
    ]
    last_at = url.rfind("@", body)
    if colon and last_at >= 0:
        if not rest.startswith("//"):
            # No authority: whatever precedes the last '@' may be a user and password.
            spans.append((body, last_at))
        else:
            start = body + 2
            password_colon = url.find(":", start, last_at)
            authority_end = _first_of(url, "/?#", start)
            if password_colon >= 0 and last_at < authority_end:
                spans.append((password_colon + 1, last_at))
            elif password_colon >= 0:
                # The '@' comes after a '/', '?' or '#': a raw password holding one, or an
                # '@' in the path or query. Which part is the password is unknowable.
                host_end = _first_of(url, "/?#", last_at + 1)
                host = url[last_at + 1 : host_end]
                host = host[: host.find("]") + 1] if host.startswith("[") else host.split(":")[0]
                if not host or any(a < host_end and b > last_at for a, b in spans):
                    return f"{scheme}://***"
                return f"{scheme}://***@{host}"
    return _replace_spans(url, spans)


def _first_of(text: str, chars: str, start: int) -> int:
    """The index of the first of ``chars`` in ``text`` from ``start``, else its length."""
    found = [i for i in (text.find(c, start) for c in chars) if i >= 0]
    return min(found, default=len(text))


def _replace_spans(text: str, spans: list[tuple[int, int]]) -> str:
    """``text`` with each span (merged where they overlap or touch) replaced by ``***``."""
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    out: list[str] = []
    pos = 0
    for start, end in merged:
        out += [text[pos:start], "***"]
        pos = end
    out.append(text[pos:])
    return "".join(out)


def default_url() -> str:
    """``$CLOACINA_DATABASE_URL``, else ``sqlite:///cloacina.db``."""
    return os.environ.get(ENV_VAR) or DEFAULT_URL


@dataclass(frozen=True)
class Backend:
    """A database backend: its name, the URL schemes it serves, and how it turns a URL
    of one of them into the target its engine opens."""

    name: str
    schemes: tuple[str, ...]
    target: Callable[[str], object]


ENTRY_POINT_GROUP = "cloacina.backends"
"""The entry-point group where backends are registered."""

_POSTGRES_SCHEMES = ("postgres", "postgresql")


def _postgres(url: str) -> PostgresTarget:
    _, rest = _parse(url)
    if not rest.startswith("//"):
        raise ConfigurationError(
            f"the PostgreSQL URL {mask(url)!r} names no host: expected "
            "'postgresql://user:password@host:5432/database'"
        )
    return PostgresTarget(url=url)


POSTGRES = Backend("postgres", _POSTGRES_SCHEMES, _postgres)
"""The PostgreSQL backend (built in; registered as an entry point too)."""


def _parse(url: object) -> tuple[str, str]:
    """``(scheme, rest)`` of a database URL; ``ConfigurationError`` if it is none."""
    if not isinstance(url, str):
        raise ConfigurationError(f"a database URL must be a str, not {type(url).__name__}")
    scheme, sep, rest = url.partition(":")
    if not sep or not scheme:
        raise ConfigurationError(
            f"not a database URL: {mask(url)!r}; expected e.g. 'sqlite:///path/to/file.db'"
        )
    return scheme.lower(), rest


def _sqlite(url: str) -> SqliteTarget:
    return _sqlite_target(url, _parse(url)[1])


SQLITE = Backend("sqlite", ("sqlite",), _sqlite)
"""The embedded SQLite backend (built in; registered as an entry point too)."""

_registered: dict[str, Backend] | None = None


def _backends() -> dict[str, Backend]:
    """Scheme -> backend: the built-in ones, then those of the entry-point group (read
    once per process; a backend that fails to load is logged and left out)."""
    global _registered
    if _registered is None:
        import logging
        from importlib.metadata import entry_points

        found = dict.fromkeys(SQLITE.schemes, SQLITE)
        found.update(dict.fromkeys(POSTGRES.schemes, POSTGRES))
        for entry in entry_points(group=ENTRY_POINT_GROUP):
            try:
                backend = entry.load()
            except Exception as exc:
                logging.getLogger("cloacina").warning(
                    "the cloacina backend %r could not be loaded: %s", entry.name, exc
                )
                continue
            if not isinstance(backend, Backend):
                logging.getLogger("cloacina").warning(
                    "the entry point %r of %s is not a cloacina Backend", entry.name, entry.group
                )
                continue
            for scheme in backend.schemes:
                found.setdefault(scheme.lower(), backend)
        _registered = found
    return _registered


def available() -> list[str]:
    """The URL schemes this installation serves, sorted."""
    return sorted(_backends())


def resolve(url: str) -> object:
    """The target a URL names, from the backend that serves its scheme;
    ``ConfigurationError`` naming the schemes served when no backend does."""
    scheme, _ = _parse(url)
    if scheme in SQLITE.schemes:
        return SQLITE.target(url)  # the built-in backends: no entry points read
    if scheme in POSTGRES.schemes:
        return POSTGRES.target(url)
    backend = _backends().get(scheme)
    if backend is not None:
        return backend.target(url)
    served = ", ".join(f"'{s}:'" for s in available())
    raise ConfigurationError(
        f"unsupported database URL {mask(url)!r}: this installation serves {served} "
        "(for example 'sqlite:///path/to/file.db' or 'sqlite::memory:')"
    )


def _sqlite_target(url: str, rest: str) -> SqliteTarget:
    if "?" in rest:
        raise ConfigurationError(
            f"query parameters are not supported in SQLite URLs: {mask(url)!r}"
        )
    if rest.startswith("//"):
        authority, _, path = rest[2:].partition("/")
    else:
        # No authority, but an '@' may still hold a user and password ('sqlite:u:pw@h').
        authority, path = ("@", "") if "@" in rest else ("", rest)
    if authority:
        # Refused, so that no file path is ever made of a user, password or host.
        raise ConfigurationError(
            f"the SQLite URL {mask(url)!r} names a user, password or host, which SQLite "
            "URLs do not take; they take a path: 'sqlite:///relative.db' or "
            "'sqlite:////absolute.db'"
        )
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
        from cloacina import _native

        _bound = dict(_native.bind_sqlite(module_file))
    return _bound
