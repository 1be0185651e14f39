"""The web dashboard in a real headless Chromium: a taskd per test (the real binary, embedded
SQLite in a temp dir) and a Selenium-driven browser that records console messages and every
request it makes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver

REPO = Path(__file__).resolve().parents[3]
SECRET = "a-test-secret-that-is-long-enough-for-hs256"
DESKTOP = (1280, 800)
PHONE = (390, 844)


def binary(name: str) -> Path:
    path = Path(
        os.environ.get(f"{name.upper()}_BIN") or REPO / "target" / "debug" / name
    )
    if not path.is_file():
        pytest.fail(
            f"no {name} at {path}: build it (cargo build) or set {name.upper()}_BIN"
        )
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def eventually(
    condition: Callable[[], Any], timeout: float = 15.0, what: str = ""
) -> Any:
    """Polls ``condition`` until it answers something true; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what or condition}")
        time.sleep(0.02)


class Taskd:
    """A taskd process on a free port, over a SQLite file that outlives restarts."""

    def __init__(self, tmp: Path, flags: list[str], auth: bool) -> None:
        self.tmp = tmp
        self.flags = flags
        self.auth = auth
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("TASKD_JWT_SECRET", None)
        if self.auth:
            env["TASKD_JWT_SECRET"] = SECRET
        return env

    def start(self) -> None:
        command = [
            str(binary("taskd")),
            "--listen", f"127.0.0.1:{self.port}",
            "--database", f"sqlite://{self.tmp / 'taskd.db'}",
            "--enable-shell",
            *self.flags,
        ]  # fmt: skip
        with open(self.tmp / "taskd.log", "ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=self.env()
            )

        def healthy() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                pytest.fail(
                    f"taskd exited with {self.process.returncode}:\n{self.log()}"
                )
            try:
                return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        eventually(healthy, 30, "taskd answers /health")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return (self.tmp / "taskd.log").read_text(errors="replace")

    def token(self, scopes: str, subject: str = "tester") -> str:
        out = subprocess.run(
            [str(binary("taskd")), "token", "issue", "--scope", scopes, "--subject", subject, "--ttl", "1h"],
            env=self.env(), capture_output=True, text=True, check=True,
        )  # fmt: skip
        return out.stdout.strip()

    def taskctl(self, *args: str, token: str | None = None) -> str:
        """Runs the real taskctl against this taskd; answers its stdout."""
        env = dict(os.environ, TASKCTL_SERVER=self.url, NO_COLOR="1")
        env.pop("TASKCTL_TOKEN", None)
        env.pop("TRACEPARENT", None)
        if token:
            env["TASKCTL_TOKEN"] = token
        out = subprocess.run(
            [str(binary("taskctl")), *args],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert out.returncode == 0, (
            f"taskctl {' '.join(args)} failed ({out.returncode}): {out.stderr}"
        )
        return out.stdout.strip()

    def api(
        self, method: str, path: str, token: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.request(
            method, f"{self.url}{path}", headers=headers, timeout=10, **kwargs
        )

    def task(self, task_id: str, token: str | None = None) -> dict[str, Any]:
        response = self.api("GET", f"/api/v1/tasks/{task_id}", token)
        assert response.status_code == 200, response.text
        task: dict[str, Any] = response.json()
        return task


@pytest.fixture
def start_taskd(tmp_path: Path) -> Iterator[Callable[..., Taskd]]:
    """Starts a taskd with extra flags (`auth=True`: HS256 tokens required)."""
    started: list[Taskd] = []

    def start(*flags: str, auth: bool = False) -> Taskd:
        tmp = tmp_path / f"taskd{len(started)}"
        tmp.mkdir()
        taskd = Taskd(tmp, list(flags), auth)
        started.append(taskd)
        return taskd

    yield start
    for taskd in started:
        taskd.stop()


@pytest.fixture
def taskd(start_taskd: Callable[..., Taskd]) -> Taskd:
    return start_taskd()


class Browser:
    """A headless Chromium that keeps its console messages and the URLs it requested."""

    def __init__(self, driver: WebDriver) -> None:
        self.driver = driver

    def size(self, width: int, height: int) -> None:
        self.driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {
                "width": width,
                "height": height,
                "deviceScaleFactor": 1,
                "mobile": width < 500,
            },
        )

    def scheme(self, dark: bool) -> None:
        value = "dark" if dark else "light"
        self.driver.execute_cdp_cmd(
            "Emulation.setEmulatedMedia",
            {"features": [{"name": "prefers-color-scheme", "value": value}]},
        )

    def console(self) -> list[dict[str, Any]]:
        """Console messages since the last call."""
        entries: list[dict[str, Any]] = self.driver.get_log("browser")
        return entries

    def requests(self) -> list[str]:
        """URLs requested since the last call (from the DevTools network events)."""
        urls = []
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message.get("method") == "Network.requestWillBeSent":
                urls.append(message["params"]["request"]["url"])
        return urls

    def clean_since_last(self, origin: str) -> None:
        """No console error or warning, and no request to anywhere but `origin`."""
        problems = [
            e for e in self.console() if e.get("level") in ("SEVERE", "WARNING")
        ]
        assert not problems, f"console: {problems}"
        outside = [u for u in self.requests() if not same_origin(u, origin)]
        assert not outside, f"requests to other origins: {outside}"


def same_origin(url: str, origin: str) -> bool:
    if url.startswith(("data:", "about:")):
        return True
    parts, home = urlsplit(url), urlsplit(origin)
    return (parts.scheme, parts.netloc) == (home.scheme, home.netloc)


@pytest.fixture
def browser() -> Iterator[Browser]:
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--hide-scrollbars", "--disable-extensions", "--no-first-run"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability(
        "goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"}
    )
    service = Service(os.environ.get("CHROMEDRIVER_BIN", "/usr/bin/chromedriver"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    b = Browser(driver)
    b.size(*DESKTOP)
    try:
        yield b
    finally:
        driver.quit()
