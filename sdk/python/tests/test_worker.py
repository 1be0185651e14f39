"""A Worker against a real taskd: results, logs, failures, cancellation, heartbeats."""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

import pytest
from conftest import eventually, running, status_becomes, task_logs

from taskplane import BadRequest, Cancelled, Client, Fail, LeasedTask, Worker


def test_a_worker_runs_resize_tasks_end_to_end(server: str, client: Client) -> None:
    worker = Worker(server, concurrency=4)

    @worker.handler("resize")
    def resize(task: LeasedTask) -> dict[str, Any]:
        task.log(f"resizing to {task.payload['w'] * 2}")
        task.log("a line on stderr", stream="stderr")
        return {"w": task.payload["w"] * 2}

    with running(worker):
        ids = [client.submit("resize", {"w": w}).id for w in range(20)]
        tasks = [client.wait(task_id, timeout=60) for task_id in ids]

    for w, task in enumerate(tasks):
        assert task.status == "succeeded", task
        assert task.result == {"w": w * 2}
        assert task.attempts == 1
        assert task.worker == worker.id
    lines = task_logs(server, ids[7])
    assert "resizing to 14" in lines
    assert "a line on stderr" in lines


def test_exceptions_fail_the_attempt(server: str, client: Client) -> None:
    worker = Worker(server, kinds=["report"], concurrency=2)

    @worker.handler("report")
    def report(task: LeasedTask) -> None:
        if task.payload["mode"] == "error":
            raise ValueError("bad width")
        raise Fail("no such report", retry=False)

    with running(worker):
        error = client.submit("report", {"mode": "error"}, max_attempts=1)
        fail = client.submit("report", {"mode": "fail"}, max_attempts=3)
        errored = client.wait(error.id, timeout=30)
        failed = client.wait(fail.id, timeout=30)

    assert errored.status == "failed"
    assert errored.last_error is not None and "ValueError" in errored.last_error
    assert "bad width" in errored.last_error
    assert failed.status == "failed"
    assert failed.attempts == 1
    assert failed.last_error == "no such report"


def test_an_exception_is_retried_while_attempts_are_left(server: str, client: Client) -> None:
    worker = Worker(server, kinds=["report"])

    @worker.handler("report")
    def flaky(task: LeasedTask) -> int:
        if task.attempt < 2:
            raise RuntimeError("first try fails")
        return task.attempt

    with running(worker):
        submitted = client.submit("report", {}, max_attempts=3, retry_base_ms=10, retry_max_ms=20)
        task = client.wait(submitted.id, timeout=30)

    assert task.status == "succeeded"
    assert task.result == 2
    assert task.attempts == 2


def test_a_cancelled_task_stops_its_handler(server: str, client: Client) -> None:
    worker = Worker(server, kinds=["slow"])
    started = threading.Event()
    stopped = threading.Event()

    @worker.handler("slow")
    def slow(task: LeasedTask) -> None:
        started.set()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the handler's "work"
            if task.cancelled:
                stopped.set()
                raise Cancelled()
            time.sleep(0.02)

    with running(worker):
        submitted = client.submit("slow", {})
        assert started.wait(15), "the handler never started"
        assert client.get(submitted.id).status == "running"
        client.cancel(submitted.id)
        task = client.wait(submitted.id, timeout=15)
        assert stopped.is_set()

    assert task.status == "cancelled"


def test_heartbeats_keep_a_task_longer_than_its_lease(server: str, client: Client) -> None:
    # taskd's lease is 3 s here; the handler holds the task for 4.5 s.
    worker = Worker(server, kinds=["slow"])

    @worker.handler("slow")
    def slow(task: LeasedTask) -> str:
        task.heartbeat({"pct": 50})
        time.sleep(4.5)
        return "done"

    with running(worker):
        task = client.wait(client.submit("slow", {}).id, timeout=30)

    assert task.status == "succeeded"
    assert task.attempts == 1
    assert task.result == "done"
    assert any("progress" in line and "50" in line for line in task_logs(server, task.id))


def test_a_result_that_is_not_json_fails_without_retry(server: str, client: Client) -> None:
    worker = Worker(server, kinds=["report"])

    @worker.handler("report")
    def report(task: LeasedTask) -> object:
        return object()

    with running(worker):
        task = client.wait(client.submit("report", {}, max_attempts=3).id, timeout=30)

    assert task.status == "failed"
    assert task.attempts == 1
    assert task.last_error is not None and "not JSON" in task.last_error


def test_an_undeclared_kind_ends_run_with_bad_request(server: str) -> None:
    worker = Worker(server, kinds=["nope"])
    worker.handler("nope")(lambda task: None)
    with pytest.raises(BadRequest) as caught:
        worker.run()
    worker.close()
    assert caught.value.code == "unknown_kind"


def test_a_worker_keeps_trying_while_taskd_is_unreachable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        worker = Worker(f"http://127.0.0.1:{sock.getsockname()[1]}", timeout=2)
        worker.handler("resize")(lambda task: None)
        with caplog.at_level(logging.WARNING, logger="taskplane"), running(worker, 5):
            eventually(
                lambda: any("leasing failed" in r.getMessage() for r in caplog.records),
                what="a warning about leasing",
            )


def test_a_running_task_names_its_worker(server: str, client: Client) -> None:
    worker = Worker(server, kinds=["slow"])
    release = threading.Event()

    @worker.handler("slow")
    def slow(task: LeasedTask) -> None:
        release.wait(30)

    with running(worker):
        submitted = client.submit("slow", {})
        task = status_becomes(client, submitted.id, "running")
        assert task.worker == worker.id
        release.set()
        assert client.wait(submitted.id, timeout=15).succeeded
