"""The package's public surface: __all__, __version__ and the exception hierarchy."""

from __future__ import annotations

import importlib.metadata
import types

import cloacina
import cloacina.errors
import pytest

ERROR_NAMES = [
    "CloacinaError",
    "WorkflowError",
    "WorkflowFailed",
    "TaskError",
    "DatabaseError",
    "ConfigurationError",
]

# Submodules that may show up as attributes of the package once imported.
SUBMODULES = {
    "errors",
    "context",
    "task",
    "workflow",
    "runner",
    "rules",
    "backends",
    "cli",
    "testing",
}


def _is_submodule(name: str) -> bool:
    value = getattr(cloacina, name)
    return (
        name in SUBMODULES
        and isinstance(value, types.ModuleType)
        and value.__name__ == f"cloacina.{name}"
    )


def test_public_names_equal_all():
    # "@py_builtins" and the like: pytest rewrites the asserts of a plugin's package
    # (cloacina.testing is one), which adds names that are no identifiers.
    public = {n for n in dir(cloacina) if not n.startswith(("_", "@")) and not _is_submodule(n)}
    assert public == set(cloacina.__all__)


def test_all_has_no_duplicates_and_every_name_resolves():
    assert len(cloacina.__all__) == len(set(cloacina.__all__))
    for name in cloacina.__all__:
        assert getattr(cloacina, name) is not None, name


def test_contract_names_are_exported():
    expected = {"task", "Workflow", "Runner", "Context", "RunResult", "TaskResult", *ERROR_NAMES}
    assert expected <= set(cloacina.__all__)


def test_task_is_the_decorator_not_the_submodule():
    assert callable(cloacina.task)
    assert not isinstance(cloacina.task, types.ModuleType)


def test_version_is_a_string():
    assert isinstance(cloacina.__version__, str)
    assert cloacina.__version__


def test_version_matches_the_installed_distribution():
    try:
        installed = importlib.metadata.version("cloacina")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("cloacina is imported from a source tree, without package metadata")
    assert cloacina.__version__ == installed


def test_base_error_is_an_exception():
    assert issubclass(cloacina.CloacinaError, Exception)


@pytest.mark.parametrize("name", ERROR_NAMES)
def test_errors_derive_from_cloacina_error(name):
    assert issubclass(getattr(cloacina, name), cloacina.CloacinaError)


@pytest.mark.parametrize("name", ERROR_NAMES)
def test_errors_module_exports_the_same_classes(name):
    assert getattr(cloacina.errors, name) is getattr(cloacina, name)


def test_errors_are_distinct_classes():
    classes = [getattr(cloacina, n) for n in ERROR_NAMES]
    assert len(set(classes)) == len(classes)
