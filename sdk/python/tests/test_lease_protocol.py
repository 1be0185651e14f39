"""The lease protocol spoken directly with httpx: reports guarded by the lease."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import status_becomes

from taskplane import Client


@pytest.fixture
def http(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=30) as h:
        yield h


def lease_one(http: httpx.Client, worker: str, kind: str) -> dict[str, Any]:
    answer = http.post(
        "/api/v1/leases",
        json={"worker": worker, "kinds": [kind], "max": 1, "wait_ms": 10_000},
    )
    assert answer.status_code == 200, answer.text
    tasks: list[dict[str, Any]] = answer.json()["tasks"]
    assert len(tasks) == 1, tasks
    return tasks[0]


def error_code(answer: httpx.Response) -> str:
    code: str = answer.json()["error"]["code"]
    return code


def test_a_foreign_or_stale_lease_is_lease_lost(http: httpx.Client, client: Client) -> None:
    submitted = client.submit("resize", {"w": 1})
    leased = lease_one(http, "tester-1", "resize")
    assert leased["id"] == submitted.id
    assert leased["lease"] == "1.tester-1"
    path = f"/api/v1/tasks/{submitted.id}"

    foreign = http.post(f"{path}/complete", json={"lease": "1.someone-else", "result": 1})
    assert foreign.status_code == 409
    assert error_code(foreign) == "lease_lost"
    assert client.get(submitted.id).status == "running"

    beat = http.post(f"{path}/heartbeat", json={"lease": leased["lease"]})
    assert beat.status_code == 200, beat.text
    assert beat.json()["cancel_requested"] is False

    done = http.post(f"{path}/complete", json={"lease": leased["lease"], "result": {"w": 2}})
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "succeeded"

    stale = http.post(f"{path}/complete", json={"lease": leased["lease"], "result": 3})
    assert stale.status_code == 409
    assert error_code(stale) == "lease_lost"
    task = client.get(submitted.id)
    assert task.status == "succeeded"
    assert task.result == {"w": 2}


def test_an_expired_lease_is_lost(http: httpx.Client, client: Client) -> None:
    submitted = client.submit("report", {}, max_attempts=3, retry_base_ms=60_000)
    leased = lease_one(http, "tester-2", "report")
    assert leased["id"] == submitted.id
    # No heartbeat: taskd's 3 s lease runs out and the attempt is counted.
    task = status_becomes(client, submitted.id, "queued", "retrying", timeout=20)
    assert task.attempts == 1

    late = http.post(f"/api/v1/tasks/{submitted.id}/heartbeat", json={"lease": leased["lease"]})
    assert late.status_code == 409
    assert error_code(late) == "lease_lost"


def test_leasing_an_undeclared_kind_is_unknown_kind(http: httpx.Client) -> None:
    answer = http.post("/api/v1/leases", json={"worker": "tester-3", "kinds": ["nope"]})
    assert answer.status_code == 400
    assert error_code(answer) == "unknown_kind"
