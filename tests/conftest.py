"""Shared fixtures: real PostgreSQL (or SQLite), real Redis, real worker processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's sync API runs a loop

import tests.workflows  # noqa: F401  (registers the test workflows in this process)
from runs.embedded import stop_process_tree

ROOT = Path(__file__).resolve().parent.parent


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked ``postgres`` need PostgreSQL by nature: skipped on the embedded SQLite."""
    if item.get_closest_marker("postgres") is not None:
        from django.db import connection

        if connection.vendor != "postgresql":
            pytest.skip(f"needs PostgreSQL (the database is {connection.vendor})")


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):  # type: ignore[no-untyped-def]
    return {
        **browser_type_launch_args,
        "executable_path": "/usr/bin/chromium",
        "args": [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ],
    }


@pytest.fixture
def redis_conn():  # type: ignore[no-untyped-def]
    import django_rq

    conn = django_rq.get_connection("default")
    conn.flushdb()
    yield conn
    conn.flushdb()


def _database_url() -> str:
    from django.db import connection

    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{s['NAME']}"
    host = s.get("HOST") or "127.0.0.1"
    port = s.get("PORT") or 5432
    user = s.get("USER") or "postgres"
    password = f":{s['PASSWORD']}" if s.get("PASSWORD") else ""
    return f"postgres://{user}{password}@{host}:{port}/{s['NAME']}"


class WorkerProcess:
    def __init__(self, proc: subprocess.Popen[bytes], name: str, log: Path) -> None:
        self.proc = proc
        self.name = name
        self.log = log

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _family(self) -> list[psutil.Process]:
        try:
            parent = psutil.Process(self.proc.pid)
            return [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def kill(self) -> None:
        """SIGKILL the worker and the job process it forked, as a crash would."""
        for p in self._family():
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        """Stop the worker; whatever is still running after a few seconds is killed."""
        if self.proc.poll() is None:
            stop_process_tree([self.proc.pid], timeout=5)
        self.proc.wait(timeout=10)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


WORKER_ENV = {
    "STEPFLOW_WORKFLOW_MODULES": "tests.workflows",
    "STEPFLOW_HEARTBEAT_INTERVAL": "0.5",
    "STEPFLOW_HEARTBEAT_TIMEOUT": "3",
    "STEPFLOW_REAPER_INTERVAL": "1",
    "STEPFLOW_CANCEL_GRACE": "2",
    "DEBUG": "1",
}


@pytest.fixture
def start_worker(
    redis_conn,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start real ``manage.py stepflow worker`` processes on the test database."""
    started: list[WorkerProcess] = []

    def start(
        *queues: str,
        name: str | None = None,
        simple: bool = True,
        env: dict[str, str] | None = None,
    ) -> WorkerProcess:
        name = name or f"w{len(started) + 1}"
        log = tmp_path / f"worker-{name}.log"
        cmd = [
            sys.executable,
            "manage.py",
            "stepflow",
            "worker",
            *(queues or ("default",)),
            "--name",
            f"{name}-{os.getpid()}-{time.monotonic_ns()}",
        ]
        if simple:
            cmd.append("--simple")
        full_env = {**os.environ, **WORKER_ENV, "DATABASE_URL": _database_url(), **(env or {})}
        with log.open("wb") as out:
            proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=full_env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = WorkerProcess(proc, name, log)
        started.append(worker)
        return worker

    yield start
    for w in started:
        w.stop()


def wait_for(
    predicate: Callable[[], object],
    timeout: float = 30,
    interval: float = 0.1,
    message: str = "condition",
) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


def wait_run(
    run_id: int,
    statuses: tuple[str, ...] = ("completed", "failed", "cancelled"),
    timeout: float = 60,
) -> object:
    from runs.models import Run

    def done() -> object:
        run = Run.objects.get(pk=run_id)
        return run if run.status in statuses else None

    return wait_for(done, timeout, 0.1, f"run #{run_id} to reach {statuses}")
