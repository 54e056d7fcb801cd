"""Listing runs is light whatever they hold, and results print small; forgotten runners
close themselves and a second runner on one file is logged."""

from __future__ import annotations

import gc
import logging
import os
import time
import tracemalloc

import pytest
from cloacina import RunHandle, Runner, RunSummary, Workflow, task
from helpers import eventually

BIG = "x" * 1_000_000  # a 1 MB value


def test_listing_runs_with_large_contexts_reads_no_context(db_url):
    @task(id="big_writer")
    def big_writer(ctx):
        return {"rows": BIG}

    wf = Workflow("big_wf", [big_writer])
    with Runner(db_url) as runner:
        ids = [runner.run(wf, {"input": BIG}).run_id for _ in range(20)]
        tracemalloc.start()
        started = time.perf_counter()
        listed = runner.list_runs()
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert [r.run_id for r in listed] == ids[::-1]
        assert all(isinstance(r, RunSummary) and r.task_counts == {"completed": 1} for r in listed)
        # 20 runs holding 2 MB each: listing them copies none of it into Python.
        assert peak < 2_000_000, peak
        assert elapsed < 2.0, elapsed
        # The context is there when asked for.
        assert listed[0].context["rows"] == BIG


def test_results_print_small(runner):
    @task(id="huge")
    def huge(ctx):
        return {"rows": BIG, "n": 3}

    @task(id="fails", dependencies=[huge])
    def fails(ctx):
        raise ValueError("line one\nline two")

    wf = Workflow("print_wf", [huge, fails])
    result = runner.run(wf, {"source": "a.csv"})
    text = repr(result)
    assert len(text) < 600, text
    assert "failed" in text and "print_wf" in text
    assert "1 completed" in text and "1 failed" in text
    assert "rows: 1e+03 kB" in text or "rows: 1 MB" in text, text
    assert "source" in text
    task_text = repr(result.tasks["fails"])
    assert len(task_text) < 300 and "line one" in task_text and "line two" not in task_text
    [summary] = runner.list_runs(limit=1)
    assert len(repr(summary)) < 300 and "1 completed, 1 failed" in repr(summary)
    handle = runner.start(wf)
    assert repr(handle) == f"RunHandle({handle.run_id!r})"
    handle.wait(timeout=30)
    assert isinstance(handle, RunHandle)


@pytest.mark.sqlite_only("many runners on one PostgreSQL database are the normal case: no warning")
def test_a_second_runner_on_one_file_is_logged_and_a_forgotten_one_closes_itself(db_url, caplog):
    @task(id="tiny")
    def tiny(ctx):
        return {"x": 1}

    def thread_names() -> list[str]:
        names = []
        for t in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{t}/comm") as f:
                    names.append(f.read().strip())
            except FileNotFoundError:
                pass  # the thread ended between the listing and this read
        return names

    def threads_but_workers(names: list[str]) -> int:
        return sum(1 for name in names if name not in ("cloacina-worker", "cloacina-task"))

    wf = Workflow("tiny_wf", [tiny])
    threads_before = threads_but_workers(thread_names())
    schedulers_before = thread_names().count("cloacina-schedu")
    task_threads_before = thread_names().count("cloacina-task")
    with caplog.at_level(logging.WARNING, logger="cloacina"):
        for _ in range(10):
            runner = Runner(db_url)  # as re-running a notebook cell does
            assert runner.run(wf).status == "completed"
    warnings = [r for r in caplog.records if "already open" in r.getMessage()]
    assert len(warnings) == 9, [r.getMessage() for r in caplog.records]
    assert thread_names().count("cloacina-task") > task_threads_before  # the open runner's
    del runner
    gc.collect()
    # Each forgotten runner closed itself: its scheduler thread, its task threads and its
    # event loop are gone, and nothing polls in the background. The task threads end at
    # the close, not after their 10 s idle time: within 5 s. (The runtime's shared
    # threads, "cloacina-worker", stay for the next runner.)
    eventually(
        thread_names,
        lambda names: names.count("cloacina-task") <= task_threads_before,
        timeout=5,
        interval=0.1,
    )
    eventually(
        thread_names,
        lambda names: threads_but_workers(names) <= threads_before + 4,
        timeout=15,
        interval=0.2,
    )
    eventually(
        thread_names,
        lambda names: names.count("cloacina-schedu") <= schedulers_before,
        timeout=10,
        interval=0.1,
    )
