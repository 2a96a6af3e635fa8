"""``./dev test``: lint, format check, type check, then pytest.

Uses DATABASE_URL / REDIS_URL when set (CI sets them to the machine's
PostgreSQL and Redis); otherwise SQLite and an embedded Redis.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(cmd: list[str]) -> int:
    print("$ " + " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=ROOT)


def main(argv: list[str]) -> int:
    from runs.embedded import ensure_env_redis

    py = sys.executable
    if not argv:
        for cmd in (
            [py, "-m", "ruff", "check", "."],
            [py, "-m", "ruff", "format", "--check", "."],
            [py, "-m", "mypy"],
        ):
            if run(cmd) != 0:
                print(
                    "stepflow tests: a check failed; fix it before the tests run", file=sys.stderr
                )
                return 1
    os.environ.setdefault("DEBUG", "1")
    server = ensure_env_redis(ROOT / "var")
    print(
        f"database: {os.environ.get('DATABASE_URL') or 'SQLite (var/)'}; "
        f"redis: {os.environ['REDIS_URL']}{' (embedded)' if server else ''}",
        flush=True,
    )
    try:
        code = run([py, "-m", "pytest", *argv])
    finally:
        if server is not None:
            from runs.embedded import stop_redis

            stop_redis(server)
    if code == 5:
        print("stepflow tests: no tests ran, which counts as a failure", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
