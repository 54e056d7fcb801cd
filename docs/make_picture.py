"""Makes docs/run-display.png, the picture of a run's notebook display in the README.

Run it from the repository root, with the project's virtualenv (cloacina installed in it,
plus nbformat, nbclient, ipykernel and jupyter_client):

    .venv/bin/python docs/make_picture.py

It builds a small notebook in memory, executes it in a real Jupyter kernel (ipykernel,
run by this same interpreter), takes the ``text/html`` the kernel sent for each
``RunResult`` (the real output, untouched), puts it in a plain page and screenshots the
page with headless Chromium. Without Chromium it installs it on Debian/Ubuntu as root
(``apt-get install chromium``), or says how to. No Pillow: the page is measured by
Chromium itself, so the picture is cropped to its content.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from html import escape
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

DOCS = Path(__file__).resolve().parent
OUT = DOCS / "run-display.png"
WIDTH = 900
"""The picture's width, in pixels."""

SETUP = """\
import time
from cloacina import Runner, Workflow, task

runner = Runner("sqlite:///" + DB)
"""

PIPELINE = """\
calls = {"clean": 0}

@task
def extract(ctx):
    time.sleep(0.15)
    return {"rows": [3, 1, 2]}

@task(dependencies=[extract], retries=1, retry_delay=0.1)
def clean(ctx):
    calls["clean"] += 1
    time.sleep(0.1)
    if calls["clean"] == 1:
        raise ConnectionError("warehouse not ready")  # the first attempt fails
    return {"clean": sorted(ctx["rows"])}

@task(dependencies=[extract])
def enrich(ctx):
    time.sleep(0.3)
    return {"total": sum(ctx["rows"])}

@task(dependencies=[clean, enrich])
def load(ctx):
    time.sleep(0.1)
    return {"loaded": len(ctx["clean"])}

wf = Workflow("daily_report", [extract, clean, enrich, load])
runner.run(wf, progress=False)
"""

BUG = """\
@task(dependencies=[extract])  # redefined in a later cell, with a bug
def enrich(ctx):
    time.sleep(0.1)
    return {"average": sum(ctx["rows"]) / ctx["count"]}

runner.run(wf, progress=False)  # the same workflow, with enrich redefined above
"""

CELLS = [SETUP, PIPELINE, BUG]
SHOWN = [1, 2]
"""The cells whose ``RunResult`` goes into the picture (indexes into ``CELLS``)."""

PAGE = """\
<!doctype html>
<html><head><meta charset="utf-8"><style>
  html, body {{ margin: 0; background: #fff; color: #1f1f1f; }}
  body {{ width: {width}px; padding: 14px 18px; box-sizing: border-box;
         font: 13px/1.4 "DejaVu Sans", "Liberation Sans", Arial, sans-serif; }}
  .prompt {{ font: 12px/1.4 "DejaVu Sans Mono", monospace; background: #f5f5f5;
            border: 1px solid #e0e0e0; border-radius: 3px; padding: 6px 8px;
            margin-bottom: 8px; white-space: pre; }}
  .prompt i {{ color: #888; font-style: normal; }}
  .output + .prompt {{ margin-top: 22px; }}
  /* roughly JupyterLab's table style (.jp-RenderedHTMLCommon) */
  table {{ border-collapse: collapse; border: none; font-size: 12px; margin: 8px 0 10px; }}
  th, td {{ text-align: right; padding: 4px 10px; vertical-align: top; }}
  th {{ font-weight: bold; border-bottom: 1px solid #1f1f1f; }}
  tr:nth-child(even) td {{ background: #f5f5f5; }}
  details summary {{ cursor: pointer; }}
</style></head><body>
{content}
<script>document.body.setAttribute("data-height", document.body.scrollHeight)</script>
</body></html>
"""


def kernel_manager() -> AsyncKernelManager:
    """A python3 kernel run by this very interpreter (as python/tests/kernel_helpers.py
    starts its kernels), without an IPython history database."""
    km = AsyncKernelManager(kernel_name="python3")
    km._kernel_spec = KernelSpec(  # no setter; the spec is read when the kernel starts
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
    return km


def run_notebook(workdir: Path) -> nbformat.NotebookNode:
    """Executes ``CELLS`` in a new kernel in ``workdir``; returns the executed notebook."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    db = str(workdir / "notebook.db")
    first = f"import sys\nprint(sys.executable)\nDB = {db!r}"
    nb.cells = [nbformat.v4.new_code_cell(first), *map(nbformat.v4.new_code_cell, CELLS)]
    env = dict(os.environ, IPYTHONDIR=str(workdir / "ipython"), PYDEVD_DISABLE_FILE_VALIDATION="1")
    env.pop("CLOACINA_DATABASE_URL", None)
    client = NotebookClient(
        nb, km=kernel_manager(), timeout=120, startup_timeout=60, kernel_name="python3"
    )
    with open(workdir / "kernel.log", "wb") as log:
        try:
            client.execute(cwd=str(workdir), env=env, stdout=log, stderr=log)
        finally:
            if client.km is not None:
                client._cleanup_kernel()  # we passed our own manager: shut its kernel down
    printed = "".join(o.get("text", "") for o in nb.cells[0].outputs).strip()
    if printed != sys.executable:
        raise SystemExit(f"the kernel ran {printed!r}, not this interpreter ({sys.executable})")
    return nb


def run_html(cell: nbformat.NotebookNode) -> str:
    """The ``text/html`` of the cell's result: the ``RunResult``'s display."""
    for out in cell.outputs:
        if out.output_type == "execute_result" and "text/html" in out.data:
            if "RunResult(" not in out.data.get("text/plain", ""):
                break
            return out.data["text/html"]
    raise SystemExit(f"no RunResult display in the cell's outputs: {cell.outputs!r}")


def page(nb: nbformat.NotebookNode) -> str:
    """The shown cells as a plain page: each cell's last line, then its output."""
    parts = []
    for index in SHOWN:
        cell = nb.cells[index + 1]  # cell 0 sets DB
        n = cell.execution_count
        last = cell.source.strip().splitlines()[-1]
        parts.append(f'<div class="prompt"><i>[{n}]:</i> {escape(last)}</div>')
        parts.append(f'<div class="output">{run_html(cell)}</div>')
    return PAGE.format(width=WIDTH, content="\n".join(parts))


def chromium() -> str:
    """The Chromium binary, installed with apt-get if missing (as root on Debian)."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    if shutil.which("apt-get") and os.geteuid() == 0:
        print("installing chromium (apt-get)...", file=sys.stderr)
        subprocess.run(["apt-get", "update"], check=True)
        subprocess.run(
            ["apt-get", "install", "-y", "chromium"],
            check=True,
            env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
        )
        found = shutil.which("chromium")
        if found:
            return found
    raise SystemExit(
        "headless Chromium is needed: install it (Debian/Ubuntu: "
        "`sudo apt-get install chromium`; macOS: `brew install --cask chromium`) and run again"
    )


def browse(binary: str, workdir: Path, *args: str) -> str:
    """Runs headless Chromium with ``args``; returns its stdout."""
    command = [
        binary,
        "--headless",
        "--disable-gpu",
        "--no-sandbox",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        "--default-background-color=ffffffff",
        f"--user-data-dir={workdir / 'chromium'}",
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise SystemExit(f"chromium failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return done.stdout


def screenshot(html: str, workdir: Path) -> None:
    """Writes ``OUT``: the page, ``WIDTH`` wide and as tall as its content."""
    binary = chromium()
    path = workdir / "page.html"
    path.write_text(html, encoding="utf-8")
    url = path.as_uri()
    dom = browse(binary, workdir, f"--window-size={WIDTH},2000", "--dump-dom", url)
    match = re.search(r'data-height="(\d+)"', dom)
    height = int(match.group(1)) if match else 1000
    shot = workdir / "shot.png"
    browse(binary, workdir, f"--window-size={WIDTH},{height}", f"--screenshot={shot}", url)
    shutil.copyfile(shot, OUT)


def main() -> None:
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="cloacina-picture-") as tmp:
        workdir = Path(tmp)
        nb = run_notebook(workdir)
        screenshot(page(nb), workdir)
    size = OUT.stat().st_size
    print(f"wrote {OUT} ({size / 1024:.0f} KB) in {time.monotonic() - t0:.1f} s")


if __name__ == "__main__":
    main()
