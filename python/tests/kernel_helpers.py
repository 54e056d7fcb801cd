"""Running code in a real Jupyter (ipykernel) kernel, as a notebook does.

``Kernel`` drives one kernel with jupyter_client: ``send`` a cell and ``collect`` its
outputs later (so a test can interrupt or restart the kernel in between), or ``run`` it.
``run_notebook`` executes a list of cells with nbclient on an nbformat notebook. Every
wait has a deadline; the kernel's own stdout and stderr go to ``kernel.log``, shown when a
wait fails.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import AsyncKernelManager, KernelManager

STARTUP_TIMEOUT = 60.0
"""Seconds a kernel gets to start and answer (a loaded 2-core machine is slow)."""

DATA_TAG = "@@data "
"""Prefix of a line a cell prints to hand a JSON value to the test (see ``emit``)."""

EMIT = f"""
import json as _json
def emit(value):
    print({DATA_TAG!r} + _json.dumps(value, default=str), flush=True)
"""
"""Defines ``emit(value)`` in the kernel: prints a JSON line the test reads back."""


def kernel_spec() -> KernelSpec:
    """The python3 kernel, run by this very interpreter (the virtualenv's), without an
    IPython history database (one SQLite file fewer to race on)."""
    return KernelSpec(
        argv=[
            sys.executable,
            "-m",
            "ipykernel_launcher",
            "-f",
            "{connection_file}",
            "--HistoryManager.enabled=False",
        ],
        display_name="Python 3 (ipykernel)",
        language="python",
        interrupt_mode="signal",
        metadata={},
    )


def kernel_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["IPYTHONDIR"] = str(home / "ipython")
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"  # debugpy's frozen-modules warning
    env.pop("CLOACINA_DATABASE_URL", None)
    return env


def make_manager(cls: type = KernelManager) -> Any:
    """A kernel manager (``KernelManager`` or ``AsyncKernelManager``) for ``kernel_spec()``."""
    km = cls(kernel_name="python3")
    km._kernel_spec = kernel_spec()  # no setter; the spec is read when the kernel starts
    return km


@dataclass
class Cell:
    """What one executed cell produced."""

    code: str
    stdout: str = ""
    stderr: str = ""
    error: dict[str, Any] | None = None
    """The error output's ``ename``, ``evalue`` and ``traceback``, if the cell raised."""
    outputs: list[dict[str, Any]] = field(default_factory=list)
    elapsed: float = 0.0
    """Seconds from sending the cell to the kernel going idle (for ``Kernel`` cells)."""

    @property
    def ename(self) -> str | None:
        return None if self.error is None else self.error["ename"]

    def data(self) -> list[Any]:
        """Every value the cell passed to ``emit``, in order."""
        return [
            json.loads(line[len(DATA_TAG) :])
            for line in self.stdout.splitlines()
            if line.startswith(DATA_TAG)
        ]

    def value(self) -> Any:
        """The one value the cell emitted."""
        values = self.data()
        assert len(values) == 1, f"expected one emitted value, got {values!r}\n{self.describe()}"
        return values[0]

    def ok(self) -> Cell:
        """Fails the test with the cell's output if the cell raised."""
        assert self.error is None, f"the cell raised\n{self.describe()}"
        return self

    def describe(self) -> str:
        tb = "\n".join(self.error["traceback"]) if self.error else ""
        return (
            f"--- cell ---\n{self.code.strip()}\n--- stdout ---\n{self.stdout}"
            f"--- stderr ---\n{self.stderr}--- error ---\n{strip_ansi(tb)}"
        )

    @classmethod
    def from_outputs(cls, code: str, outputs: list[dict[str, Any]]) -> Cell:
        cell = cls(code=code, outputs=outputs)
        for out in outputs:
            if out["output_type"] == "stream":
                if out["name"] == "stdout":
                    cell.stdout += out["text"]
                else:
                    cell.stderr += out["text"]
            elif out["output_type"] == "error":
                cell.error = {k: out[k] for k in ("ename", "evalue", "traceback")}
        return cell


def strip_ansi(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


class Kernel:
    """One ipykernel process and a blocking client on it."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.log_path = workdir / "kernel.log"
        self._log = open(self.log_path, "ab")  # closed in shutdown()
        self.km = make_manager(KernelManager)
        self.kc: Any = None

    def start(self) -> Kernel:
        self.km.start_kernel(
            cwd=str(self.workdir),
            env=kernel_env(self.workdir),
            stdout=self._log,
            stderr=self._log,
        )
        self.kc = self.km.client()
        self.kc.start_channels()
        self.wait_ready()
        return self

    def wait_ready(self) -> None:
        try:
            self.kc.wait_for_ready(timeout=STARTUP_TIMEOUT)
        except RuntimeError as exc:
            raise AssertionError(f"the kernel did not start: {exc}\n{self.kernel_log()}") from exc
        # The kernel runs this interpreter, with emit() defined.
        cell = self.run(EMIT + "import sys\nemit(sys.executable)\n").ok()
        assert cell.value() == sys.executable, cell.describe()

    def send(self, code: str) -> str:
        """Sends a cell for execution and returns at once with its message id."""
        return self.kc.execute(code, store_history=True, allow_stdin=False, stop_on_error=False)

    def collect(self, msg_id: str, code: str = "", timeout: float = 60.0) -> Cell:
        """Gathers the outputs of the cell ``msg_id`` until the kernel is idle after it and
        its reply has arrived; fails the test after ``timeout`` seconds."""
        cell = Cell(code=code)
        start = time.monotonic()
        deadline = start + timeout
        idle = replied = False
        while not (idle and replied):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"the cell did not finish within {timeout} s\n{cell.describe()}\n"
                    f"{self.kernel_log()}"
                )
            if not replied:
                try:
                    reply = self.kc.get_shell_msg(timeout=min(remaining, 0.05))
                except queue.Empty:
                    pass
                else:
                    if reply["parent_header"].get("msg_id") == msg_id:
                        replied = True
            try:
                msg = self.kc.get_iopub_msg(timeout=min(remaining, 0.05 if not replied else 1.0))
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "status":
                if content["execution_state"] == "idle":
                    idle = True
                    cell.elapsed = time.monotonic() - start
            elif kind == "stream":
                cell.outputs.append({"output_type": "stream", **content})
                if content["name"] == "stdout":
                    cell.stdout += content["text"]
                else:
                    cell.stderr += content["text"]
            elif kind == "error":
                cell.outputs.append({"output_type": "error", **content})
                cell.error = {k: content[k] for k in ("ename", "evalue", "traceback")}
            elif kind in ("execute_result", "display_data", "update_display_data"):
                cell.outputs.append({"output_type": kind, **content})
        return cell

    def run(self, code: str, timeout: float = 60.0) -> Cell:
        return self.collect(self.send(code), code, timeout)

    def interrupt(self) -> None:
        self.km.interrupt_kernel()

    def restart(self, now: bool = False) -> float:
        """Restarts the kernel (gracefully unless ``now``); returns the seconds the restart
        took (the old process gone and the new one launched). Then waits for the new one."""
        start = time.monotonic()
        self.km.restart_kernel(now=now)
        took = time.monotonic() - start
        self.wait_ready()
        return took

    def shutdown(self) -> None:
        try:
            if self.kc is not None:
                self.kc.stop_channels()
        finally:
            try:
                if self.km.has_kernel:
                    self.km.shutdown_kernel(now=True)
            finally:
                self._log.close()

    def kernel_log(self) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            text = ""
        return f"--- kernel.log (last 4000 chars) ---\n{text[-4000:]}"


def run_notebook(workdir: Path, cells: list[str], timeout: float = 60.0) -> list[Cell]:
    """Executes ``cells`` in order as one notebook (nbformat + nbclient) in a new kernel,
    errors allowed (each cell's error is in its outputs), each cell bounded by ``timeout``
    seconds; returns one ``Cell`` per cell. The kernel is shut down in every case."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    preamble = EMIT + "import sys\nemit(sys.executable)\n"
    nb.cells = [nbformat.v4.new_code_cell(preamble), *(nbformat.v4.new_code_cell(c) for c in cells)]
    km = make_manager(AsyncKernelManager)
    log_path = workdir / "kernel.log"
    with open(log_path, "ab") as log:
        client = NotebookClient(
            nb,
            km=km,
            timeout=timeout,
            startup_timeout=STARTUP_TIMEOUT,
            allow_errors=True,
            kernel_name="python3",
            shutdown_kernel="immediate",
        )
        try:
            client.execute(cwd=str(workdir), env=kernel_env(workdir), stdout=log, stderr=log)
        except Exception as exc:
            text = log_path.read_text(errors="replace")[-4000:]
            raise AssertionError(
                f"the notebook did not run: {exc!r}\n--- kernel.log ---\n{text}"
            ) from exc
        finally:
            if client.km is not None:
                client._cleanup_kernel()  # shuts the kernel down (we passed our own km)
    first = Cell.from_outputs(nb.cells[0].source, nb.cells[0].outputs).ok()
    assert first.value() == sys.executable, first.describe()
    return [Cell.from_outputs(c.source, c.outputs) for c in nb.cells[1:]]


def wait_for_file(path: Path, timeout: float, what: str, kernel: Kernel | None = None) -> None:
    """Waits until ``path`` exists; fails the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            log = kernel.kernel_log() if kernel is not None else ""
            raise AssertionError(f"{what}: {path.name} did not appear within {timeout} s\n{log}")
        time.sleep(0.02)
