"""The :class:`Context` a task receives: a dict-like view of JSON values."""

from __future__ import annotations

import itertools
from collections.abc import Callable, ItemsView, Iterator, KeysView, Mapping, ValuesView
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cloacina._native import ContextView as _View

_MISSING = object()

_KEYS_SHOWN = 10
"""How many of the context's keys a :class:`ContextKeyError` lists."""


class ContextKeyError(KeyError):
    """A task read a key that is not in its context (``ctx[key]``).

    A ``KeyError`` (``args[0]`` and :attr:`key` are the key) whose message says why the
    key is missing: when another task of the run wrote it, that this task is not among
    its descendants; otherwise, which keys the context holds.
    """

    def __init__(self, key: object, message: str) -> None:
        super().__init__(key, message)
        self.key = key
        """The key that was read."""
        self.message = message
        """Why it is missing (also ``str(exc)``)."""

    def __str__(self) -> str:
        return self.message


class Context:
    """The data a task sees: the run's input plus the writes of its ancestor tasks.

    Assigning a key (``ctx["k"] = v``, :meth:`update`, :meth:`setdefault`) is a write. A
    list or dict value read from the context and changed in place also counts as a write
    when it ends up different from what the task was given. Values must be JSON values
    (dict with str keys, list, str, int, float, bool, None). Reading a key that is not
    there (``ctx["k"]``) raises :class:`ContextKeyError`, which says why it is missing;
    :meth:`get` and ``in`` do not raise.

    In a task, the context is a view of what the engine holds: a value becomes a Python
    object when the task first reads it (later reads return that same object), so a task
    pays for the keys it touches, not for the size of the context. ``keys()``, ``len()``
    and ``in`` convert no value; ``values()``, ``items()``, iteration of them and
    :meth:`to_dict` convert what they reach.
    """

    __slots__ = ("_data", "_explain", "_keys", "_new", "_task_id", "_touched", "_view", "_written")

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        self._start(dict(data) if data is not None else {}, None, None, None)

    def _start(
        self,
        data: dict[str, Any],
        view: _View | None,
        task_id: str | None,
        explain: Callable[[str], str | None] | None,
    ) -> None:
        self._data: dict[str, Any] = data
        self._view: _View | None = view
        self._keys: list[str] | None = None
        self._new: dict[str, None] = {}
        self._written: dict[str, None] = {}
        self._touched: set[str] = set()
        self._task_id: str | None = task_id
        self._explain: Callable[[str], str | None] | None = explain

    @classmethod
    def _wrap(
        cls,
        data: dict[str, Any] | _View,
        task_id: str | None = None,
        explain: Callable[[str], str | None] | None = None,
    ) -> Context:
        """A context over ``data`` for task ``task_id``: the engine's read-only view of
        the attempt's input (values converted on first read), or a fresh dict.
        ``explain(key)``, called only when a read misses, names another task of the run
        that wrote ``key`` (or returns None)."""
        ctx = cls.__new__(cls)
        if isinstance(data, dict):
            ctx._start(data, None, task_id, explain)
        else:
            ctx._start({}, data, task_id, explain)
        return ctx

    def _read(self, key: str, value: Any) -> Any:
        if isinstance(value, (list, dict)):
            self._touched.add(key)
        return value

    def _lookup(self, key: object) -> Any:
        """The value of ``key`` (converted from the view once, then kept), or _MISSING."""
        value = self._data.get(key, _MISSING)  # type: ignore[call-overload]
        if value is _MISSING and self._view is not None and isinstance(key, str):
            value = self._view.get(key, _MISSING)
            if value is not _MISSING:
                self._data[key] = value
        return value

    def __getitem__(self, key: str) -> Any:
        value = self._lookup(key)
        if value is _MISSING:
            raise self._missing(key) from None
        return self._read(key, value)

    def _missing(self, key: object) -> ContextKeyError:
        """The error for reading ``key``, which is not here: names the task of the run
        that wrote it when there is one, else lists the keys there are."""
        task_id, explain = self._task_id, self._explain
        writer = None
        if task_id is not None and explain is not None and isinstance(key, str):
            try:
                writer = explain(key)
            except Exception:  # the explanation is a courtesy: never a second failure
                writer = None
        if task_id is not None and writer is not None:
            return ContextKeyError(
                key,
                f"task '{task_id}' reads key {key!r}, which task '{writer}' wrote, but "
                f"'{writer}' is not a dependency of '{task_id}': a task sees the run's input "
                f"and what its ancestors wrote; add '{writer}' to {task_id}'s dependencies",
            )
        keys = sorted(map(str, self))
        if not keys:
            holds = "it is empty"
        elif len(keys) > _KEYS_SHOWN:
            shown = ", ".join(keys[:_KEYS_SHOWN])
            holds = f"it holds: {shown} and {len(keys) - _KEYS_SHOWN} more"
        else:
            holds = f"it holds: {', '.join(keys)}"
        if task_id is None:
            return ContextKeyError(key, f"key {key!r} is not in the context ({holds})")
        return ContextKeyError(
            key, f"task '{task_id}' reads key {key!r}, which is not in its context ({holds})"
        )

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise TypeError(f"context keys must be str, not {type(key).__name__}")
        view = self._view
        if view is not None and key not in self._data and key not in view:
            self._new[key] = None
        self._data[key] = value
        self._written[key] = None  # ordered: the task's writes are stored in this order

    def __contains__(self, key: object) -> bool:
        if key in self._data:
            return True
        return self._view is not None and key in self._view

    def __iter__(self) -> Iterator[str]:
        if self._view is None:
            return iter(self._data)
        if self._keys is None:
            self._keys = self._view.keys()
        return itertools.chain(self._keys, list(self._new))

    def __len__(self) -> int:
        if self._view is None:
            return len(self._data)
        return len(self._view) + len(self._new)

    def _all(self) -> dict[str, Any]:
        """Every key and value, as a new dict (values converted, not marked as read)."""
        return {key: self._lookup(key) for key in self}

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Context):
            return self._all() == other._all()
        if isinstance(other, Mapping):
            return self._all() == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Context({self._all()!r})"

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` when it is absent."""
        value = self._lookup(key)
        if value is _MISSING:
            return default
        return self._read(key, value)

    def keys(self) -> KeysView[str]:
        """The keys, as a live view (no value is converted)."""
        return KeysView(self)

    def values(self) -> ValuesView[Any]:
        """The values, as a live view (each one read as it is reached)."""
        return ValuesView(self)

    def items(self) -> ItemsView[str, Any]:
        """The ``(key, value)`` pairs, as a live view (each value read as it is reached)."""
        return ItemsView(self)

    def update(self, other: Mapping[str, Any] | None = None, /, **kwargs: Any) -> None:
        """Writes every key of ``other`` and ``kwargs``."""
        if other is not None:
            for key, value in dict(other).items():
                self[key] = value
        for key, value in kwargs.items():
            self[key] = value

    def setdefault(self, key: str, default: Any = None) -> Any:
        """The value of ``key``; if absent, writes ``default`` first."""
        if key not in self:
            self[key] = default
        return self[key]

    def __reduce__(self) -> tuple[type[Context], tuple[dict[str, Any]]]:
        """Pickled and copied (``copy``, ``deepcopy``, process pools) as a plain
        ``Context`` holding every key; the engine's view stays behind."""
        return (Context, (self._all(),))

    def to_dict(self) -> dict[str, Any]:
        """A shallow copy of the data as a plain dict (every value read)."""
        return {key: self[key] for key in list(self)}

    def _collect(self, result: Any, task_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """Applies a task's return value, then returns ``(writes, touched)`` for the engine.

        ``None`` (or the task's own context, ``return ctx``) keeps the writes; a mapping
        is merged in; any other value is stored under the task's id.
        """
        if result is None or result is self:
            pass
        elif isinstance(result, Mapping):
            for key, value in result.items():
                if not isinstance(key, str):
                    from cloacina.errors import TaskError

                    raise TaskError(
                        f"task '{task_id}' returned a dict with a key that is not a str: {key!r}"
                    )
                self[key] = value
        else:
            self[task_id] = result
        data = self._data
        writes = {key: data[key] for key in self._written}
        touched = {key: data[key] for key in self._touched if key not in self._written}
        return writes, touched
