"""Submitting, reading, waiting for and cancelling tasks."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Optional
from urllib.parse import quote

from ._http import Http
from .errors import WaitTimeout

FINISHED = frozenset({"succeeded", "failed", "cancelled"})

# fmt: off
SUBMIT_OPTIONS = frozenset((
    "queue", "priority", "max_attempts", "timeout_secs", "delay_ms", "run_at",
    "idempotency_key", "labels", "retry_base_ms", "retry_max_ms", "depends_on",
))
# fmt: on


def parse_time(value: Any) -> Optional[datetime]:
    """An RFC 3339 instant as an aware datetime (Python 3.9's fromisoformat takes no 'Z')."""
    if not isinstance(value, str) or not value:
        return None
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    head, dot, rest = text.partition(".")
    if dot:  # fromisoformat before 3.11 wants 3 or 6 digits of fraction
        digits = len(rest) - len(rest.lstrip("0123456789"))
        fraction = (rest[:digits] + "000000")[:6]
        text = f"{head}.{fraction}{rest[digits:]}"
    return datetime.fromisoformat(text)


@dataclass(frozen=True)
class Task:
    """A task as taskd reports it (``GET /api/v1/tasks/{id}``)."""

    id: str
    kind: str
    queue: str
    status: str
    payload: Any = None
    result: Any = None
    last_error: Optional[str] = None
    attempts: int = 0
    max_attempts: int = 0
    created_at: Optional[datetime] = None
    started_at: Optional[datetime] = None
    finished_at: Optional[datetime] = None
    worker: Optional[str] = None
    labels: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Task:
        return cls(
            id=str(data["id"]),
            kind=str(data.get("kind", "")),
            queue=str(data.get("queue", "")),
            status=str(data.get("status", "")),
            payload=data.get("payload"),
            result=data.get("result"),
            last_error=data.get("last_error"),
            attempts=int(data.get("attempts") or 0),
            max_attempts=int(data.get("max_attempts") or 0),
            created_at=parse_time(data.get("created_at")),
            started_at=parse_time(data.get("started_at")),
            finished_at=parse_time(data.get("finished_at")),
            worker=data.get("worker"),
            labels=dict(data.get("labels") or {}),
        )

    @property
    def done(self) -> bool:
        """True once the task has ended: succeeded, failed or cancelled."""
        return self.status in FINISHED

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"


def task_path(task_id: str, action: str = "") -> str:
    path = f"/api/v1/tasks/{quote(str(task_id), safe='')}"
    return f"{path}/{action}" if action else path


class Client:
    """taskd's task API: ``Client("http://127.0.0.1:7070", token=...)``."""

    def __init__(self, server: str, token: Optional[str] = None, timeout: float = 30.0) -> None:
        self._http = Http(server, token, timeout)

    def submit(self, kind: str, payload: Any = None, **options: Any) -> Task:
        """Submits a task; ``options`` are the submit fields (queue, priority, labels...).

        An ``idempotency_key`` already used answers the task it made the first time.
        """
        unknown = sorted(set(options) - SUBMIT_OPTIONS)
        if unknown:
            raise TypeError(f"submit() got unknown options: {', '.join(unknown)}")
        body = {"kind": kind, "payload": payload}
        body.update({name: value for name, value in options.items() if value is not None})
        return Task.from_json(self._http.request("POST", "/api/v1/tasks", body))

    def get(self, task_id: str) -> Task:
        return Task.from_json(self._http.request("GET", task_path(task_id)))

    def cancel(self, task_id: str) -> Task:
        """Cancels a task: at once if it is not running, else its worker is told to stop.

        Raises ``Conflict`` when the task has already finished.
        """
        return Task.from_json(self._http.request("POST", task_path(task_id, "cancel")))

    def wait(self, task_id: str, timeout: float = 60.0) -> Task:
        """Polls the task until it has finished; raises ``WaitTimeout`` after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        interval = 0.05
        while True:
            task = self.get(task_id)
            if task.done:
                return task
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(f"task {task_id} is still {task.status} after {timeout}s")
            time.sleep(min(interval, left))
            interval = min(interval * 1.5, 1.0)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
