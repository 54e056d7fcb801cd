"""Stubs for the private native module ``cloacina._native`` (the Rust engine)."""

import os
from collections.abc import Awaitable, Callable
from typing import Any, final

__all__ = [
    "Completion",
    "ContextView",
    "Engine",
    "RegistrySnapshot",
    "__version__",
    "bind_sqlite",
    "current_workflow",
    "drop_postgres_schema",
    "interpreter_exiting",
    "register_task",
    "register_workflow",
    "registry_restore",
    "registry_snapshot",
    "reset_logging",
    "validate_rule",
]

__version__: str

@final
class Engine:
    def __new__(
        cls,
        path: str | os.PathLike[str] | None,
        *,
        durability: str,
        max_concurrency: int,
        call_sync: Callable[
            [Callable[..., Any], str, ContextView, str], tuple[dict[str, Any], dict[str, Any]]
        ],
        submit_async: Callable[[Callable[..., Any], str, ContextView, str, Completion], object],
        interrupt: Callable[[str, str], object],
        call_hook: Callable[[Callable[..., Any], tuple[Any, ...]], object],
        recover: bool = True,
        lease: float = 30.0,
        postgres: tuple[str, str, str | None] | None = None,
    ) -> Engine: ...
    def submit(
        self, workflow: str, input: dict[str, Any], idempotency_key: str | None = None
    ) -> str: ...
    def submit_async(
        self, workflow: str, input: dict[str, Any], idempotency_key: str | None = None
    ) -> Awaitable[str]: ...
    def resume(self, run_id: str) -> None: ...
    def recover(self) -> list[str]: ...
    def wait(self, run_id: str, timeout: float | None = None, lend: bool = False) -> bool: ...
    def wait_async(self, run_id: str, lend: bool = False) -> Awaitable[None]: ...
    def cancel(self, run_id: str) -> bool: ...
    def cancel_async(self, run_id: str) -> Awaitable[bool]: ...
    def get_run(self, run_id: str) -> dict[str, Any] | None: ...
    def ended_run(self, run_id: str) -> dict[str, Any] | None: ...
    def run_status(self, run_id: str) -> str | None: ...
    def schema_version(self) -> int: ...
    def writer_of(self, run_id: str, task_id: str, key: str) -> str | None: ...
    def drain(self) -> None: ...
    def purge(self, before: int) -> int: ...
    def driving(self) -> int: ...
    def get_run_async(self, run_id: str) -> Awaitable[dict[str, Any] | None]: ...
    def ended_run_async(self, run_id: str) -> Awaitable[dict[str, Any] | None]: ...
    def list_runs(
        self,
        workflow: str | None = None,
        status: str | None = None,
        limit: int = 50,
        run_id: str | None = None,
    ) -> list[dict[str, Any]]: ...
    def close(self) -> None: ...
    @property
    def store(self) -> str: ...

@final
class Completion:
    def ok(self, result: tuple[dict[str, Any], dict[str, Any]]) -> None: ...
    def fail(self, error: BaseException) -> None: ...

@final
class ContextView:
    """The engine's read-only view of a task's context; values are converted on read."""

    def get(self, key: object, default: Any = None) -> Any: ...
    def __contains__(self, key: object, /) -> bool: ...
    def __len__(self) -> int: ...
    def keys(self) -> list[str]: ...

def register_task(
    id: str,
    func: Callable[..., Any],
    *,
    is_async: bool,
    dependencies: list[str],
    fingerprint: str,
    pull_in: list[str] = ...,
    policy: dict[str, Any] | None = None,
    retry_on: tuple[type[BaseException], ...] | None = None,
    hooks: tuple[
        Callable[..., Any] | None, Callable[..., Any] | None, Callable[..., Any] | None
    ] = ...,
) -> None: ...
def validate_rule(rule: dict[str, Any]) -> None: ...
def register_workflow(
    name: str,
    listed: list[str],
    description: str | None = None,
    timeout: float | None = None,
) -> tuple[list[str], str]: ...
def current_workflow(
    name: str,
    listed: list[str],
    description: str | None = None,
    timeout: float | None = None,
) -> tuple[list[str], str]: ...
def bind_sqlite(python_module: str | os.PathLike[str] | None = None) -> dict[str, Any]: ...
def reset_logging() -> None: ...
def interpreter_exiting() -> None: ...

@final
class RegistrySnapshot:
    """The registry's definitions at one moment."""

def registry_snapshot() -> RegistrySnapshot: ...
def registry_restore(snapshot: RegistrySnapshot) -> None: ...
def drop_postgres_schema(url: str, label: str, schema: str) -> None: ...
