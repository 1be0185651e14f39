"""Stopping a worker: running tasks get a grace period, then go back to the queue."""

from __future__ import annotations

import threading
import time

from conftest import running, status_becomes

from taskplane import Client, LeasedTask, Worker


def test_stop_gives_unfinished_tasks_back_uncounted(server: str, client: Client) -> None:
    worker = Worker(server, kinds=["slow"], grace=0.5)
    started = threading.Event()
    saw_cancelled = threading.Event()

    @worker.handler("slow")
    def slow(task: LeasedTask) -> str:
        started.set()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the handler's "work", never done in time
            if task.cancelled:
                saw_cancelled.set()
                return "too late"
            time.sleep(0.02)
        return "finished"

    with running(worker, stop_within=10):
        submitted = client.submit("slow", {"n": 1}, max_attempts=2)
        assert started.wait(15), "the handler never started"
        status_becomes(client, submitted.id, "running")
        stopping_at = time.monotonic()
    # running() has called stop() and checked that run() returned.
    assert time.monotonic() - stopping_at < 5

    task = client.get(submitted.id)
    assert task.status == "queued"
    assert task.attempts == 0
    # The handler is told that the task is no longer its own.
    assert saw_cancelled.wait(5)
    # Its late result changed nothing.
    assert client.get(submitted.id).status == "queued"


def test_stop_waits_for_handlers_within_the_grace(server: str, client: Client) -> None:
    worker = Worker(server, kinds=["report"], grace=10)
    started = threading.Event()

    @worker.handler("report")
    def report(task: LeasedTask) -> str:
        started.set()
        time.sleep(1.0)
        return "finished in time"

    with running(worker, stop_within=15):
        submitted = client.submit("report", {})
        assert started.wait(15), "the handler never started"

    task = client.get(submitted.id)
    assert task.status == "succeeded"
    assert task.result == "finished in time"
    assert task.attempts == 1
