"""A real PostgreSQL 15 for the tests: initdb + pg_ctl in a temporary directory, on an ephemeral
127.0.0.1 port, as the unprivileged `postgres` user when we run as root (initdb refuses root).
Debian's system cluster (/var/lib/postgresql/15/main) is never started nor used.

    pg = PostgresServer().start()     # or the `postgres_server` fixture (one per session)
    url = pg.new_database()           # "postgresql://postgres@127.0.0.1:PORT/dbN", a fresh database
    pg.restart()                      # stop (fast) and start again on the same port
    pg.stop()                         # by the postmaster's PID
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time

from dovecot import free_ports

PG_BIN_DIRS = ("/usr/lib/postgresql/15/bin",)


class PostgresUnavailable(Exception):
    pass


def find_pg_bin() -> str:
    for d in PG_BIN_DIRS:
        if os.path.exists(os.path.join(d, "initdb")) and os.path.exists(os.path.join(d, "pg_ctl")):
            return d
    raise PostgresUnavailable("PostgreSQL 15 is not installed (apt-get install postgresql; "
                              "/usr/lib/postgresql/15/bin/initdb missing)")


class PostgresServer:
    def __init__(self) -> None:
        self.bin = find_pg_bin()
        self.root = tempfile.mkdtemp(prefix="fd-pg-")
        self.data = os.path.join(self.root, "data")
        self.port = free_ports(1)[0]
        self.pid: int | None = None
        self._dbs = 0
        self._run_as = None
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable("running as root and there is no `postgres` user to run "
                                          "PostgreSQL as (initdb refuses root)") from None
            self._run_as = pw
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        os.chmod(self.root, 0o755)

    def _cmd(self, *args: str) -> list[str]:
        if self._run_as is not None:
            return ["runuser", "-u", "postgres", "--", *args]
        return list(args)

    def _run(self, *args: str, timeout: float = 120) -> None:
        r = subprocess.run(self._cmd(*args), capture_output=True, text=True, timeout=timeout, cwd=self.root)
        if r.returncode != 0:
            raise PostgresUnavailable(f"{' '.join(args[:2])} failed ({r.returncode}): {r.stderr or r.stdout}")

    @property
    def log_file(self) -> str:
        return os.path.join(self.root, "postgres.log")

    def start(self) -> "PostgresServer":
        if not os.path.exists(os.path.join(self.data, "PG_VERSION")):
            # fsync stays on: the tests count on a committed delivery surviving a restart.
            self._run(os.path.join(self.bin, "initdb"), "-D", self.data, "-A", "trust", "-U", "postgres",
                      "-E", "UTF8", "--no-locale")
        self._start()
        return self

    def _start(self) -> None:
        opts = f"-p {self.port} -h 127.0.0.1 -k {self.root} -c max_connections=100"
        self._run(os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-w", "-t", "60", "-l", self.log_file,
                  "-o", opts, "start")
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            self.pid = int(f.readline().strip())

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def new_database(self) -> str:
        """A fresh empty database; its URL. (CREATE DATABASE runs outside a transaction block.)"""
        import psycopg

        self._dbs += 1
        name = f"db{self._dbs}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self, mode: signal.Signals = signal.SIGINT) -> None:
        """SIGINT: PostgreSQL's fast shutdown (clients are disconnected). Waits until it is gone."""
        pid, self.pid = self.pid, None
        if pid is None:
            return
        try:
            os.kill(pid, mode)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self._start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


# Fixtures: a test module imports them (`from postgres_support import postgres_server, pg_url`).
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def postgres_server():
    """One PostgreSQL for the session (skipped with the reason when PostgreSQL 15 is not installed)."""
    try:
        pg = PostgresServer()
        pg.start()
    except PostgresUnavailable as e:
        pytest.skip(str(e))
    try:
        yield pg
    finally:
        pg.cleanup()


@pytest.fixture
def pg_url(postgres_server):
    """A fresh database on the session's PostgreSQL."""
    return postgres_server.new_database()
