"""A real taskd per test module, and helpers to run a Worker in a thread."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import httpx
import pytest

from taskplane import Client, Task, Worker

REPO = Path(__file__).resolve().parents[3]
KINDS = "resize,report,slow"


def taskd_binary() -> Path:
    binary = Path(os.environ.get("TASKD_BIN") or REPO / "target" / "debug" / "taskd")
    if not binary.is_file():
        message = f"no taskd at {binary}: build it (cargo build) or set TASKD_BIN"
        if os.environ.get("TASKPLANE_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Starts taskd (kinds resize, report, slow; 3 s leases) and yields its URL."""
    binary = taskd_binary()
    tmp = tmp_path_factory.mktemp("taskd")
    listen = f"127.0.0.1:{free_port()}"
    url = f"http://{listen}"
    command = [
        str(binary),
        "--kinds", KINDS,
        "--listen", listen,
        "--database", f"sqlite://{tmp / 't.db'}",
        "--lease", "3s",
    ]  # fmt: skip
    with open(tmp / "taskd.log", "wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                log = (tmp / "taskd.log").read_text(errors="replace")
                pytest.fail(f"taskd exited with {process.returncode}:\n{log}")
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("taskd did not answer /health within 30 s")
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def client(server: str) -> Iterator[Client]:
    with Client(server) as c:
        yield c


def eventually(condition: Callable[[], bool], timeout: float = 15.0, what: str = "") -> None:
    """Polls ``condition`` until it holds; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what or condition}")
        time.sleep(0.02)


def status_becomes(client: Client, task_id: str, *statuses: str, timeout: float = 15.0) -> Task:
    seen: list[Task] = []

    def check() -> bool:
        seen.append(client.get(task_id))
        return seen[-1].status in statuses

    eventually(check, timeout, f"task {task_id} {statuses} (last: {seen[-1:]})")
    return seen[-1]


@contextmanager
def running(worker: Worker, stop_within: float = 10.0) -> Iterator[Worker]:
    """Runs ``worker.run()`` in a thread for the block; stops it and checks it returned."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            worker.run()
        except BaseException as error:  # handed to the test below
            errors.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(stop_within)
        worker.close()
    assert not thread.is_alive(), f"run() did not return within {stop_within} s of stop()"
    if errors:
        raise errors[0]


def task_logs(server: str, task_id: str) -> list[str]:
    answer = httpx.get(f"{server}/api/v1/tasks/{task_id}/logs", timeout=10)
    answer.raise_for_status()
    return [str(line["line"]) for line in answer.json()["lines"]]
