"""The context a task receives is a view of what the engine holds: values become Python
objects when read (once per attempt), and what the task sees is exactly the fold of the
run's input and its ancestors' writes in merge order, however the engine shares them."""

from __future__ import annotations

import copy
import json
import pickle
import random

from cloacina import Workflow, task


def test_a_value_read_twice_is_the_same_object(runner):
    @task(id="same_obj")
    def same_obj(ctx):
        first = ctx["d"]
        return {
            "same_item": first is ctx["d"],
            "same_get": first is ctx.get("d"),
            "same_values": any(v is first for v in ctx.values()),
        }

    result = runner.run(Workflow("same_obj_wf", [same_obj]), {"d": {"deep": [1]}, "n": 1})
    assert result.status == "completed", result.error
    assert result.context["same_item"] is True
    assert result.context["same_get"] is True
    assert result.context["same_values"] is True


def test_only_the_values_a_task_reads_are_converted(runner):
    """White-box: the context's Python-side store holds only what the task touched."""

    @task(id="reads_one")
    def reads_one(ctx):
        converted_before = len(ctx._data)
        ctx["k7"]
        "k8" in ctx  # noqa: B015 - membership converts nothing
        ctx.keys()
        return {"before": converted_before, "after": len(ctx._data), "size": len(ctx)}

    data = {f"k{i}": {"payload": "x" * 100} for i in range(2_000)}
    result = runner.run(Workflow("reads_one_wf", [reads_one]), data)
    assert result.status == "completed", result.error
    assert (result.context["before"], result.context["after"]) == (0, 1)
    assert result.context["size"] == 2_000


def test_values_and_items_count_in_place_changes_as_writes(runner, rows):
    @task(id="grows")
    def grows(ctx):
        for value in ctx.values():
            if isinstance(value, list):
                value.append("v")
        for key, value in ctx.items():
            if key == "d":
                value["by_items"] = True

    @task(id="sees", dependencies=[grows])
    def sees(ctx):
        return {"seen": [ctx["l"], ctx["d"]]}

    result = runner.run(Workflow("in_place_views_wf", [sees]), {"l": [], "d": {}, "s": "x"})
    assert result.status == "completed", result.error
    assert result.context["seen"] == [["v"], {"by_items": True}]
    [row] = rows(
        "SELECT output FROM task_outputs WHERE run_id = ? AND task_id = 'grows'", result.run_id
    )
    assert json.loads(row["output"]) == {"l": ["v"], "d": {"by_items": True}}


def test_new_keys_follow_the_view_and_a_rewrite_keeps_its_place(runner):
    @task(id="upstream_w")
    def upstream_w(ctx):
        ctx["up"] = 1

    @task(id="order_w", dependencies=[upstream_w])
    def order_w(ctx):
        ctx["new1"] = 1
        ctx["a"] = "rewritten"
        ctx["new2"] = 2
        ctx["new1"] = 3
        return {
            "keys": list(ctx),
            "len": len(ctx),
            "in": ["new2" in ctx, "up" in ctx, "zz" in ctx, 5 in ctx],
            "set_ops": sorted(ctx.keys() & {"a", "new2", "zz"}),
            "repr_has_new": "new2" in repr(ctx),
            "equal": ctx == {"a": "rewritten", "b": 2, "up": 1, "new1": 3, "new2": 2},
        }

    result = runner.run(Workflow("order_w_wf", [order_w]), {"a": 1, "b": 2})
    assert result.status == "completed", result.error
    c = result.context
    assert c["keys"] == ["a", "b", "up", "new1", "new2"]
    assert c["len"] == 5
    assert c["in"] == [True, True, False, False]
    assert c["set_ops"] == ["a", "new2"]
    assert c["repr_has_new"] is True
    assert c["equal"] is True


def test_a_retry_gets_a_fresh_context(runner):
    """An attempt's in-place changes die with it: the next attempt converts anew."""
    attempts = []

    @task(id="flaky_mutator", retries=1, retry_delay=0)
    def flaky_mutator(ctx):
        items = ctx["items"]
        attempts.append(list(items))
        items.append(len(attempts))
        if len(attempts) == 1:
            raise RuntimeError("first attempt fails")

    result = runner.run(Workflow("fresh_retry_wf", [flaky_mutator]), {"items": [0]})
    assert result.status == "completed", result.error
    assert attempts == [[0], [0]]
    assert result.context["items"] == [0, 2]


def test_a_context_pickles_and_copies_as_its_data(runner):
    @task(id="pickles")
    def pickles(ctx):
        ctx["new"] = [1]
        back = pickle.loads(pickle.dumps(ctx))
        deep = copy.deepcopy(ctx)
        deep["new"].append(2)
        return {
            "back": back.to_dict(),
            "shallow": copy.copy(ctx).to_dict(),
            "deep_is_apart": ctx["new"] == [1],
        }

    result = runner.run(Workflow("pickles_wf", [pickles]), {"a": {"b": 1}})
    assert result.status == "completed", result.error
    assert result.context["back"] == {"a": {"b": 1}, "new": [1]}
    assert result.context["shallow"] == {"a": {"b": 1}, "new": [1]}
    assert result.context["deep_is_apart"] is True


def random_workflow(name: str, seed: int, size: int = 12) -> Workflow:
    """A random DAG whose tasks write keys from a small pool (so writes collide) and
    record what they saw: every key and value, in order."""
    rng = random.Random(seed)
    tasks = []
    for i in range(size):
        parents = rng.sample(tasks, k=rng.randint(0, min(3, len(tasks))))
        writes = rng.sample(["a", "b", "c", "d", "e", "f"], k=rng.randint(0, 3))
        task_id = f"{name}_{i}"

        def body(ctx, task_id=task_id, writes=writes):
            ctx[f"saw_{task_id}"] = [[key, ctx[key]] for key in ctx]
            for key in writes:
                ctx[key] = f"{task_id}:{key}"

        tasks.append(task(id=task_id, dependencies=parents)(body))
    return Workflow(name, tasks)


def test_random_dags_see_exactly_the_fold_of_their_ancestors(runner, rows):
    for seed in range(8):
        name = f"random_dag_{seed}"
        wf = random_workflow(name, seed)
        result = runner.run(wf, {"a": "input", "z": "input"})
        assert result.status == "completed", result.error
        stored = {
            r["task_id"]: json.loads(r["output"])
            for r in rows(
                "SELECT task_id, output FROM task_outputs WHERE run_id = ?", result.run_id
            )
        }
        order = wf.topological_order()
        parents = {tid: result.tasks[tid].dependencies for tid in order}
        ancestors: dict[str, set[str]] = {}
        for tid in order:
            ancestors[tid] = set(parents[tid]).union(*(ancestors[p] for p in parents[tid]))
        for tid in order:
            expected = {"a": "input", "z": "input"}
            for writer in order:  # merge order: later writers win, first appearance orders
                if writer in ancestors[tid]:
                    expected.update(stored[writer])
            saw = result.context[f"saw_{tid}"]
            assert saw == [[k, v] for k, v in expected.items()], (seed, tid)
        final = {"a": "input", "z": "input"}
        for writer in order:
            final.update(stored[writer])
        assert list(result.context.items()) == list(final.items()), seed
