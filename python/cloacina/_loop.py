"""The runner's own asyncio loop, on a daemon thread: async task bodies run there, so
``Runner.run`` behaves the same in a script and inside Jupyter's running loop."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cloacina._invoke import call_async, current_runner, note_early_interrupt, take_early_interrupt

if TYPE_CHECKING:
    import asyncio

    from cloacina._native import ContextView

# asyncio (tens of milliseconds to import) is loaded when the loop first starts, not
# at `import cloacina`: a program without async tasks never needs it.


class BackgroundLoop:
    """An asyncio loop on its own thread, started on first use."""

    def __init__(self, name: str = "cloacina-loop", runner_key: object = None) -> None:
        self._name = name
        self._runner_key = runner_key
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}

    @property
    def thread_id(self) -> int | None:
        """The loop thread's ident, once started."""
        return self._thread.ident if self._thread is not None else None

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                import asyncio

                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def main() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()
                    # Stopped: attempts still running are cancelled and given a moment
                    # to unwind, rather than destroyed while pending.
                    pending = asyncio.all_tasks(loop)
                    for t in pending:
                        t.cancel()
                    if pending:
                        loop.run_until_complete(asyncio.wait(pending, timeout=1.0))
                    loop.close()

                thread = threading.Thread(target=main, name=self._name, daemon=True)
                thread.start()
                ready.wait()
                self._loop, self._thread = loop, thread
            return self._loop

    def submit(
        self,
        fn: Callable[..., Any],
        task_id: str,
        data: ContextView,
        token: str,
        completion: Any,
    ) -> None:
        """Schedules an async task body; ``completion.ok``/``.fail`` gets its result."""
        loop = self._ensure()
        loop.call_soon_threadsafe(self._start, fn, task_id, data, token, completion)

    def _start(
        self,
        fn: Callable[..., Any],
        task_id: str,
        data: ContextView,
        token: str,
        completion: Any,
    ) -> None:
        import asyncio  # loaded by _ensure; this runs on the loop

        if take_early_interrupt(token) is not None:
            # Timed out or cancelled before it could start: never start it.
            completion.fail(asyncio.CancelledError())
            return
        task = asyncio.get_running_loop().create_task(
            self._drive(fn, task_id, data, token, completion, self._runner_key)
        )
        self._tasks[token] = task
        task.add_done_callback(lambda _: self._tasks.pop(token, None))

    def cancel(self, token: str, why: str = "cancel") -> None:
        """Cancels the async attempt ``token``: now if it is running, as soon as it is
        scheduled if it is not yet."""
        loop = self._loop
        if loop is None:
            note_early_interrupt(token, why)
        else:
            loop.call_soon_threadsafe(self._cancel, token, why)

    def _cancel(self, token: str, why: str) -> None:
        task = self._tasks.get(token)
        if task is not None:
            task.cancel()
        else:
            note_early_interrupt(token, why)

    @staticmethod
    async def _drive(
        fn: Callable[..., Any],
        task_id: str,
        data: ContextView,
        token: str,
        completion: Any,
        runner_key: object,
    ) -> None:
        current_runner.set(runner_key)  # this asyncio task's own copy of the context
        try:
            out = await call_async(fn, task_id, data, token, runner_key)
        except GeneratorExit:
            raise  # the loop is gone: the dropped completion reports the attempt failed
        except BaseException as exc:
            completion.fail(exc)
        else:
            completion.ok(out)

    def stop(self) -> None:
        """Stops the loop and joins its thread. Idempotent."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        if thread is not threading.current_thread():
            thread.join(timeout=10)
