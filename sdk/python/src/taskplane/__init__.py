"""Python SDK of Taskplane: a ``Client`` for taskd's task API and a ``Worker`` that serves
declared kinds through the lease protocol."""

from __future__ import annotations

from .client import Client, Task
from .errors import (
    ApiError,
    BadRequest,
    Conflict,
    ConnectionFailed,
    Forbidden,
    NotFound,
    TaskplaneError,
    Unauthorized,
    Unavailable,
    WaitTimeout,
)
from .worker import Cancelled, Fail, LeasedTask, Worker

__version__ = "0.1.0"

__all__ = [
    "ApiError",
    "BadRequest",
    "Cancelled",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "Fail",
    "Forbidden",
    "LeasedTask",
    "NotFound",
    "Task",
    "TaskplaneError",
    "Unauthorized",
    "Unavailable",
    "WaitTimeout",
    "Worker",
]
