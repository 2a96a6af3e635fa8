"""The README's first command, as a newcomer runs it: ``./dev up`` in a fresh copy of the
repository on the embedded default (SQLite + embedded Redis). The dashboard answers, the
printed demo login works, a demo run started from the Workflows page completes, and Ctrl+C
stops everything it started.

It talks to the app over HTTP only: no test database is involved.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from playwright.sync_api import Page, expect

from runs.embedded import free_port, port_in_use

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
#: The issue's promise: the dashboard answers within a minute after installation.
READY_WITHIN = 60.0
#: Variables of this test session that a newcomer's shell would not have.
NOT_INHERITED = (
    "DATABASE_URL",
    "REDIS_URL",
    "DJANGO_SETTINGS_MODULE",
    "STEPFLOW_VAR_DIR",
    "STATIC_ROOT",
    "PORT",
    "STEPFLOW_EMBEDDED_REDIS_PORT",
)

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"needs {CHROMIUM}")


def copy_repo(dest: Path) -> None:
    """The project's files (as git sees them, uncommitted changes included) without var/ or
    caches, and a .venv that reuses this checkout's installed packages."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout.decode()
        files = [f for f in listed.split("\0") if f]
    except (OSError, subprocess.CalledProcessError):
        files = []
    if files:
        for rel in files:
            src = ROOT / rel
            if src.is_file():
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / rel)
    else:  # not a git checkout
        shutil.copytree(
            ROOT,
            dest,
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns(
                ".venv", "var", "__pycache__", ".*_cache", ".hypothesis", "*.egg-info"
            ),
        )
    # The virtualenv: its parts linked (installing again would take most of a minute), and
    # an install stamp of its own that matches pyproject.toml, so ./dev does not reinstall
    # (which would point the shared editable install at this copy).
    venv = dest / ".venv"
    venv.mkdir()
    for entry in (ROOT / ".venv").iterdir():
        if entry.name != ".installed":
            (venv / entry.name).symlink_to(entry)
    stamp = hashlib.sha256((dest / "pyproject.toml").read_bytes()).hexdigest()[:16]
    (venv / ".installed").write_text(stamp + "\n")


def newcomer_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def processes_using(path: Path) -> list[psutil.Process]:
    """Processes whose working directory, executable or command line is inside ``path``."""
    where = str(path)
    found = []
    for p in psutil.process_iter():
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                continue  # finished; only waiting for its parent to collect the status
            if (
                p.cwd().startswith(where)
                or p.exe().startswith(where)
                or any(where in part for part in p.cmdline())
            ):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return found


def alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False


class DevUp:
    """``./dev up`` running in a copy of the repository, and every process seen in its tree."""

    def __init__(self, repo: Path, port: int, redis_port: int, log: Path) -> None:
        self.repo = repo
        self.port = port
        self.redis_port = redis_port
        self.log = log
        self.url = f"http://127.0.0.1:{port}/"
        with log.open("wb") as out:
            # A session of its own: the SIGINT below reaches its process group, as Ctrl+C
            # reaches the foreground process group of a terminal.
            self.proc = subprocess.Popen(
                ["./dev", "up", "--port", str(port), "--redis-port", str(redis_port)],
                cwd=repo,
                env=newcomer_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        #: pid -> (the process, its command line when seen)
        self.seen: dict[int, tuple[psutil.Process, str]] = {}
        self.started_at = time.monotonic()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def note_processes(self) -> None:
        """Remember the processes it started (its tree, and the daemonized Redis server)."""
        try:
            root = psutil.Process(self.proc.pid)
            family = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            family = []
        for p in family + processes_using(self.repo):
            if p.pid not in self.seen:
                self.seen[p.pid] = (p, describe(p))

    def wait_ready(self, timeout: float) -> tuple[str, str]:
        """Wait for the banner; return the demo login it prints."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.note_processes()
            text = self.output()
            m = re.search(r"log in as (\S+) / (\S+)", text)
            if "stepflow is up" in text and m:
                return m.group(1), m.group(2)
            if self.proc.poll() is not None:
                raise AssertionError(f"./dev up exited with {self.proc.returncode}:\n{text}")
            time.sleep(0.2)
        raise AssertionError(f"./dev up was not up within {timeout:g}s:\n{self.output()}")

    def interrupt(self) -> int:
        """Ctrl+C, then the exit status."""
        self.note_processes()
        os.killpg(self.proc.pid, signal.SIGINT)
        return self.proc.wait(timeout=40)

    def kill_leftovers(self) -> None:
        for p in [*(p for p, _ in self.seen.values()), *processes_using(self.repo)]:
            try:
                if alive(p):
                    p.kill()
            except psutil.NoSuchProcess:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def dev_up(tmp_path: Path) -> Iterator[DevUp]:
    repo = tmp_path / "stepflow"
    repo.mkdir()
    copy_repo(repo)
    ports = set()
    while len(ports) < 2:
        ports.add(free_port())
    port, redis_port = sorted(ports)
    dev = DevUp(repo, port, redis_port, tmp_path / "dev-up.log")
    try:
        yield dev
    finally:
        dev.kill_leftovers()


def test_readme_first_command__dashboard_demo_run_and_clean_ctrl_c(
    dev_up: DevUp, page: Page
) -> None:
    user, password = dev_up.wait_ready(timeout=READY_WITHIN + 30)
    ready_after = time.monotonic() - dev_up.started_at
    assert ready_after < READY_WITHIN, f"up after {ready_after:.1f}s:\n{dev_up.output()}"
    banner = dev_up.output()
    assert dev_up.url in banner
    # The copy's own SQLite file and an embedded Redis: nothing of the test session's servers.
    assert str(dev_up.repo / "var" / "stepflow.sqlite3") in banner, banner
    assert f"redis://127.0.0.1:{dev_up.redis_port}/0 (embedded" in banner, banner

    page.goto(dev_up.url)
    expect(page).to_have_url(re.compile(r"/login/"))
    page.fill("#id_username", user)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    expect(page.locator(".whoami")).to_contain_text(user)

    page.goto(f"{dev_up.url}workflows/")
    for name in ("deploy", "dataset", "upload", "branches", "payment"):  # the demo workflows
        expect(page.locator(".wf-card h2 a", has_text=re.compile(f"^{name}$"))).to_have_count(1)
    page.locator(".wf-card h2 a", has_text="deploy").click()
    page.wait_for_url(re.compile(r"/workflows/deploy/$"))
    page.fill("#id_p_step_seconds", "0.1")
    page.fill("#id_p_version", "2.0.0")
    page.locator(".start-form button[type=submit]").click()
    page.wait_for_url(re.compile(r"/runs/\d+/$"))
    expect(page.locator("#run-status")).to_contain_text("completed", timeout=60_000)
    expect(page.locator("#step-deploy")).to_contain_text("completed")
    dev_up.note_processes()

    code = dev_up.interrupt()
    output = dev_up.output()
    assert code == 0, output
    assert "Stopping" in output
    # Give the processes it signalled a moment to be gone from the process table.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        left = [p for p, _ in dev_up.seen.values() if alive(p)] + processes_using(dev_up.repo)
        if not left:
            break
        time.sleep(0.2)
    assert not left, f"left behind: {[describe(p) for p in left]}\n{output}"
    # It did start them: itself, two workers, the web server and Redis (at least).
    commands = [c for _, c in dev_up.seen.values()]
    assert len(commands) >= 5, commands
    assert any("redis-server" in c for c in commands), commands
    assert sum("stepflow worker" in c for c in commands) >= 2, commands
    assert not port_in_use(dev_up.redis_port) and not port_in_use(dev_up.port)


def describe(p: psutil.Process) -> str:
    try:
        return f"{p.pid} {' '.join(p.cmdline())}"
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return f"{p.pid} (gone)"
