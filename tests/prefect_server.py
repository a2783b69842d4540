"""pytest plugin: a throwaway PostgreSQL, a real `prefect server start` on it, and the repo's deployments, one of
each for the whole session (register with `pytest_plugins = ["prefect_server"]` in conftest.py).

PostgreSQL comes from the Debian package (`apt-get install -y postgresql`; scripts/test.sh installs it when run as
root). Its data dir is a temp dir; as root the server runs as the package's `postgres` user (PostgreSQL refuses
root). The commands are those README's "A production server" shows. Missing binaries fail the test, naming the
package, rather than quietly testing on SQLite.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PREFECT = str(BIN / "prefect")
PG_USER, PG_PASSWORD, PG_DB = "prefect", "mckd-test-pw", "prefect"


# ---- PostgreSQL -----------------------------------------------------------------------------------------


@dataclass
class Postgres:
    port: int
    data: Path
    bin: Path
    commands: list[str] = field(default_factory=list)  # what was run, as shell lines

    @property
    def url(self) -> str:
        """The SQLAlchemy URL Prefect's server takes (PREFECT_API_DATABASE_CONNECTION_URL)."""
        return f"postgresql+asyncpg://{PG_USER}:{PG_PASSWORD}@127.0.0.1:{self.port}/{PG_DB}"

    def query(self, sql: str) -> str:
        """One psql query's unaligned output (as the client user, over TCP)."""
        proc = subprocess.run(
            [
                str(self.bin / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                PG_USER,
                "-d",
                PG_DB,
                "-At",
                "-c",
                sql,
            ],
            env={**os.environ, "PGPASSWORD": PG_PASSWORD},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()


def _pg_bin() -> Path:
    """The folder of initdb / pg_ctl: $MCKD_PG_BIN, else the newest /usr/lib/postgresql/<v>/bin, else PATH."""
    candidates = (
        [Path(os.environ["MCKD_PG_BIN"])]
        if os.environ.get("MCKD_PG_BIN")
        else sorted(
            Path("/usr/lib/postgresql").glob("*/bin"),
            key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
            reverse=True,
        )
    )
    if shutil.which("initdb"):
        candidates.append(Path(shutil.which("initdb")).parent)
    for folder in candidates:
        if all((folder / tool).is_file() for tool in ("initdb", "pg_ctl", "createdb", "psql")):
            return folder
    pytest.fail(
        "PostgreSQL server binaries (initdb, pg_ctl, createdb) not found: install them with "
        "`apt-get install -y postgresql` (Debian/Ubuntu; scripts/test.sh does it when run as root), "
        "or set MCKD_PG_BIN to the folder that holds them",
        pytrace=False,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server on 127.0.0.1:<free port> with database `prefect` owned by user `prefect`, data dir in a
    temp dir; stopped and deleted at session end."""
    pg_bin = _pg_bin()
    as_root = os.geteuid() == 0
    if as_root and shutil.which("runuser") is None:
        pytest.fail(
            "running as root needs `runuser` (util-linux) to start PostgreSQL as the `postgres` user", pytrace=False
        )
    # Not under pytest's basetemp: that is private to root, and the server runs as `postgres`.
    root = Path(tempfile.mkdtemp(prefix="mckd-pg-"))
    data, pwfile, log = root / "data", root / "pwfile", root / "postgres.log"
    pwfile.write_text(PG_PASSWORD + "\n")
    if as_root:
        for path in (root, pwfile):
            shutil.chown(path, "postgres", "postgres")
    port = _free_port()
    pg = Postgres(port, data, pg_bin)
    env = {**os.environ, "PGPASSWORD": PG_PASSWORD}

    def run(*argv: str, timeout: float = 120) -> None:
        argv = [str(pg_bin / argv[0]), *argv[1:]]
        cmd = (["runuser", "-u", "postgres", "--"] if as_root else []) + argv
        pg.commands.append(" ".join(cmd))
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, (
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        )

    started = False
    try:
        run("initdb", "-D", str(data), "-U", PG_USER, f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8")
        run("pg_ctl", "-D", str(data), "-l", str(log), "-o", f"-h 127.0.0.1 -p {port} -k {root}", "-w", "start")
        started = True
        run("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", PG_USER, PG_DB)
        yield pg
    finally:
        if started:
            run("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


# ---- a throwaway Prefect server + the repo's deployments ------------------------------------------------


@dataclass
class Server:
    url: str
    env: dict
    home: Path
    logs: Path
    database: str = "sqlite"
    timings: dict = field(default_factory=dict)
    distill: dict | None = None  # the config and flow run id of the deployment run, for the dispatch test

    @property
    def api(self) -> str:
        return f"{self.url}/api"

    def cli(
        self, *args: str, timeout: float = 300, name: str = "cli", env: dict | None = None
    ) -> subprocess.CompletedProcess:
        """A `prefect` command against this server, from the repo root (`env`: more variables for it); fails the
        test with its output."""
        proc = subprocess.run(
            [PREFECT, *args],
            cwd=REPO,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        (self.logs / f"{name}.log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
        assert proc.returncode == 0, (
            f"prefect {' '.join(args[:3])} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
        return proc

    def run_once_worker(self, name: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
        return self.cli("worker", "start", "--pool", "mckd-process", "--run-once", timeout=timeout, name=name, env=env)

    def client(self):
        """An API client bound to this server (not the session's test harness)."""
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        class _Bound:
            async def __aenter__(inner):
                inner._settings = temporary_settings(updates={PREFECT_API_URL: self.api})
                inner._settings.__enter__()
                inner._client = get_client()
                return await inner._client.__aenter__()

            async def __aexit__(inner, *exc):
                try:
                    return await inner._client.__aexit__(*exc)
                finally:
                    inner._settings.__exit__(*exc)

        return _Bound()


def child_env(home: Path, api_url: str) -> dict:
    """The environment of a `prefect` / `mckd` child process talking to this server (no PREFECT_* of the session's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "MCKD_REPO"}
    env.update(
        {
            "PREFECT_HOME": str(home),
            "PREFECT_API_URL": api_url,
            "PREFECT_LOCAL_STORAGE_PATH": str(home / "storage"),
            "DO_NOT_TRACK": "1",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_CLI_PROMPT": "false",
            "PREFECT_LOGGING_LEVEL": "INFO",
            "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }
    )
    return env


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/api/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError(f"prefect server not healthy after {timeout}s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def server(postgres, tmp_path_factory):
    """`prefect server start` on the session's PostgreSQL, with its own PREFECT_HOME; stopped at session end."""
    home = tmp_path_factory.mktemp("e2e-prefect-home")
    logs = tmp_path_factory.mktemp("e2e-logs")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = child_env(home, f"{url}/api")
    server_env = {**env, "PREFECT_API_DATABASE_CONNECTION_URL": postgres.url}
    log = logs / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            cwd=home,
            env=server_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        started = time.monotonic()
        _wait_healthy(url, proc, log)
        srv = Server(url, env, home, logs, database="postgresql")
        srv.timings["server_start_s"] = time.monotonic() - started
        yield srv
    finally:
        stop_process_group(proc)


def stop_process_group(proc: subprocess.Popen, grace: float = 30) -> None:
    """Stop a child started with start_new_session: its own process group (children included), TERM then KILL."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def deployed(server):
    """The server with the work pool `mckd-process` and the four deployments of prefect.yaml."""
    started = time.monotonic()
    server.cli("work-pool", "create", "mckd-process", "--type", "process", name="work-pool")
    setup = subprocess.run(
        ["bash", str(REPO / "deployments" / "setup_work_pool.sh")],
        env={**server.env, "PREFECT": PREFECT},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert setup.returncode == 0 and "already exists" in setup.stdout, setup.stdout + setup.stderr  # idempotent
    out = server.cli("--no-prompt", "deploy", "--all", name="deploy").stdout
    for name in ("mckd-distill", "mckd-redistill", "mckd-evaluate", "mckd-train-student"):
        assert name in out
    server.timings["deploy_s"] = time.monotonic() - started
    return server
