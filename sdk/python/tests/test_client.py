"""The Client against a real taskd: submit, wait, get, cancel and the typed errors."""

from __future__ import annotations

import socket
import uuid

import pytest

from taskplane import (
    ApiError,
    BadRequest,
    Client,
    Conflict,
    ConnectionFailed,
    NotFound,
    TaskplaneError,
    WaitTimeout,
)


def test_echo_is_submitted_and_waited_for(client: Client) -> None:
    payload = {"w": 3, "tags": ["a", "b"], "nested": {"x": None}}
    submitted = client.submit("echo", payload, labels={"suite": "sdk"}, max_attempts=2)
    assert submitted.kind == "echo"
    assert submitted.max_attempts == 2
    assert submitted.labels == {"suite": "sdk"}

    task = client.wait(submitted.id, timeout=30)

    assert task.status == "succeeded"
    assert task.done and task.succeeded
    assert task.result == payload
    assert task.attempts == 1
    assert task.created_at is not None and task.finished_at is not None
    assert task.finished_at >= task.created_at


def test_an_idempotent_submit_answers_the_first_task(client: Client) -> None:
    key = f"sdk-{uuid.uuid4()}"
    first = client.submit("echo", {"n": 1}, idempotency_key=key)
    again = client.submit("echo", {"n": 1}, idempotency_key=key)
    assert again.id == first.id


def test_an_unknown_task_is_not_found(client: Client) -> None:
    with pytest.raises(NotFound) as caught:
        client.get(str(uuid.uuid4()))
    assert caught.value.code == "not_found"
    assert caught.value.status == 404
    assert isinstance(caught.value, ApiError)


def test_an_unknown_kind_is_a_bad_request(client: Client) -> None:
    with pytest.raises(BadRequest) as caught:
        client.submit("nope", {})
    assert caught.value.code == "unknown_kind"
    assert caught.value.status == 400
    assert "nope" in caught.value.message


def test_an_unknown_option_is_refused_before_sending(client: Client) -> None:
    with pytest.raises(TypeError, match="priorty"):
        client.submit("echo", {}, priorty=3)


def test_cancelling_a_finished_task_is_a_conflict(client: Client) -> None:
    task = client.wait(client.submit("echo", {"done": True}).id, timeout=30)
    assert task.succeeded
    with pytest.raises(Conflict) as caught:
        client.cancel(task.id)
    assert caught.value.status == 409


def test_a_queued_task_is_cancelled_at_once(client: Client) -> None:
    # Nothing serves "report" in this module, so it stays queued until cancelled.
    task = client.submit("report", {"n": 1})
    cancelled = client.cancel(task.id)
    assert cancelled.status == "cancelled"
    assert client.get(task.id).status == "cancelled"


def test_wait_gives_up_with_wait_timeout(client: Client) -> None:
    task = client.submit("report", {"n": 2})
    with pytest.raises(WaitTimeout) as caught:
        client.wait(task.id, timeout=0.3)
    assert isinstance(caught.value, TimeoutError)
    assert isinstance(caught.value, TaskplaneError)
    client.cancel(task.id)


def test_an_unreachable_taskd_is_connection_failed() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        client = Client(f"http://127.0.0.1:{sock.getsockname()[1]}", timeout=2)
        with pytest.raises(ConnectionFailed) as caught:
            client.get(str(uuid.uuid4()))
        client.close()
    assert caught.value.code == "connection_failed"
    assert caught.value.status is None
