"""Workflow definition: attributes, validation, topological order and the version."""

from __future__ import annotations

import json
import os

import cloacina
import pytest
from cloacina import Workflow, WorkflowError, task
from helpers import run_script


def task_ids(wf: Workflow) -> set[str]:
    return {t.id for t in wf.tasks}


def assert_topological(order: list[str], deps: dict[str, list[str]]) -> None:
    assert sorted(order) == sorted(deps), order
    for tid, ds in deps.items():
        for d in ds:
            assert order.index(d) < order.index(tid), f"{d} must come before {tid}: {order}"


def test_attributes():
    @task
    def a(ctx):
        pass

    @task(dependencies=[a])
    def b(ctx):
        pass

    wf = Workflow("attrs_wf", [a, b], description="two steps")
    assert wf.name == "attrs_wf"
    assert wf.description == "two steps"
    assert task_ids(wf) == {"a", "b"}
    assert wf.topological_order() == ["a", "b"]
    assert isinstance(wf.version, str)
    assert wf.version


def test_description_defaults_to_none():
    @task
    def only(ctx):
        pass

    assert Workflow("no_description_wf", [only]).description is None


def test_topological_order_of_a_chain_listed_backwards():
    @task
    def c1(ctx):
        pass

    @task(dependencies=[c1])
    def c2(ctx):
        pass

    @task(dependencies=[c2])
    def c3(ctx):
        pass

    wf = Workflow("backwards_wf", [c3, c2, c1])
    assert wf.topological_order() == ["c1", "c2", "c3"]


def test_topological_order_of_a_diamond_is_valid_and_deterministic():
    @task
    def root(ctx):
        pass

    @task(dependencies=[root])
    def left(ctx):
        pass

    @task(dependencies=[root])
    def right(ctx):
        pass

    @task(dependencies=[left, right])
    def join(ctx):
        pass

    listing = [join, right, left, root]
    order = Workflow("diamond_order_wf", listing).topological_order()
    assert_topological(
        order, {"root": [], "left": ["root"], "right": ["root"], "join": ["left", "right"]}
    )
    assert order[0] == "root"
    assert order[-1] == "join"
    # Building the same workflow again gives the same order.
    assert Workflow("diamond_order_wf", listing).topological_order() == order


def test_dependencies_by_string_id():
    @task(id="s_root")
    def s_root(ctx):
        pass

    @task(id="s_leaf", dependencies=["s_root"])
    def s_leaf(ctx):
        pass

    wf = Workflow("string_deps_wf", [s_leaf, s_root])
    assert wf.topological_order() == ["s_root", "s_leaf"]


def test_unlisted_task_object_dependencies_are_pulled_in(runner):
    @task
    def pull_a(ctx):
        ctx["a"] = 1

    @task(dependencies=[pull_a])
    def pull_b(ctx):
        ctx["b"] = ctx["a"] + 1

    @task(dependencies=[pull_b])
    def pull_c(ctx):
        ctx["c"] = ctx["b"] + 1

    wf = Workflow("pull_in_wf", [pull_c])
    assert task_ids(wf) == {"pull_a", "pull_b", "pull_c"}
    assert wf.topological_order() == ["pull_a", "pull_b", "pull_c"]

    result = runner.run(wf, {})
    assert result.status == "completed"
    assert result.context == {"a": 1, "b": 2, "c": 3}


# --- validation -------------------------------------------------------------------------


def test_two_task_cycle_names_the_path():
    @task(id="cy_a", dependencies=["cy_b"])
    def a(ctx):
        pass

    @task(id="cy_b", dependencies=["cy_a"])
    def b(ctx):
        pass

    with pytest.raises(WorkflowError) as exc:
        Workflow("cycle2_wf", [a, b])
    msg = str(exc.value)
    assert "cy_a -> cy_b -> cy_a" in msg or "cy_b -> cy_a -> cy_b" in msg, msg


def test_three_task_cycle_names_the_whole_path():
    # x runs before y, y before z, z before x.
    @task(id="cy_x", dependencies=["cy_z"])
    def x(ctx):
        pass

    @task(id="cy_y", dependencies=["cy_x"])
    def y(ctx):
        pass

    @task(id="cy_z", dependencies=["cy_y"])
    def z(ctx):
        pass

    @task(id="cy_outside")
    def outside(ctx):
        pass

    with pytest.raises(WorkflowError) as exc:
        Workflow("cycle3_wf", [outside, x, y, z])
    msg = str(exc.value)
    ring = ["cy_x", "cy_y", "cy_z"]
    # Either direction of the arrows is accepted, starting from any task on the cycle.
    paths = []
    for seq in (ring, ring[::-1]):
        for i in range(3):
            rotated = seq[i:] + seq[:i]
            paths.append(" -> ".join([*rotated, rotated[0]]))
    assert any(p in msg for p in paths), msg
    assert "cy_outside" not in msg


def test_self_dependency_is_a_cycle():
    @task(id="selfish", dependencies=["selfish"])
    def selfish(ctx):
        pass

    with pytest.raises(WorkflowError, match="selfish -> selfish"):
        Workflow("self_cycle_wf", [selfish])


def test_unknown_dependency_is_named():
    @task(id="needs_ghost", dependencies=["ghost_task_never_defined"])
    def needs_ghost(ctx):
        pass

    with pytest.raises(WorkflowError, match="ghost_task_never_defined"):
        Workflow("unknown_dep_wf", [needs_ghost])


def test_duplicate_task_id_is_named():
    @task(id="twin")
    def twin_one(ctx):
        pass

    @task(id="twin")
    def twin_two(ctx):
        pass

    with pytest.raises(WorkflowError, match="twin"):
        Workflow("duplicate_wf", [twin_one, twin_two])


def test_empty_workflow():
    with pytest.raises(WorkflowError):
        Workflow("empty_wf", [])


def test_validation_errors_are_cloacina_errors():
    with pytest.raises(cloacina.CloacinaError):
        Workflow("empty_wf_again", [])


# --- version ------------------------------------------------------------------------------


def _make_b(deps):
    # The same code object every time: only the edges differ between calls.
    @task(id="ver_b", dependencies=deps)
    def ver_b(ctx):
        ctx["b"] = 1

    return ver_b


def test_version_is_stable_for_the_same_definition():
    @task(id="ver_a")
    def ver_a(ctx):
        ctx["a"] = 1

    b = _make_b(["ver_a"])
    v1 = Workflow("version_wf", [ver_a, b]).version
    assert Workflow("version_wf", [ver_a, b]).version == v1
    # Listing order is not part of the graph.
    assert Workflow("version_wf", [b, ver_a]).version == v1
    # Re-decorating identical code with identical edges changes nothing either.
    assert Workflow("version_wf", [ver_a, _make_b(["ver_a"])]).version == v1


def test_version_changes_with_an_edge():
    @task(id="ver_a")
    def ver_a(ctx):
        ctx["a"] = 1

    linked = Workflow("version_wf", [ver_a, _make_b(["ver_a"])]).version
    unlinked = Workflow("version_wf", [ver_a, _make_b([])]).version
    assert linked != unlinked


def test_version_changes_with_a_task():
    @task(id="ver_a")
    def ver_a(ctx):
        ctx["a"] = 1

    @task(id="ver_extra")
    def ver_extra(ctx):
        ctx["extra"] = 1

    b = _make_b(["ver_a"])
    assert (
        Workflow("version_wf", [ver_a, b]).version
        != Workflow("version_wf", [ver_a, b, ver_extra]).version
    )


def test_version_changes_with_a_tasks_code():
    @task(id="ver_code")
    def ver_code_v1(ctx):
        return 1

    v1 = Workflow("version_code_wf", [ver_code_v1]).version

    @task(id="ver_code")
    def ver_code_v2(ctx):
        return 2

    v2 = Workflow("version_code_wf", [ver_code_v2]).version
    assert v1 != v2


def test_version_is_the_same_in_another_process(make_db_url, tmp_path):
    # The version is stored with every run, so it must not depend on per-process state
    # such as Python's randomized string hashing.
    versions = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        url = make_db_url(f"seed{seed}")
        proc = run_script("run_workflow.py", url, json.dumps({"n": 1}), cwd=tmp_path, env=env)
        versions.append(json.loads(proc.stdout)["version"])
    assert versions[0] == versions[1]
