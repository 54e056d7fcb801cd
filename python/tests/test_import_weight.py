"""``import cloacina`` stays light: no notebook or progress-bar library, no command line,
and a run outside a notebook (``progress=None`` or ``True``, stderr a pipe) loads no IPython.
Each check runs in a fresh interpreter (a subprocess), where nothing else imported them."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

HEAVY = ("IPython", "ipykernel", "ipywidgets", "tqdm", "rich", "cloacina.cli")

PROBE = textwrap.dedent(
    """
    import json, sys

    HEAVY = {heavy!r}

    def loaded():
        return sorted(
            name for name in sys.modules
            if any(name == h or name.startswith(h + ".") for h in HEAVY)
        )

    import cloacina
    after_import = loaded()
    {body}
    print(json.dumps({{"after_import": after_import, "after_run": loaded(), "extra": extra}}))
    """
)

RUN = """
from cloacina import Runner, Workflow, task

@task(id="light_task")
def light_task(ctx):
    return {"ran": True}

with Runner(sys.argv[1]) as runner:
    result = runner.run(Workflow("light_wf", [light_task]), progress=PROGRESS)
extra = {"status": result.status, "context": result.context,
         "stderr_is_tty": sys.stderr.isatty()}
"""


def probe(body: str, *args: str) -> dict:
    code = PROBE.format(heavy=HEAVY, body=body.strip())
    out = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,  # stderr is a pipe, not a terminal: no progress line
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_probe_sees_a_heavy_module_when_one_is_loaded():
    # The check itself works: a listed module, once imported, is seen.
    seen = probe("import cloacina.cli\nextra = None")
    assert seen["after_import"] == [] and seen["after_run"] == ["cloacina.cli"], seen


def test_import_cloacina_loads_no_notebook_progress_or_cli_module():
    seen = probe("extra = None")
    assert seen["after_import"] == [], seen


@pytest.mark.parametrize("progress", ["None", "True"])
def test_a_run_outside_a_notebook_loads_no_ipython(db_url, progress):
    # None: automatic (off here: no notebook, stderr a pipe); True: the terminal line.
    seen = probe(RUN.replace("PROGRESS", progress), db_url)
    assert seen["extra"] == {
        "status": "completed",
        "context": {"ran": True},
        "stderr_is_tty": False,
    }
    assert seen["after_import"] == [], seen
    assert seen["after_run"] == [], seen
