"""Pieces that need no taskd: time parsing, error mapping, names, registration."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from taskplane import (
    ApiError,
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    Task,
    Unauthorized,
    Unavailable,
    Worker,
)
from taskplane.client import parse_time
from taskplane.errors import api_error
from taskplane.worker import default_name


def test_rfc3339_instants_parse_on_any_python() -> None:
    expected = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc)
    assert parse_time("2026-01-02T03:04:05.123456789Z") == expected
    assert parse_time("2026-01-02T03:04:05.123456Z") == expected
    assert parse_time("2026-01-02T03:04:05.1Z") == expected.replace(microsecond=100000)
    assert parse_time("2026-01-02T03:04:05Z") == expected.replace(microsecond=0)
    assert parse_time("2026-01-02T05:04:05.123456+02:00") == expected
    assert parse_time(None) is None


def test_statuses_map_to_typed_errors() -> None:
    cases = {
        400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict,
        413: BadRequest, 415: BadRequest, 429: Unavailable, 503: Unavailable,
    }  # fmt: skip
    for status, kind in cases.items():
        error = api_error(status, "some_code", "some message")
        assert type(error) is kind
        assert (error.status, error.code, error.message) == (status, "some_code", "some message")
    assert type(api_error(500, "internal", "boom")) is ApiError


def test_a_task_ignores_unknown_fields() -> None:
    task = Task.from_json(
        {"id": "t1", "kind": "echo", "queue": "default", "status": "failed", "novel": 1}
    )
    assert (task.id, task.status, task.done, task.succeeded) == ("t1", "failed", True, False)
    assert task.labels == {} and task.started_at is None


def test_worker_names_are_what_taskd_accepts() -> None:
    name = default_name()
    assert Worker("http://127.0.0.1:1", name=name).id == name
    with pytest.raises(ValueError):
        Worker("http://127.0.0.1:1", name="-bad name")


def test_run_needs_a_handler_for_every_kind() -> None:
    worker = Worker("http://127.0.0.1:1", kinds=["resize", "report"])
    worker.handler("resize")(lambda task: None)
    with pytest.raises(ValueError, match="report"):
        worker.run()
