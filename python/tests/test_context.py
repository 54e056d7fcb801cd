"""What a task sees in its Context, what its return value does, and what is stored."""

from __future__ import annotations

import json
import time

import pytest
from cloacina import Context, Runner, Workflow, task
from helpers import loads

# --- the Context object ---------------------------------------------------------------


def test_context_is_dict_like(runner):
    @task
    def inspect(ctx):
        ctx["is_context"] = isinstance(ctx, Context)
        ctx["get_present"] = ctx.get("x")
        ctx["get_missing"] = ctx.get("missing")
        ctx["get_default"] = ctx.get("missing", 5)
        ctx["has_x"] = "x" in ctx
        ctx["has_missing"] = "missing" in ctx
        try:
            ctx["missing"]
        except KeyError:
            ctx["missing_raises_keyerror"] = True
        ctx.update({"u1": 1, "u2": [2]})
        ctx["keys"] = sorted(ctx.keys())
        ctx["items"] = {k: v for k, v in ctx.items() if k in ("x", "u1", "u2")}
        snapshot = ctx.to_dict()
        ctx["to_dict_is_dict"] = type(snapshot) is dict
        ctx["to_dict"] = snapshot

    result = runner.run(Workflow("dict_like_wf", [inspect]), {"x": 10})
    assert result.status == "completed", result.error
    c = result.context
    assert c["is_context"] is True
    assert c["get_present"] == 10
    assert c["get_missing"] is None
    assert c["get_default"] == 5
    assert c["has_x"] is True
    assert c["has_missing"] is False
    assert c["missing_raises_keyerror"] is True
    assert c["u1"] == 1 and c["u2"] == [2]
    assert set(c["keys"]) >= {"x", "u1", "u2", "get_present", "has_x"}
    assert "missing" not in c["keys"]
    assert c["items"] == {"x": 10, "u1": 1, "u2": [2]}
    assert c["to_dict_is_dict"] is True
    assert c["to_dict"]["x"] == 10 and c["to_dict"]["u2"] == [2]


def test_json_values_round_trip(runner):
    value = {
        "int": 2**53 + 1,
        "neg": -7,
        "float": 0.1,
        "bool": False,
        "none": None,
        "text": 'héllo ✓ "quoted"\n',
        "list": [1, "two", None, [3.5], {"k": "v"}],
        "nested": {"a": {"b": {"c": []}}},
        "empty": {},
    }

    @task
    def echo(ctx):
        ctx["echo"] = ctx["value"]
        ctx["types_ok"] = (
            type(ctx["value"]["int"]) is int
            and type(ctx["value"]["float"]) is float
            and type(ctx["value"]["list"]) is list
        )

    result = runner.run(Workflow("round_trip_wf", [echo]), {"value": value})
    assert result.context["echo"] == value
    assert result.context["types_ok"] is True


def test_input_dict_is_not_mutated(runner):
    @task
    def overwrite(ctx):
        ctx["x"] = "changed"
        ctx["new"] = 1

    payload = {"x": "original"}
    result = runner.run(Workflow("no_mutation_wf", [overwrite]), payload)
    assert result.context == {"x": "changed", "new": 1}
    assert payload == {"x": "original"}


def test_a_task_sees_its_own_writes(runner):
    @task
    def step(ctx):
        ctx["a"] = 1
        ctx["b"] = ctx["a"] + 1
        ctx["a"] = 10

    result = runner.run(Workflow("own_writes_wf", [step]), {})
    assert result.context == {"a": 10, "b": 2}


# --- visibility ---------------------------------------------------------------------------


def test_input_is_visible_to_every_task(runner):
    seen = {}

    @task
    def root(ctx):
        seen["root"] = ctx["source"]

    @task(dependencies=[root])
    def left(ctx):
        seen["left"] = ctx["source"]

    @task(dependencies=[root])
    def right(ctx):
        seen["right"] = ctx["source"]

    @task(dependencies=[left, right])
    def join(ctx):
        seen["join"] = ctx["source"]

    @task
    def loner(ctx):
        seen["loner"] = ctx["source"]

    wf = Workflow("input_everywhere_wf", [root, left, right, join, loner])
    result = runner.run(wf, {"source": "a.csv"})
    assert result.status == "completed"
    assert seen == dict.fromkeys(["root", "left", "right", "join", "loner"], "a.csv")


def test_ancestors_writes_are_visible_transitively(runner):
    @task
    def grand(ctx):
        ctx["x"] = "grand"
        ctx["from_grand"] = True

    @task(dependencies=[grand])
    def parent(ctx):
        ctx["x"] = "parent"

    @task(dependencies=[parent])
    def child(ctx):
        ctx["child_saw"] = {"x": ctx["x"], "from_grand": ctx.get("from_grand")}

    result = runner.run(Workflow("ancestry_wf", [grand, parent, child]), {"x": "input"})
    assert result.context["child_saw"] == {"x": "parent", "from_grand": True}
    assert result.context["x"] == "parent"


def test_non_ancestor_writes_are_not_visible(db_url):
    # With one task at a time, whichever sibling runs second would see the first one's
    # writes if the engine leaked them; so both siblings record what they saw.
    @task
    def root(ctx):
        ctx["root_key"] = "root"

    @task(dependencies=[root])
    def left(ctx):
        ctx["left_saw"] = {"right_key": "right_key" in ctx, "y": ctx["y"]}
        ctx["left_key"] = 1
        ctx["x"] = "left"

    @task(dependencies=[root])
    def right(ctx):
        ctx["right_saw"] = {"left_key": "left_key" in ctx, "x": ctx["x"]}
        ctx["right_key"] = 1
        ctx["y"] = "right"

    @task
    def independent(ctx):
        ctx["independent_saw"] = sorted(
            k for k in ("root_key", "left_key", "right_key") if k in ctx
        )

    wf = Workflow("siblings_wf", [root, left, right, independent])
    with Runner(db_url, max_concurrency=1) as runner:
        result = runner.run(wf, {"x": "input", "y": "input"})

    assert result.status == "completed", result.error
    c = result.context
    assert c["left_saw"] == {"right_key": False, "y": "input"}
    assert c["right_saw"] == {"left_key": False, "x": "input"}
    assert c["independent_saw"] == []
    # The final context holds everyone's writes.
    assert c["x"] == "left" and c["y"] == "right"
    assert c["root_key"] == "root" and c["left_key"] == 1 and c["right_key"] == 1


def test_diamond_merge_follows_topological_order_not_completion_order(runner):
    @task
    def root(ctx):
        ctx["shared"] = "root"

    @task(dependencies=[root])
    def left(ctx):
        time.sleep(ctx["delay"]["left"])
        ctx["shared"] = "left"

    @task(dependencies=[root])
    def right(ctx):
        time.sleep(ctx["delay"]["right"])
        ctx["shared"] = "right"

    @task(dependencies=[left, right])
    def join(ctx):
        ctx["join_saw"] = ctx["shared"]

    wf = Workflow("merge_order_wf", [root, left, right, join])
    order = wf.topological_order()
    later = max(("left", "right"), key=order.index)
    earlier = min(("left", "right"), key=order.index)

    # The branch that comes later in the order finishes first.
    result = runner.run(wf, {"delay": {earlier: 0.3, later: 0.0}})
    assert result.status == "completed", result.error
    assert result.context["join_saw"] == later
    assert result.context["shared"] == later


# --- return values ------------------------------------------------------------------------


def test_returning_none_keeps_writes(runner, rows):
    @task
    def writer(ctx):
        ctx["written"] = [1, 2]
        return None

    @task(dependencies=[writer])
    def silent(ctx):
        ctx.get("written")

    result = runner.run(Workflow("none_return_wf", [writer, silent]), {})
    assert result.context == {"written": [1, 2]}
    outputs = {
        r["task_id"]: loads(r["output"])
        for r in rows("SELECT task_id, output FROM task_outputs WHERE run_id = ?", result.run_id)
    }
    assert outputs == {"writer": {"written": [1, 2]}, "silent": {}}


def test_returned_dict_is_merged_with_writes(runner, rows):
    @task
    def merger(ctx):
        ctx["written"] = 1
        ctx["both"] = "written"
        return {"returned": {"deep": [1]}, "both": "returned"}

    @task(dependencies=[merger])
    def reader(ctx):
        ctx["reader_saw"] = [ctx["written"], ctx["returned"], ctx["both"]]

    result = runner.run(Workflow("dict_return_wf", [merger, reader]), {})
    assert result.context["reader_saw"] == [1, {"deep": [1]}, "returned"]
    [row] = rows(
        "SELECT output FROM task_outputs WHERE run_id = ? AND task_id = 'merger'", result.run_id
    )
    assert loads(row["output"]) == {"written": 1, "both": "returned", "returned": {"deep": [1]}}


@pytest.mark.parametrize(
    "value",
    [42, 0, 1.5, False, True, "text", "", [1, "two", None], []],
    ids=repr,
)
def test_other_return_values_are_stored_under_the_task_id(runner, rows, value):
    @task(id="produce")
    def produce(ctx):
        return value

    @task(dependencies=["produce"])
    def consume(ctx):
        ctx["consumed"] = ctx["produce"]

    result = runner.run(Workflow("scalar_return_wf", [produce, consume]), {})
    assert result.status == "completed", result.error
    assert result.context == {"produce": value, "consumed": value}
    assert type(result.context["produce"]) is type(value)
    [row] = rows(
        "SELECT output FROM task_outputs WHERE run_id = ? AND task_id = 'produce'", result.run_id
    )
    assert loads(row["output"]) == {"produce": value}


def test_return_value_and_writes_are_both_kept(runner):
    @task
    def both(ctx):
        ctx["w"] = 1
        return 5

    result = runner.run(Workflow("write_and_return_wf", [both]), {})
    assert result.context == {"w": 1, "both": 5}


def test_output_column_holds_only_each_tasks_delta(runner, rows):
    def make(i):
        def body(ctx):
            ctx[f"k{i}"] = (ctx[f"k{i - 1}"] if i else ctx["start"]) + 1

        return task(id=f"chain{i}", dependencies=[f"chain{i - 1}"] if i else [])(body)

    tasks = [make(i) for i in range(20)]

    result = runner.run(Workflow("delta_chain_wf", tasks), {"start": 100})
    assert result.status == "completed", result.error
    assert result.context == {"start": 100, **{f"k{i}": 101 + i for i in range(20)}}

    db_rows = rows(
        "SELECT t.task_id, t.position, o.output FROM run_tasks t "
        "LEFT JOIN task_outputs o ON o.run_id = t.run_id AND o.task_id = t.task_id "
        "WHERE t.run_id = ? ORDER BY t.position",
        result.run_id,
    )
    assert len(db_rows) == 20
    for i, row in enumerate(db_rows):
        assert row["task_id"] == f"chain{i}"
        assert row["position"] == i
        assert loads(row["output"]) == {f"k{i}": 101 + i}


def test_final_context_is_rebuilt_from_the_database(runner, db_url):
    @task
    def first(ctx):
        ctx["shared"] = "first"
        ctx["a"] = 1

    @task(dependencies=[first])
    def second(ctx):
        ctx["shared"] = "second"
        return [ctx["a"]]

    result = runner.run(Workflow("rebuild_wf", [first, second]), {"shared": "input", "in": 0})
    expected = {"shared": "second", "in": 0, "a": 1, "second": [1]}
    assert result.context == expected

    runner.close()
    with Runner(db_url) as fresh:
        again = fresh.get_run(result.run_id)
    assert again.context == expected


def test_in_place_change_of_a_read_container_is_a_write(runner, rows):
    @task(id="appender")
    def appender(ctx):
        ctx["items"].append(4)
        ctx["config"]["mode"] = "fast"

    @task(id="reader_only", dependencies=["appender"])
    def reader_only(ctx):
        seen = ctx["items"]  # read, unchanged: not a write
        return {"count": len(seen), "mode": ctx["config"]["mode"]}

    wf = Workflow("in_place_wf", [appender, reader_only])
    result = runner.run(wf, {"items": [1, 2, 3], "config": {"mode": "slow"}})
    assert result.status == "completed"
    assert result.context["items"] == [1, 2, 3, 4]
    assert result.context["count"] == 4
    assert result.context["mode"] == "fast"
    outputs = {
        r["task_id"]: json.loads(r["output"])
        for r in rows("SELECT task_id, output FROM task_outputs")
    }
    assert outputs["appender"] == {"items": [1, 2, 3, 4], "config": {"mode": "fast"}}
    assert outputs["reader_only"] == {"count": 4, "mode": "fast"}


def test_input_that_is_not_json_is_refused_naming_the_key(runner):
    wf = Workflow("bad_input_wf", [task(id="bad_input_t")(lambda ctx: None)])
    with pytest.raises(TypeError, match="when"):
        runner.run(wf, {"when": object()})
    with pytest.raises(TypeError):
        runner.run(wf, {"nested": {"s": {1, 2}}})
    with pytest.raises(TypeError):
        runner.run(wf, ["not", "a", "dict"])


def test_keys_and_items_keep_insertion_order(runner):
    @task(id="order_reader")
    def order_reader(ctx):
        ctx["z"] = 1
        return {"keys": list(ctx.keys()), "items": [k for k, _ in ctx.items()]}

    result = runner.run(Workflow("order_wf", [order_reader]), {"b": 1, "a": 2})
    assert result.context["keys"] == ["b", "a", "z"]
    assert result.context["items"] == ["b", "a", "z"]


def test_floats_come_back_from_the_database_bit_for_bit(runner):
    import random
    import struct

    rng = random.Random(20261130)
    patterns = (struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0] for _ in range(8000))
    values = [v for v in patterns if v == v and abs(v) != float("inf")]
    values += [rng.random() * 10 ** rng.randint(-300, 300) for _ in range(4000)]
    values += [5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 0.1, -0.0, 1 / 3]

    @task(id="floats_written")
    def written(ctx):
        ctx["floats"] = values

    @task(id="floats_read", dependencies=[written])
    def read(ctx):
        return {"same_in_the_run": ctx["floats"] == values}

    result = runner.run(Workflow("floats_wf", [written, read]))
    assert result.context["same_in_the_run"] is True
    # The result is read back from the database: the stored text must parse to the same
    # doubles (serde_json's default parser was off by one ulp for about a third of them).
    stored = result.context["floats"]
    assert [struct.pack("d", v) for v in stored] == [struct.pack("d", v) for v in values]
