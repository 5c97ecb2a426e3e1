"""`qualify serve` as a real process: what it acknowledged survives being killed."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

SCRIPT = str(Path(sys.executable).with_name("qualify"))
T0 = datetime(2026, 3, 2, tzinfo=UTC)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run(*args: str) -> str:
    done = subprocess.run([SCRIPT, *args], capture_output=True, text=True, timeout=120, env=os.environ.copy())
    assert done.returncode == 0, done.stderr
    return done.stdout


class Server:
    def __init__(self, db: str, workers: int = 1) -> None:
        self.db, self.port, self.workers = db, free_port(), workers
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the server and wait for it to answer. A port another process took while the server
        was down (any outgoing connection may borrow a free port as its own end) moves the server to
        a fresh one; any other early exit fails with what the server printed."""
        for _ in range(3):
            if self._started():
                return
            self.port = free_port()
        raise AssertionError("qualify serve found no free port in three tries")

    def _started(self) -> bool:
        with tempfile.TemporaryFile() as errors:
            self.process = subprocess.Popen(
                [SCRIPT, "serve", "--port", str(self.port), "--db", self.db, "--workers", str(self.workers)],
                stdout=subprocess.DEVNULL,
                stderr=errors,
                env=os.environ.copy(),
                start_new_session=True,  # its own process group: a kill takes the worker processes too
            )
            deadline = time.monotonic() + 60  # generous: the whole suite loads both cores meanwhile
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                        return True
                except httpx.HTTPError:
                    time.sleep(0.1)
                if self.process.poll() is not None:
                    errors.seek(0)
                    printed = errors.read().decode(errors="replace")
                    if "address already in use" in printed.lower():
                        return False
                    raise AssertionError(f"qualify serve exited with {self.process.returncode}:\n{printed}")
            raise AssertionError("qualify serve did not answer within 60 s")

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):  # worker processes a kill left behind
                os.killpg(self.process.pid, signal.SIGKILL)


@pytest.fixture
def server(database_url: str) -> Iterator[Server]:
    run("init", "--db", database_url)
    running = Server(database_url)
    running.start()
    try:
        yield running
    finally:
        running.stop()


def batch(start: int, size: int) -> list[dict[str, object]]:
    return [
        {
            "event_id": f"ev-{n}",
            "type": "page_view",
            "occurred_at": (T0 + timedelta(minutes=n)).isoformat(),
            "email": f"visitor{n % 25}@acme.com",
            "properties": {"url": "/pricing" if n % 3 else "/"},
        }
        for n in range(start, start + size)
    ]


def test_events_acknowledged_before_a_kill_are_all_there_after_a_restart(server: Server) -> None:
    key = json.loads(run("keys", "create", "tracker", "--role", "ingest", "--json", "--db", server.db))["key"]
    headers = {"Authorization": f"Bearer {key}"}
    acknowledged: set[str] = set()
    for round_ in range(3):
        answer = httpx.post(f"{server.url}/v1/events", json=batch(round_ * 200, 200), headers=headers, timeout=60)
        assert answer.status_code == 200
        acknowledged |= {r["event_id"] for r in answer.json()["results"] if r["status"] == "accepted"}
    server.kill()  # no shutdown, no flush: only what was committed can survive
    server.start()
    replay = httpx.post(f"{server.url}/v1/events", json=batch(0, 600), headers=headers, timeout=60).json()
    assert len(acknowledged) == 600
    assert (replay["accepted"], replay["duplicate"]) == (0, 600)


def test_serve_refuses_a_missing_workspace(tmp_path: Path) -> None:
    done = subprocess.run(
        [SCRIPT, "serve", "--db", f"sqlite:///{tmp_path / 'none.db'}"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "qualify init" in done.stderr
