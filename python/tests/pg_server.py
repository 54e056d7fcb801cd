"""A throwaway PostgreSQL server for the test suite (and benchmarks): a new data
directory, a free port on 127.0.0.1, no fsync, trust authentication; stopped and removed
afterwards. The standard library only: the noxfile imports it before anything is installed.

    with pg_server.running() as server:      # PgServer: .url, .port, .startup_seconds
        os.environ["CLOACINA_TEST_PG_URL"] = server.url

`settings=` replaces the test settings (`SETTINGS`: no fsync), e.g. `DURABLE_SETTINGS` for
a benchmark, and `base_dir=` chooses where the data directory goes (default: the temp
directory), e.g. the disk a benchmark measures.

From a shell (the repository root):

    python python/tests/pg_server.py                 # prints the URL, runs until Ctrl-C
    python python/tests/pg_server.py -- pytest -q    # runs a command with
                                                     # CLOACINA_TEST_PG_URL set, then stops

A test that needs a server of its own (to restart it, or to change its authentication)
starts one with `running()` and uses `restart()` and `add_password_user()`.

It finds `initdb` and `pg_ctl` on PATH or in /usr/lib/postgresql/*/bin (the newest), and
installs Debian's `postgresql` package with apt-get when they are missing and we are root
(CI). PostgreSQL refuses to run as root: as root, the server runs as the `postgres` system
user (created when absent) through `runuser`.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

SERVER_USER = "postgres"  # the database superuser too (initdb -U)
SETTINGS = ("fsync=off", "full_page_writes=off", "max_connections=200")
# PostgreSQL's own durable defaults, spelled out: every commit is flushed to the disk.
DURABLE_SETTINGS = (
    "fsync=on",
    "synchronous_commit=on",
    "full_page_writes=on",
    "max_connections=200",
)


class PgUnavailable(RuntimeError):
    """PostgreSQL could not be installed, found or started; the message says why."""


def _log(message: str) -> None:
    print(f"pg_server: {message}", file=sys.stderr, flush=True)


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", path.parent.name)) or (0,)


def find_bindir() -> Path | None:
    """The directory holding initdb and pg_ctl: PATH first, then the newest of
    /usr/lib/postgresql/*/bin (Debian keeps them off PATH)."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(os.path.realpath(on_path)).parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key)
    for bindir in reversed(candidates):
        if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists():
            return bindir
    return None


def install_postgres() -> None:
    """apt-get install -y postgresql (Debian/Ubuntu, as root); apt-get update first only
    when the package is not known yet."""
    if os.geteuid() != 0:
        raise PgUnavailable("initdb/pg_ctl not found and not root: cannot apt-get install them")
    if shutil.which("apt-get") is None:
        raise PgUnavailable("initdb/pg_ctl not found and there is no apt-get to install them")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "postgresql"]
    _log("initdb/pg_ctl not found: " + " ".join(cmd))
    if subprocess.run(cmd, env=env, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, check=False)
        if subprocess.run(cmd, env=env, check=False).returncode != 0:
            raise PgUnavailable("apt-get install postgresql failed")


def _ensure_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    _log(f"creating the system user {name!r} to run PostgreSQL (it refuses to run as root)")
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        check=True,
    )
    return pwd.getpwnam(name)


def _others_can_enter(path: Path) -> bool:
    """Whether every directory from / to `path` is searchable by any user."""
    path = path.resolve()
    return all(p.stat().st_mode & 0o001 for p in (path, *path.parents))


def _free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgServer:
    """One server: start() it, then use .url; stop() always (it removes the directory)."""

    bindir: Path | None = None
    settings: tuple[str, ...] = SETTINGS
    base_dir: Path | None = None
    port: int = 0
    url: str = ""
    startup_seconds: float = 0.0
    workdir: Path | None = None
    _prefix: list[str] = field(default_factory=list)

    @property
    def datadir(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "data"

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*self._prefix, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=str(self.workdir),  # readable by the server's user, unlike root's cwd maybe
        )

    def start(self) -> str:
        began = time.monotonic()
        bindir = self.bindir or find_bindir()
        if bindir is None:
            install_postgres()
            bindir = find_bindir()
            if bindir is None:
                raise PgUnavailable("postgresql installed, but initdb/pg_ctl are still not found")
        self.bindir = bindir
        as_root = os.geteuid() == 0
        if self.base_dir is not None:
            base = str(self.base_dir)
            if as_root and not _others_can_enter(Path(base)):
                raise PgUnavailable(
                    f"{base}: the {SERVER_USER!r} user cannot reach this directory "
                    "(every directory on its path must be searchable by others)"
                )
        else:
            base = tempfile.gettempdir()
            if as_root and not _others_can_enter(Path(base)):
                base = "/tmp"  # the server's user must reach its directory
        self.workdir = Path(tempfile.mkdtemp(prefix="cloacina-pg-", dir=base))
        if as_root:
            user = _ensure_user(SERVER_USER)
            os.chown(self.workdir, user.pw_uid, user.pw_gid)
            runuser = shutil.which("runuser") or "/usr/sbin/runuser"
            self._prefix = [runuser, "-u", SERVER_USER, "--"]
        try:
            self._initdb()
            self._start_on_a_free_port()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        self.url = f"postgresql://{SERVER_USER}@127.0.0.1:{self.port}/postgres"
        return self.url

    def _initdb(self) -> None:
        # C collation with UTF-8 text: text sorts bytewise, as in SQLite.
        proc = self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.datadir),
            "--no-sync",
            "-A",
            "trust",
            "-U",
            SERVER_USER,
            "-E",
            "UTF8",
            "--no-locale",
        )
        if proc.returncode != 0:
            raise PgUnavailable(f"initdb failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")

    @property
    def log_path(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "server.log"

    def _pg_ctl(self, action: str, *args: str) -> subprocess.CompletedProcess:
        """pg_ctl ACTION on this server's directory, waiting (60 s at most) for it."""
        assert self.bindir is not None
        options = ["-p", str(self.port), "-h", "127.0.0.1", "-k", str(self.workdir)]
        for setting in self.settings:
            options += ["-c", setting]
        return self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.datadir),
            "-l",
            str(self.log_path),
            "-w",
            "-t",
            "60",
            "-o",
            " ".join(options),
            *args,
            action,
        )

    def _start_on_a_free_port(self) -> None:
        log = self.log_path
        for _ in range(5):  # a port found free may be taken before the server binds it
            self.port = _free_port()
            proc = self._pg_ctl("start")
            if proc.returncode == 0:
                return
            text = log.read_text(errors="replace") if log.exists() else ""
            if "already in use" not in text:
                raise PgUnavailable(
                    f"pg_ctl start failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}\n"
                    f"server log:\n{text}"
                )
            log.unlink()
        raise PgUnavailable("pg_ctl start failed: no free port after 5 tries")

    def restart(self, mode: str = "fast", down_for: float = 0.0) -> float:
        """pg_ctl restart -m MODE (same directory, port and settings): every session is
        ended (``fast``: cleanly; ``immediate``: as in a crash, recovering at startup),
        then the server starts again; with ``down_for`` seconds, it stays stopped that
        long in between (connections are refused meanwhile). Returns the seconds it
        took in all."""
        began = time.monotonic()
        steps = [("restart", "-m", mode)]
        if down_for > 0:
            steps = [("stop", "-m", mode), ("start",)]
        for action, *args in steps:
            proc = self._pg_ctl(action, *args)
            if proc.returncode != 0:
                text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
                raise PgUnavailable(
                    f"pg_ctl {action} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}\n"
                    f"server log:\n{text[-4000:]}"
                )
            if action == "stop":
                time.sleep(down_for)
        return time.monotonic() - began

    def add_password_user(self, name: str, password: str) -> str:
        """Creates the login role `name` with `password`, which the server then requires
        over TCP (scram-sha-256, a pg_hba.conf line placed before the trust lines; every
        other role stays trusted). Returns its URL (the password in it)."""
        assert re.fullmatch(r"[a-z_][a-z0-9_]*", name), name
        assert self.bindir is not None
        literal = "'" + password.replace("'", "''") + "'"
        proc = self._run(
            str(self.bindir / "psql"),
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            SERVER_USER,
            "-d",
            "postgres",
            "-c",
            "SET password_encryption = 'scram-sha-256'",
            "-c",
            f"CREATE ROLE {name} LOGIN PASSWORD {literal}",
            "-c",
            f"GRANT CREATE ON DATABASE postgres TO {name}",
        )
        if proc.returncode != 0:
            raise PgUnavailable(f"creating the role {name} failed:\n{proc.stdout}{proc.stderr}")
        hba = self.datadir / "pg_hba.conf"
        rule = f"host all {name} 127.0.0.1/32 scram-sha-256\n"
        hba.write_text(rule + hba.read_text())  # the first matching line wins
        proc = self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "reload")
        if proc.returncode != 0:
            raise PgUnavailable(f"pg_ctl reload failed:\n{proc.stdout}{proc.stderr}")
        # The postmaster rereads pg_hba.conf on SIGHUP, asynchronously: wait until
        # connecting as `name` without a password is refused.
        deadline = time.monotonic() + 10
        while True:
            probe = self._run(
                str(self.bindir / "psql"), "-X", "-w", "-h", "127.0.0.1", "-p", str(self.port),
                "-U", name, "-d", "postgres", "-c", "SELECT 1", timeout=10,
            )  # fmt: skip
            if probe.returncode != 0 and "password" in probe.stderr:
                break
            if time.monotonic() > deadline:
                raise PgUnavailable(f"pg_hba.conf not reloaded: {probe.stdout}{probe.stderr}")
            time.sleep(0.05)
        userinfo = quote(name, safe="") + ":" + quote(password, safe="")
        return f"postgresql://{userinfo}@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        """pg_ctl stop -m immediate, then removes the directory. Safe to call twice."""
        if self.workdir is None:
            return
        pid_file = self.datadir / "postmaster.pid"
        if pid_file.exists() and self.bindir is not None:
            pg_ctl = str(self.bindir / "pg_ctl")
            stop = [pg_ctl, "-D", str(self.datadir), "-m", "immediate", "-w", "stop"]
            proc = self._run(*stop, timeout=60)
            if proc.returncode != 0 and pid_file.exists():
                # The postmaster we started: its pid is the file's first line.
                with contextlib.suppress(ValueError, OSError):
                    os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir = None


@contextlib.contextmanager
def running(**kwargs) -> Iterator[PgServer]:
    """A started PgServer, stopped and removed on exit (raises PgUnavailable)."""
    server = PgServer(**kwargs)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    command = argv[argv.index("--") + 1 :] if "--" in argv else []
    with running() as server:
        version = subprocess.run(
            [str(server.bindir / "postgres"), "--version"], capture_output=True, text=True
        ).stdout.strip()
        _log(f"{version} started in {server.startup_seconds:.2f} s")
        if command:
            env = {**os.environ, "CLOACINA_TEST_PG_URL": server.url}
            try:
                return subprocess.run(command, env=env, check=False).returncode
            except KeyboardInterrupt:
                return 130
        print(server.url, flush=True)
        _log(f"export CLOACINA_TEST_PG_URL={server.url}   (Ctrl-C stops the server)")
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, _interrupt)  # also when started in the background
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
