"""The ``cloacina`` command line: run a workflow, list and inspect runs, cancel and resume
them, look at a database. ``cloacina --help`` and ``--version`` load no engine; each
subcommand imports what it needs when it runs. ``import cloacina`` never imports this.

Output: tables for people; ``-o json`` (one document) or ``-o jsonl`` (one line per item)
for scripts, JSON only on stdout (what the workflow's own code prints goes to stderr
then). The database is ``--db URL``, else ``$CLOACINA_DATABASE_URL``, else
``database_url`` under ``[tool.cloacina]`` in the nearest ``pyproject.toml``, else an
error naming the three: no command invents a database. Passwords are masked wherever a
URL is shown.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Sequence

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from typing import IO, Any

    from cloacina import RunHandle, Runner, RunResult, Workflow

EXIT_OK, EXIT_FAILED_RUN, EXIT_ERROR = 0, 1, 2

# Where results go: stdout, even while stdout is sent to stderr (under -o json|jsonl).
_out: IO[str] = sys.stdout


def _version() -> str:
    """The installed package's version, without loading the engine: read from the
    ``cloacina-*.dist-info`` found on ``sys.path`` (importlib.metadata alone costs
    about 30 ms), else through importlib.metadata."""
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if name.startswith("cloacina-") and name.endswith(".dist-info"):
                try:
                    with open(os.path.join(entry, name, "METADATA"), encoding="utf-8") as f:
                        for line in f:
                            if line.startswith("Version:"):
                                return line.split(":", 1)[1].strip()
                            if not line.strip():
                                break  # the headers end at the first blank line
                except OSError:
                    pass
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cloacina")
    except PackageNotFoundError:  # pragma: no cover (a source tree without metadata)
        return "unknown"


class _Version(argparse.Action):
    """``--version``: reads the installed version only when asked (``--help`` stays
    free of package metadata)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        kwargs.setdefault("nargs", 0)
        super().__init__(option_strings, dest, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        print(f"cloacina {_version()}")
        parser.exit()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cloacina",
        description="Durable workflows of plain Python functions: run them, list and inspect "
        "their runs.",
    )
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    parser.add_argument(
        "--db",
        metavar="URL",
        help="the database (default: $CLOACINA_DATABASE_URL, else database_url under "
        "[tool.cloacina] in the nearest pyproject.toml)",
    )
    parser.add_argument(
        "--schema",
        metavar="NAME",
        help="the PostgreSQL schema (tenant) holding the runs (default: the URL's "
        "search_path, else public)",
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=("table", "json", "jsonl"),
        default="table",
        help="table for people (default), json or jsonl for scripts",
    )
    # --db and -o are also accepted after the subcommand (`cloacina runs list --db URL`).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", metavar="URL", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    common.add_argument(
        "--schema", metavar="NAME", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    common.add_argument(
        "-o",
        "--output",
        choices=("table", "json", "jsonl"),
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser(
        "run", parents=[common], help="run a workflow (exit code 1 if the run fails)"
    )
    run.add_argument("target", help="module:attr or path/to/file.py:attr naming a Workflow")
    run.add_argument("--ctx", default=None, help="the input: a JSON object, or @file.json")
    run.add_argument(
        "--no-wait",
        action="store_true",
        help="queue the run and return: a worker (cloacina worker TARGET) runs it",
    )

    worker = commands.add_parser(
        "worker",
        parents=[common],
        help="claim and drive queued runs of the workflows TARGETs define, until SIGINT/SIGTERM",
    )
    worker.add_argument(
        "targets",
        nargs="+",
        metavar="TARGET",
        help="module, module:attr or path/to/file.py[:attr], imported so that its tasks and "
        "workflows are defined",
    )
    worker.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="task attempts run at once (default: the Runner's default)",
    )

    runs = commands.add_parser("runs", parents=[common], help="list, show, cancel or resume runs")
    runs_commands = runs.add_subparsers(dest="runs_command", metavar="ACTION", required=True)
    listing = runs_commands.add_parser("list", parents=[common], help="runs, newest first")
    listing.add_argument("--status", default=None)
    listing.add_argument("--workflow", default=None)
    listing.add_argument("--limit", type=int, default=20)
    show = runs_commands.add_parser(
        "show", parents=[common], help="one run: its tasks, errors and tracebacks"
    )
    show.add_argument("run_id")
    cancel = runs_commands.add_parser(
        "cancel", parents=[common], help="cancel a run (here or elsewhere)"
    )
    cancel.add_argument("run_id")
    resume = runs_commands.add_parser(
        "resume",
        parents=[common],
        help="resume a failed or cancelled run: with TARGET (which defines its workflow's "
        "tasks), here until it ends; without, queued for a worker serving its workflow",
    )
    resume.add_argument("run_id")
    resume.add_argument(
        "target", nargs="?", default=None, help="module, module:attr or path/to/file.py[:attr]"
    )

    db = commands.add_parser("db", parents=[common], help="the database: info, migrate, purge")
    db_commands = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    db_commands.add_parser(
        "info", parents=[common], help="where it is, its schema version, its runs by status"
    )
    db_commands.add_parser(
        "migrate", parents=[common], help="create the database or bring its schema up to date"
    )
    purge = db_commands.add_parser(
        "purge", parents=[common], help="delete finished runs older than --older-than"
    )
    purge.add_argument(
        "--older-than",
        required=True,
        metavar="AGE",
        help="e.g. 7d, 12h, 30m or 90s (a number alone is seconds)",
    )

    graph = commands.add_parser(
        "graph", parents=[common], help="a workflow's tasks and dependencies"
    )
    graph.add_argument("target", help="module:attr or path/to/file.py:attr naming a Workflow")
    graph.add_argument(
        "--format",
        choices=("ascii", "svg", "dot", "mermaid"),
        default="ascii",
        help="the drawing (with -o json|jsonl: the tasks and their dependencies as JSON)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit code (0, 1 for a failed run, 2 for an
    error such as a bad argument or an unreadable database)."""
    global _out
    args = _parser().parse_args(argv)
    from cloacina.errors import CloacinaError

    _out = sys.stdout
    # Under -o json|jsonl, what the workflow's code prints (at import, in its tasks) must
    # not mix with the JSON: it goes to stderr.
    quiet = contextlib.redirect_stdout(sys.stderr) if args.output != "table" else None
    try:
        with quiet or contextlib.nullcontext():
            return _dispatch(args)
    except (CloacinaError, ImportError, ValueError, TypeError, OSError) as exc:
        print(f"cloacina: error: {_scrub(str(exc), args.db)}", file=sys.stderr)
        return EXIT_ERROR


def _scrub(message: str, url: str | None) -> str:
    """``message`` without the password of ``url``: the engine's messages name the URL
    masked already; this catches any other message that would quote it whole."""
    if not url:
        return message
    from urllib.parse import unquote, urlsplit

    from cloacina.backends import mask

    message = message.replace(url, mask(url))
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    for secret in {password, unquote(password or "")} - {None, ""}:
        message = message.replace(str(secret), "***")
    return message


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "graph":
        return _graph(args)
    args.db = database_url(args.db)
    if args.command == "worker":
        return _worker(args)
    # `run --no-wait` only queues the run: a runner that ran it here would be closed,
    # its attempts cut short, as soon as this command returns.
    submit_only = (args.command == "run" and args.no_wait) or (
        args.command == "runs" and args.runs_command == "resume" and args.target is None
    )
    with _runner(args, **({"max_concurrency": 0} if submit_only else {})) as runner:
        if args.command == "run":
            return _run(args, runner)
        if args.command == "db":
            return _db(args, runner)
        if args.runs_command == "list":
            return _list(args, runner)
        if args.runs_command == "show":
            return _show(args, runner)
        if args.runs_command == "cancel":
            found = runner.cancel(args.run_id)
            _emit(args, {"run_id": args.run_id, "cancelled": found})
            return EXIT_OK if found else EXIT_ERROR
        return _resume(args, runner)


def _runner(args: argparse.Namespace, **options: Any) -> Runner:
    from cloacina import Runner

    return Runner(args.db, schema=args.schema, **options)


def database_url(given: str | None, start: str | None = None) -> str:
    """The database: ``given`` (``--db``), else ``$CLOACINA_DATABASE_URL``, else
    ``database_url`` under ``[tool.cloacina]`` in the nearest ``pyproject.toml`` from
    ``start`` (the current directory) up, a relative SQLite path there taken from that
    file's directory; else a ``CloacinaError`` naming the three."""
    if given:
        return given
    if os.environ.get("CLOACINA_DATABASE_URL"):
        return os.environ["CLOACINA_DATABASE_URL"]
    from cloacina.errors import CloacinaError

    directory = os.path.abspath(start or os.getcwd())
    while True:
        candidate = os.path.join(directory, "pyproject.toml")
        if os.path.isfile(candidate):
            url = _pyproject_url(candidate)
            if url is not None:
                return url
            break  # the nearest pyproject.toml decides, as for other tools' settings
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    raise CloacinaError(
        "no database given: pass --db URL, set $CLOACINA_DATABASE_URL, or set database_url "
        "under [tool.cloacina] in pyproject.toml (for example 'sqlite:///cloacina.db')"
    )


def _pyproject_url(path: str) -> str | None:
    """``[tool.cloacina] database_url`` of the pyproject.toml at ``path``, if set."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef,import-not-found,unused-ignore]
        except ModuleNotFoundError:
            with open(path, encoding="utf-8") as f:
                if "[tool.cloacina]" in f.read():
                    raise ValueError(
                        f"{path}: reading [tool.cloacina] needs Python 3.11 or the tomli package"
                    ) from None
            return None
    with open(path, "rb") as f:
        try:
            settings = tomllib.load(f).get("tool", {}).get("cloacina", {})
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: {exc}") from None
    url = settings.get("database_url")
    if url is None:
        return None
    if not isinstance(url, str):
        raise ValueError(f"{path}: [tool.cloacina] database_url must be a string")
    prefix = "sqlite:///"
    rest = url[len(prefix) :]
    if url.startswith(prefix) and rest and not rest.startswith("/") and rest != ":memory:":
        url = prefix + os.path.join(os.path.dirname(path), rest)
    return url


def _worker(args: argparse.Namespace) -> int:
    import logging

    for target in args.targets:
        load_target(target)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    options: dict[str, Any] = {}
    if args.concurrency is not None:
        options["max_concurrency"] = args.concurrency
    runner = _runner(args, **options)
    runner.serve()
    return EXIT_OK


def load_target(target: str) -> Any:
    """Imports ``module``, ``module:attr``, ``path/to/file.py`` or ``path/to/file.py:attr``
    (so that its tasks and workflows are defined) and returns the attribute, or the
    module when none is named."""
    import importlib
    import importlib.util

    where, _, attr = target.partition(":")
    if where.endswith(".py") or os.sep in where:
        path = os.path.abspath(where)
        if not os.path.exists(path):
            raise ImportError(f"no such file: {where}")
        name = os.path.splitext(os.path.basename(path))[0]
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {where}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        sys.path.insert(0, os.path.dirname(path))
        spec.loader.exec_module(module)
    else:
        sys.path.insert(0, os.getcwd())
        module = importlib.import_module(where)
    if not attr:
        return module
    value: Any = module
    for part in attr.split("."):
        if not hasattr(value, part):
            raise ImportError(f"{where} has no attribute {attr!r}")
        value = getattr(value, part)
    return value


def _workflow(target: str) -> Workflow:
    from cloacina import Workflow

    value = load_target(target)
    if not isinstance(value, Workflow):
        raise TypeError(f"{target} is not a Workflow (it is a {type(value).__name__})")
    return value


def _input(ctx: str | None) -> dict[str, Any]:
    if ctx is None:
        return {}
    if ctx.startswith("@"):
        with open(ctx[1:], encoding="utf-8") as f:
            ctx = f.read()
    value = json.loads(ctx)
    if not isinstance(value, dict):
        raise ValueError("--ctx must be a JSON object")
    return value


def _run(args: argparse.Namespace, runner: Runner) -> int:
    wf = _workflow(args.target)
    handle = runner.start(wf, _input(args.ctx))
    if args.no_wait:
        return _queued(args, handle, f"a worker runs it: cloacina worker {args.target}")
    return _finished(args, runner, handle)


def _resume(args: argparse.Namespace, runner: Runner) -> int:
    if args.target is None:  # a runner that only submits: the run is queued for a worker
        handle = runner.resume(args.run_id)
        hint = "a worker serving its workflow resumes it: cloacina worker TARGET"
        return _queued(args, handle, hint)
    load_target(args.target)
    return _finished(args, runner, runner.resume(args.run_id))


def _queued(args: argparse.Namespace, handle: RunHandle, hint: str) -> int:
    """Reports a run left queued for a worker (``hint`` says which, on a terminal)."""
    _emit(args, {"run_id": handle.run_id, "status": handle.status()})
    if args.output == "table":
        print(hint, file=sys.stderr)
    return EXIT_OK


def _finished(args: argparse.Namespace, runner: Runner, handle: RunHandle) -> int:
    """Waits for the run driven here (Ctrl-C cancels it), reports it, and returns the
    exit code: 1 when it did not complete."""
    try:
        result = handle.wait()
    except KeyboardInterrupt:
        runner.cancel(handle.run_id)
        raise
    _emit_run(args, result)
    return EXIT_OK if result.status == "completed" else EXIT_FAILED_RUN


def _time(value: Any) -> str | None:
    return None if value is None else value.isoformat()


def _list(args: argparse.Namespace, runner: Runner) -> int:
    runs = runner.list_runs(workflow=args.workflow, status=args.status, limit=args.limit)
    rows: list[dict[str, Any]] = [
        {
            "run_id": r.run_id,
            "workflow": r.workflow,
            "status": r.status,
            "created_at": _time(r.created_at),
            "duration_s": None if r.duration is None else r.duration.total_seconds(),
            "tasks": r.task_counts,
            "error": r.error,
        }
        for r in runs
    ]
    if args.output != "table":
        _emit(args, rows)
        return EXIT_OK
    table = [
        [
            r.run_id,
            r.workflow,
            r.status,
            "" if r.created_at is None else r.created_at.isoformat()[:19],
            "" if r.duration is None else f"{r.duration.total_seconds():.3f}s",
            ", ".join(f"{n} {status}" for status, n in r.task_counts.items()),
        ]
        for r in runs
    ]
    _print_table(["RUN", "WORKFLOW", "STATUS", "CREATED", "DURATION", "TASKS"], table)
    return EXIT_OK


def _show(args: argparse.Namespace, runner: Runner) -> int:
    result = runner.get_run(args.run_id)
    if result is None:
        raise ValueError(f"no run with id '{args.run_id}'")
    _emit_run(args, result, details=True)
    return EXIT_OK


def _run_document(result: RunResult) -> dict[str, Any]:
    return {
        "run_id": result.run_id,
        "workflow": result.workflow,
        "version": result.version,
        "status": result.status,
        "error": result.error,
        "started_at": _time(result.started_at),
        "finished_at": _time(result.finished_at),
        "context": result.context,
        "tasks": {
            tid: {
                "status": t.status,
                "attempts": t.attempts,
                "error": t.error,
                "reason": t.reason,
                "traceback": t.traceback,
            }
            for tid, t in result.tasks.items()
        },
        "events": [{"kind": e["kind"], "detail": e["detail"]} for e in result.events],
    }


def _emit_run(args: argparse.Namespace, result: RunResult, details: bool = False) -> None:
    if args.output != "table":
        _emit(args, _run_document(result))
        return
    print(f"run {result.run_id} of workflow '{result.workflow}': {result.status}")
    if result.error:
        print(f"error: {result.error}")
    if details:
        from cloacina import _graph

        tasks = result.tasks
        deps = {tid: t.dependencies for tid, t in tasks.items()}
        marks = {tid: t.status for tid, t in tasks.items()}
        print(_graph.to_ascii(result.workflow, result.version, list(tasks), deps, marks))
    table = [
        [tid, t.status, str(t.attempts), (t.error or t.reason or "").splitlines()[0][:80]]
        if (t.error or t.reason)
        else [tid, t.status, str(t.attempts), ""]
        for tid, t in result.tasks.items()
    ]
    _print_table(["TASK", "STATUS", "ATTEMPTS", "ERROR OR REASON"], table)
    if details:
        for tid, t in result.tasks.items():
            if t.traceback:
                print(f"\n--- traceback of task '{tid}' ---\n{t.traceback.rstrip()}")


def _db(args: argparse.Namespace, runner: Runner) -> int:
    info: dict[str, Any] = {"url": runner.url}
    if args.db_command in ("info", "migrate"):
        info["schema_version"] = runner._engine_or_raise().schema_version()
    if args.db_command == "purge":
        info["purged"] = runner.purge(_age(args.older_than))
    elif args.db_command == "info":
        counts: dict[str, int] = {}
        for r in runner.list_runs(limit=1_000_000):
            counts[r.status] = counts.get(r.status, 0) + 1
        info["runs"] = counts
    else:
        info["migrated"] = True
    _emit(args, info)
    return EXIT_OK


_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _age(text: str) -> float:
    """Seconds in an age such as ``7d``, ``12h``, ``30m``, ``90s`` or ``90``."""
    number, unit = (text[:-1], text[-1]) if text[-1:] in _AGE_UNITS else (text, "s")
    try:
        return float(number) * _AGE_UNITS[unit]
    except ValueError:
        raise ValueError(f"--older-than: not an age: {text!r} (e.g. 7d, 12h, 30m, 90s)") from None


def _graph(args: argparse.Namespace) -> int:
    wf = _workflow(args.target)
    if args.output != "table":
        tasks = [{"id": t.id, "dependencies": list(t.dependencies)} for t in wf.tasks]
        if args.output == "jsonl":
            _emit(args, tasks)
        else:
            _emit(args, {"workflow": wf.name, "version": wf.version, "tasks": tasks})
        return EXIT_OK
    drawings = {"dot": wf.to_dot, "mermaid": wf.to_mermaid, "svg": wf.to_svg, "ascii": wf.to_ascii}
    print(drawings[args.format]())
    return EXIT_OK


def _emit(args: argparse.Namespace, value: Any) -> None:
    """JSON (or JSON lines) on stdout for ``-o json|jsonl``; otherwise a readable form."""
    if args.output == "jsonl" and isinstance(value, list):
        for item in value:
            print(json.dumps(item, default=str), file=_out)
    elif args.output in ("json", "jsonl"):
        indent = None if args.output == "jsonl" else 2
        print(json.dumps(value, default=str, indent=indent), file=_out)
    elif isinstance(value, dict):
        for key, item in value.items():
            print(f"{key}: {item}")
    else:
        print(value)


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=False)]
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
