"""A worker speaking taskd's lease protocol: it leases tasks of its kinds, runs their
handlers in a thread pool, keeps the leases with heartbeats and reports how they ended."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import signal
import socket
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional, TypeVar

from ._http import Http
from .client import parse_time, task_path
from .errors import (
    ApiError,
    BadRequest,
    ConnectionFailed,
    Forbidden,
    NotFound,
    TaskplaneError,
    Unauthorized,
    Unavailable,
)

log = logging.getLogger("taskplane")

WAIT_MS = 25_000  # the lease long-poll
MAX_LEASE = 100  # tasks per lease request
MAX_LINES = 1000  # log lines per report
MAX_BUFFERED = 10_000  # log lines kept while taskd cannot be reached
LOG_EVERY = 0.5
TICK = 0.1
RETRYABLE = (ConnectionFailed, Unavailable)

H = TypeVar("H", bound=Callable[["LeasedTask"], Any])


class Fail(Exception):
    """Raised by a handler to fail the attempt with ``message``; retried only if ``retry``."""

    def __init__(self, message: str, retry: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.retry = retry


class Cancelled(Exception):
    """Raised by a handler that stops because ``task.cancelled`` turned true."""


class LeasedTask:
    """A task this worker holds a lease on, as its handler sees it."""

    def __init__(self, worker: Worker, data: dict[str, Any]) -> None:
        self.id: str = str(data["id"])
        self.kind: str = str(data["kind"])
        self.queue: str = str(data.get("queue", "default"))
        self.payload: Any = data.get("payload")
        self.attempt: int = int(data.get("attempt", 1))
        self.max_attempts: int = int(data.get("max_attempts", 1))
        self.timeout_secs: Optional[int] = data.get("timeout_secs")
        self.lease: str = str(data["lease"])
        #: The W3C ``traceparent`` the attempt runs in (None outside a trace): parent your
        #: spans on it, or pass it on (e.g. as the ``TRACEPARENT`` of a program you start).
        self.traceparent: Optional[str] = data.get("traceparent")
        self._worker = worker
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()  # keeps log batches in order
        self._lines: list[dict[str, str]] = []
        self._cancelled = False
        self._ended = False  # its end is reported, being reported, or no longer ours
        self._expires = time.monotonic()
        self._next_beat = 0.0
        self._next_logs = time.monotonic() + LOG_EVERY
        self._renewed(data.get("lease_expires_at"))

    @property
    def cancelled(self) -> bool:
        """True once a cancel was requested, or the task stopped being this worker's
        (its lease was lost or the worker is shutting down): the handler should stop."""
        return self._cancelled

    def log(self, line: str, stream: str = "stdout") -> None:
        """Adds a line to the task's log (sent in batches, at least every 0.5 s)."""
        if stream not in ("stdout", "stderr"):
            raise ValueError("stream: 'stdout' or 'stderr'")
        with self._lock:
            self._lines.append({"stream": stream, "line": str(line)})
            if len(self._lines) > MAX_BUFFERED:
                del self._lines[: len(self._lines) - MAX_BUFFERED]

    def heartbeat(self, progress: Any = None) -> None:
        """Renews the lease now, with ``progress`` (any JSON) for the task's log."""
        self._worker._beat(self, progress)

    def _renewed(self, expires_at: Any) -> None:
        expires = parse_time(expires_at)
        left = expires.timestamp() - time.time() if expires else 0.0
        now = time.monotonic()
        self._expires = now + max(left, 0.0)
        self._next_beat = now + max(min(5.0, left / 3), 0.2)

    def _end(self) -> bool:
        """Claims the right to report this task's end; False if it is taken already."""
        with self._lock:
            if self._ended:
                return False
            self._ended = True
            return True


class Worker:
    """Serves kinds declared on taskd (``taskd --kinds``) with Python handlers.

    >>> worker = Worker("http://127.0.0.1:7070", concurrency=4)
    >>> @worker.handler("resize")
    ... def resize(task: LeasedTask) -> dict: ...
    >>> worker.run()  # until SIGTERM/SIGINT or worker.stop()
    """

    def __init__(
        self,
        server: str,
        kinds: Optional[Sequence[str]] = None,
        concurrency: int = 1,
        queues: Sequence[str] = ("default",),
        token: Optional[str] = None,
        name: Optional[str] = None,
        grace: float = 30.0,
        timeout: float = 30.0,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency: at least 1")
        self.id = name if name is not None else default_name()
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}", self.id):
            raise ValueError(f"name: {self.id!r} must be 1 to 128 of A-Z a-z 0-9 . _ : -")
        if isinstance(kinds, str) or isinstance(queues, str):
            raise TypeError("kinds and queues are lists of names, not one string")
        self.kinds = list(kinds) if kinds is not None else None
        self.concurrency = concurrency
        self.queues = list(queues)
        self.grace = grace
        self._handlers: dict[str, Callable[[LeasedTask], Any]] = {}
        self._http = Http(server, token, timeout)
        self._poll_http = Http(server, token, timeout, keepalive=False)
        self._running: dict[str, LeasedTask] = {}
        self._slots = threading.Condition()
        self._stopping = threading.Event()
        self._signals = 0
        self._poll_socket: Optional[socket.socket] = None
        self._fatal: Optional[BaseException] = None
        self._ran = False

    def handler(self, kind: str) -> Callable[[H], H]:
        """Registers the decorated function as the handler of ``kind``."""

        def register(function: H) -> H:
            self._handlers[kind] = function
            return function

        return register

    def stop(self) -> None:
        """Asks ``run`` to stop leasing, drain and return (safe from any thread)."""
        self._stopping.set()
        self._abort_poll()
        with self._slots:
            self._slots.notify_all()

    def run(self) -> None:
        """Runs until stopped: leases, runs handlers, beats and reports; then drains.

        Raises the error that made leasing impossible (an undeclared kind, a refused token).
        A Worker runs once; ``stop()`` before ``run()`` makes it return at once.
        """
        kinds = self.kinds if self.kinds is not None else sorted(self._handlers)
        missing = [kind for kind in kinds if kind not in self._handlers]
        if not kinds or missing:
            raise ValueError(f"no handler for kinds {missing or '(none registered)'}")
        if self._ran:
            raise RuntimeError("a Worker runs once: make a new one")
        self._ran = True
        previous = self._install_signals()
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="taskplane-handler")
        keeper = threading.Thread(target=self._keep, name="taskplane-keeper", daemon=True)
        leaser = threading.Thread(
            target=self._lease_loop, args=(kinds, pool), name="taskplane-leaser", daemon=True
        )
        keeper.start()
        leaser.start()
        try:
            while not self._stopping.wait(TICK):
                if self._signals:
                    self.stop()
            leaser.join(self._http.timeout)
            self._drain()
        finally:
            self._stopping.set()
            keeper.join(self._http.timeout)
            pool.shutdown(wait=False)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if self._fatal is not None:
            raise self._fatal

    def close(self) -> None:
        """Closes the HTTP connections (once ``run`` has returned)."""
        self._http.close()
        self._poll_http.close()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- leasing ------------------------------------------------------------------------------

    def _lease_loop(self, kinds: list[str], pool: ThreadPoolExecutor) -> None:
        backoff = 0.5
        while not self._stopping.is_set():
            with self._slots:
                while len(self._running) >= self.concurrency and not self._stopping.is_set():
                    self._slots.wait()
                free = self.concurrency - len(self._running)
            if self._stopping.is_set():
                return
            try:
                tasks = self._lease(kinds, min(free, MAX_LEASE))
            except (BadRequest, Unauthorized, Forbidden, NotFound) as error:
                log.error("taskd refused to lease: %s", error)
                self._fatal = error
                self.stop()
                return
            except TaskplaneError as error:
                if self._stopping.is_set():
                    return
                log.warning("leasing failed (%s); again in %.1f s", error, backoff)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            backoff = 0.5
            for data in tasks:
                task = LeasedTask(self, data)
                with self._slots:
                    self._running[task.id] = task
                if self._stopping.is_set():
                    self._interrupt(task)
                else:
                    pool.submit(self._execute, task)

    def _lease(self, kinds: list[str], free: int) -> list[dict[str, Any]]:
        body = {
            "worker": self.id,
            "kinds": kinds,
            "queues": self.queues,
            "max": free,
            "wait_ms": WAIT_MS,
            "concurrency": self.concurrency,
        }

        # A fresh connection per poll, whose socket stop() shuts down to end the wait:
        # taskd drops a poll whose client has gone, so no task is taken after that.
        def trace(event: str, info: dict[str, Any]) -> None:
            if event == "connection.connect_tcp.complete":
                self._poll_socket = info["return_value"].get_extra_info("socket")
                if self._stopping.is_set():
                    self._abort_poll()

        answer = self._poll_http.request(
            "POST",
            "/api/v1/leases",
            body,
            timeout=WAIT_MS / 1000 + self._http.timeout,
            extensions={"trace": trace},
        )
        self._poll_socket = None
        return list(answer.get("tasks") or [])

    def _abort_poll(self) -> None:
        sock = self._poll_socket
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed: the poll has ended
                sock.shutdown(socket.SHUT_RDWR)

    # -- running ------------------------------------------------------------------------------

    def _execute(self, task: LeasedTask) -> None:
        handler = self._handlers.get(task.kind)
        action, body = "fail", {}
        try:
            if handler is None:
                raise Fail(f"no handler for kind '{task.kind}'")
            result = handler(task)
            try:  # fails here, and not in the report, if it is not JSON
                json.dumps(result, allow_nan=False)
            except (TypeError, ValueError) as error:
                raise Fail(f"the result is not JSON: {error}") from error
            action, body = "complete", {"result": result}
        except Cancelled:
            body = {"error": "cancelled", "retry": False}
        except Fail as error:
            body = {"error": error.message, "retry": error.retry}
        except Exception as error:
            body = {"error": f"{type(error).__name__}: {error}", "retry": True}
        if task._end():
            self._report(task, action, body)
        self._forget(task)

    def _report(self, task: LeasedTask, action: str, body: dict[str, Any]) -> None:
        """Sends the end of an attempt, again on network trouble until the lease expires."""
        self._send_logs(task)
        delay = 0.5
        while True:
            try:
                body = {"lease": task.lease, **body}
                self._http.request("POST", task_path(task.id, action), body)
                return
            except RETRYABLE as error:
                left = task._expires - time.monotonic()
                if left <= 0:
                    log.warning("task %s: end not reported (%s); lease expired", task.id, error)
                    return
                time.sleep(min(delay, left))
                delay = min(delay * 2, 5.0)
            except ApiError as error:
                if error.status == 409 or error.status == 404:
                    log.warning("task %s: lease lost, %s dropped (%s)", task.id, action, error)
                    return
                if action != "complete":
                    log.error("task %s: taskd refused the %s report: %s", task.id, action, error)
                    return
                action, body = "fail", {"error": f"result refused: {error.message}", "retry": False}

    def _interrupt(self, task: LeasedTask) -> None:
        """Gives a task back uncounted (the worker is shutting down)."""
        task._cancelled = True
        if task._end():
            self._send_logs(task)
            try:
                self._http.request(
                    "POST",
                    task_path(task.id, "fail"),
                    {"lease": task.lease, "error": "worker shut down", "interrupted": True},
                )
            except TaskplaneError as error:
                log.warning("task %s: not given back (%s); its lease will expire", task.id, error)
        self._forget(task)

    def _forget(self, task: LeasedTask) -> None:
        with self._slots:
            if self._running.get(task.id) is task:
                del self._running[task.id]
            self._slots.notify_all()

    def _drain(self) -> None:
        deadline = time.monotonic() + self.grace
        with self._slots:
            while self._running and self._signals < 2:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._slots.wait(min(left, TICK))
            left_over = list(self._running.values())
        for task in left_over:
            log.warning("task %s still running after %.1f s: interrupted", task.id, self.grace)
            self._interrupt(task)

    # -- heartbeats and logs ------------------------------------------------------------------

    def _keep(self) -> None:
        """Beats for every running task when due and sends their logs every 0.5 s."""
        while True:
            stopping = self._stopping.is_set()
            with self._slots:
                tasks = list(self._running.values())
            if stopping and not tasks:
                return
            for task in tasks:
                now = time.monotonic()
                if now >= task._next_beat and not task._ended:
                    self._beat(task)
                if now >= task._next_logs:
                    task._next_logs = now + LOG_EVERY
                    self._send_logs(task)
            time.sleep(TICK)

    def _beat(self, task: LeasedTask, progress: Any = None) -> None:
        task._next_beat = time.monotonic() + 1.0  # unless renewed below
        body: dict[str, Any] = {"lease": task.lease}
        if progress is not None:
            body["progress"] = progress
        try:
            answer = self._http.request("POST", task_path(task.id, "heartbeat"), body)
        except RETRYABLE as error:
            log.warning("task %s: heartbeat failed (%s)", task.id, error)
            return
        except ApiError as error:
            self._lost(task, "heartbeat", error)
            return
        task._renewed(answer.get("lease_expires_at"))
        if answer.get("cancel_requested"):
            task._cancelled = True

    def _send_logs(self, task: LeasedTask) -> None:
        with task._send_lock:
            while True:
                with task._lock:
                    lines, task._lines = task._lines[:MAX_LINES], task._lines[MAX_LINES:]
                if not lines:
                    return
                body = {"lease": task.lease, "lines": lines}
                try:
                    self._http.request("POST", task_path(task.id, "logs"), body)
                except RETRYABLE:
                    with task._lock:  # kept for the next round
                        task._lines[:0] = lines
                    return
                except ApiError as error:
                    self._lost(task, "logs", error)
                    return

    def _lost(self, task: LeasedTask, what: str, error: ApiError) -> None:
        if error.status in (404, 409):
            task._cancelled = True
            if task._end():
                log.warning("task %s: lease lost (%s: %s); result dropped", task.id, what, error)
        else:
            log.warning("task %s: %s refused: %s", task.id, what, error)

    # -- signals ------------------------------------------------------------------------------

    def _install_signals(self) -> dict[int, Any]:
        """SIGTERM/SIGINT start the drain (a second one ends the grace), main thread only.

        The handler only counts: taking a lock in a signal handler could deadlock."""
        if threading.current_thread() is not threading.main_thread():
            return {}

        def count(signum: int, frame: Any) -> None:
            self._signals += 1

        previous: dict[int, Any] = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.getsignal(sig)
            signal.signal(sig, count)
        return previous


def default_name() -> str:
    """``{hostname}-{pid}-{4 hex}``, with characters taskd refuses turned into '-'."""
    host = re.sub(r"[^A-Za-z0-9._:-]", "-", socket.gethostname()).lstrip("._:-") or "worker"
    return f"{host[:100]}-{os.getpid()}-{secrets.token_hex(2)}"
