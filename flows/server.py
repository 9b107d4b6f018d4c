"""A local Prefect server on SQLite, started in the background and found again later.

`wikifaces server start` and `make demo` use it: the server's home (database, logs, profile)
lives under the data root (`data/prefect/`), its output goes to `server.log` there (a pipe
would fill and stall it), analytics are off (they need DNS), and `server.json` records its pid
and URL so that the next command reuses it and `wikifaces server stop` can end it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

DEFAULT_PORT = 4200


def server_env(home: Path) -> dict[str, str]:
    return {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "true"}


def healthy(api_url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def running_server(home: Path) -> str | None:
    """The API URL of the server this home started, if it still answers."""
    state = home / "server.json"
    if not state.exists():
        return None
    info = json.loads(state.read_text())
    return info["api_url"] if healthy(info["api_url"]) else None


def start_server(home: Path, port: int | None = None, timeout: float = 120.0) -> str:
    """Start (or reuse) the local server for this home; returns its API URL once it answers."""
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    if (url := running_server(home)) is not None:
        return url
    port = port or (DEFAULT_PORT if port_free(DEFAULT_PORT) else free_port())
    if not port_free(port):
        raise RuntimeError(f"port {port} on 127.0.0.1 is taken: choose another with --port")
    api_url = f"http://127.0.0.1:{port}/api"
    prefect = Path(sys.executable).with_name("prefect")
    with open(home / "server.log", "ab") as log:
        proc = subprocess.Popen([str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=server_env(home), start_new_session=True)
    (home / "server.json").write_text(json.dumps({"pid": proc.pid, "api_url": api_url, "port": port}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if healthy(api_url):
            return api_url
        if proc.poll() is not None:
            raise RuntimeError(f"the Prefect server exited with {proc.returncode}: see {home / 'server.log'}")
        time.sleep(0.5)
    stop_server(home)
    raise RuntimeError(f"the Prefect server did not answer within {timeout:.0f} s: see {home / 'server.log'}")


def stop_server(home: Path, timeout: float = 20.0) -> bool:
    """Stop the server this home started (its whole process group); False if none was running."""
    state = home / "server.json"
    if not state.exists():
        return False
    pid = json.loads(state.read_text())["pid"]
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        state.unlink(missing_ok=True)
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):  # reap it when this process started it
            os.waitpid(pid, os.WNOHANG)
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        os.killpg(pid, signal.SIGKILL)
    state.unlink(missing_ok=True)
    return True


def ui_url(api_url: str) -> str:
    return api_url.removesuffix("/api")
