"""The errors the SDK raises, each with ``code``, ``message`` and ``status``."""

from __future__ import annotations

from typing import Optional


class TaskplaneError(Exception):
    """The base of every error the SDK raises."""

    def __init__(self, message: str, code: str = "error", status: Optional[int] = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status

    def __str__(self) -> str:
        if self.status is None:
            return f"{self.code}: {self.message}"
        return f"{self.status} {self.code}: {self.message}"


class ApiError(TaskplaneError):
    """taskd answered with a non-2xx status and an ``{"error": {code, message}}`` body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message, code, status)


class BadRequest(ApiError):
    """400, 413 or 415: the request is invalid (``unknown_kind``, ``invalid_request``...)."""


class Unauthorized(ApiError):
    """401: no token, or one taskd does not accept."""


class Forbidden(ApiError):
    """403: the token lacks the scope the request needs."""


class NotFound(ApiError):
    """404: no such task (or route)."""


class Conflict(ApiError):
    """409: the task is not in a state that allows this (``lease_lost``, ``not_cancellable``...)."""


class Unavailable(ApiError):
    """429 or 5xx gateway/availability answers: try again later."""


class ConnectionFailed(TaskplaneError):
    """taskd could not be reached, or the connection broke before an answer."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "connection_failed")


class WaitTimeout(TaskplaneError, TimeoutError):
    """``Client.wait`` ran out of time before the task finished."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "wait_timeout")


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: BadRequest,
    415: BadRequest,
    429: Unavailable,
    502: Unavailable,
    503: Unavailable,
    504: Unavailable,
}


def api_error(status: int, code: str, message: str) -> ApiError:
    """The typed error for an answer with this status."""
    return _BY_STATUS.get(status, ApiError)(status, code, message)
