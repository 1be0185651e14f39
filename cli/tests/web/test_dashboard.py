"""The dashboard, driven in headless Chromium against the real taskd and taskctl."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement

from conftest import DESKTOP, PHONE, REPO, Browser, Taskd, eventually

WORKFLOW = """
name: release
steps:
  - id: build
    kind: echo
  - id: unit-tests
    kind: echo
    needs: [build]
  - id: lint
    kind: echo
    needs: [build]
  - id: package
    kind: shell
    payload: {argv: ["sh", "-c", "echo packaging; exit 1"]}
    max_attempts: 1
    needs: [unit-tests, lint]
  - id: publish
    kind: echo
    needs: [package]
"""


def status_of(taskd: Taskd, task_id: str, token: str | None = None) -> str:
    status: str = taskd.task(task_id, token)["status"]
    return status


def seed(taskd: Taskd, token: str | None = None) -> dict[str, str]:
    """Tasks in most states, a dead letter, a workflow, a schedule, a paused queue."""

    def ctl(*args: str) -> str:
        return taskd.taskctl(*args, token=token)

    for n in range(3):
        ctl("submit", "echo", "--payload", f'{{"n": {n}}}', "--label", "team=ops", "-q")
    dead = ctl(
        "submit",
        "shell",
        "--max-attempts",
        "1",
        "-q",
        "--",
        "sh",
        "-c",
        "echo doomed; exit 3",
    )
    parked = ctl("submit", "echo", "--queue", "parked", "-q")
    ctl("submit", "echo", "--queue", "orphan", "-q")  # no worker takes this queue
    flow_file = taskd.tmp / "release.yaml"
    flow_file.write_text(WORKFLOW)
    flow = ctl("workflow", "run", "-f", str(flow_file), "-o", "id")
    ctl(
        "schedule",
        "create",
        "nightly",
        "--cron",
        "0 2 * * *",
        "echo",
        "--payload",
        '{"x": 1}',
    )
    ctl("queues", "pause", "parked")
    eventually(
        lambda: status_of(taskd, dead, token) == "failed", what="the shell task fails"
    )
    eventually(
        lambda: (
            taskd.api("GET", f"/api/v1/workflows/{flow}", token).json()["status"]
            == "failed"
        ),
        what="the workflow ends",
    )
    return {"dead": dead, "parked": parked, "workflow": flow}


def open_page(browser: Browser, url: str) -> None:
    """Loads a page and waits until its live updates are connected (pages that follow events)."""
    browser.driver.get(url)
    eventually(
        lambda: browser.driver.execute_script(
            "return document.readyState === 'complete' && "
            "(document.body.dataset.events === undefined || document.body.dataset.connected === '1')"
        ),
        what=f"{url} loaded and live",
    )


def h1(browser: Browser) -> str:
    text: str = browser.driver.find_element(By.TAG_NAME, "h1").text
    return text


def text(browser: Browser, css: str) -> str:
    """An element's text, read in one step (a live region may be swapped at any time)."""
    value: str = browser.driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.textContent.trim() : ''",
        css,
    )
    return value


def actions(browser: Browser) -> list[WebElement]:
    return browser.driver.find_elements(By.CSS_SELECTOR, "button.act")


def action(browser: Browser, label: str) -> WebElement:
    found = [b for b in actions(browser) if b.text.strip() == label]
    assert found, f"no {label} button among {[b.text for b in actions(browser)]}"
    return found[0]


def confirm(browser: Browser) -> None:
    dialog = browser.driver.find_element(By.ID, "confirm")
    eventually(dialog.is_displayed, 5, "the confirmation opens")
    dialog.find_element(By.CSS_SELECTOR, "button[value='ok']").click()


def mark_page(browser: Browser) -> None:
    """Marks the loaded document: a reload would lose the mark."""
    browser.driver.execute_script("window.__stayed = true")


def same_page(browser: Browser) -> bool:
    return bool(browser.driver.execute_script("return window.__stayed === true"))


def test_every_page_loads_without_errors_or_outside_requests_at_both_widths(
    taskd: Taskd, browser: Browser
) -> None:
    ids = seed(taskd)
    pages = {
        "/ui/": "Overview",
        "/ui/tasks": "Tasks",
        "/ui/tasks?status=failed&queue=default&label=team%3Dops": "Tasks",
        f"/ui/tasks/{ids['dead']}": f"Task …{ids['dead'][-8:]}",
        "/ui/dlq": "Dead letters",
        "/ui/queues": "Queues",
        "/ui/schedules": "Schedules",
        "/ui/workflows": "Workflows",
        f"/ui/workflows/{ids['workflow']}": "Workflow release",
        "/ui/audit": "Audit log",
    }
    for width, height in (DESKTOP, PHONE):
        browser.size(width, height)
        for path, title in pages.items():
            print("opening", width, path, flush=True)
            open_page(browser, taskd.url + path)
            assert h1(browser) == title, path
            browser.clean_since_last(taskd.url)
            overflow = browser.driver.execute_script(
                "return document.documentElement.scrollWidth - window.innerWidth"
            )
            assert overflow <= 0, (
                f"{path} is {overflow}px wider than a {width}px window"
            )
    # What the pages show, from the seed.
    open_page(browser, f"{taskd.url}/ui/dlq")
    assert ids["dead"] in browser.driver.page_source
    open_page(browser, f"{taskd.url}/ui/queues")
    row = browser.driver.find_element(By.XPATH, "//tr[td/a[text()='parked']]")
    assert "paused" in row.text
    row = browser.driver.find_element(By.XPATH, "//tr[td/a[text()='orphan']]")
    assert "no worker" in row.text
    open_page(browser, f"{taskd.url}/ui/workflows/{ids['workflow']}")
    nodes = browser.driver.find_elements(By.CSS_SELECTOR, "svg.dag a.node")
    status = {n.get_attribute("data-step"): n.get_attribute("class") for n in nodes}
    assert (
        status["build"] == "node st-succeeded" and status["package"] == "node st-failed"
    ), status
    assert status["publish"] == "node st-cancelled", status
    open_page(browser, f"{taskd.url}/ui/audit")
    assert "queue.pause" in browser.driver.page_source
    # Unknown pages and ids answer a page that says so.
    for path, status_text in (
        ("/ui/nowhere", "There is no dashboard page"),
        ("/ui/tasks/not-an-id", "not a task id"),
    ):
        browser.driver.get(taskd.url + path)
        assert status_text in browser.driver.page_source
    # Those two answered 404 and 400, which the console reports; nothing else may be there.
    refused = [e["message"] for e in browser.console()]
    assert len(refused) == 2 and all("Failed to load resource" in m for m in refused), (
        refused
    )
    browser.clean_since_last(taskd.url)


def test_a_submitted_task_appears_on_the_overview_and_the_tasks_page_without_a_reload(
    taskd: Taskd, browser: Browser
) -> None:
    seed(taskd)
    open_page(browser, f"{taskd.url}/ui/")
    # Layout shifts are recorded from here on (CLS, as Chrome reports them).
    browser.driver.execute_script(
        "window.__shift = 0; new PerformanceObserver((list) => { for (const e of list.getEntries())"
        " { if (!e.hadRecentInput) window.__shift += e.value; } }).observe({type: 'layout-shift'});"
    )
    mark_page(browser)
    queued = int(
        browser.driver.find_element(
            By.CSS_SELECTOR, "a.card[href$='status=queued'] .count"
        ).text
    )

    def ready_in(queue: str) -> str | None:
        rows = browser.driver.find_elements(
            By.XPATH, f"//section[@id='queues']//tr[td/a[text()='{queue}']]"
        )
        return rows[0].find_elements(By.TAG_NAME, "td")[1].text if rows else None

    task_id = taskd.taskctl("submit", "echo", "--queue", "backlog", "-q")
    submitted = time.monotonic()
    eventually(
        lambda: ready_in("backlog") == "1", 1.0, "the new queue's row on the overview"
    )
    seen = time.monotonic() - submitted
    count = browser.driver.find_element(
        By.CSS_SELECTOR, "a.card[href$='status=queued'] .count"
    ).text
    assert int(count) == queued + 1
    assert same_page(browser), "the overview reloaded"
    shift = browser.driver.execute_script("return window.__shift")
    assert shift < 0.05, f"layout shifted by {shift} as data arrived"

    open_page(browser, f"{taskd.url}/ui/tasks")
    mark_page(browser)
    second = taskd.taskctl("submit", "echo", "--queue", "backlog", "-q")
    eventually(
        lambda: browser.driver.find_elements(
            By.CSS_SELECTOR, f"tr[data-task='{second}']"
        ),
        1.0,
        "the new task's row on the tasks page",
    )
    assert same_page(browser), "the tasks page reloaded"
    rows = browser.driver.find_elements(By.CSS_SELECTOR, "table.tasks tbody tr")
    assert rows[0].get_attribute("data-task") == second, "newest first"
    assert browser.driver.find_elements(By.CSS_SELECTOR, f"tr[data-task='{task_id}']")
    print(f"overview showed the task {seen * 1000:.0f} ms after the submit returned")
    browser.clean_since_last(taskd.url)


def test_a_running_shell_tasks_log_lines_appear_live(
    taskd: Taskd, browser: Browser
) -> None:
    go = taskd.tmp / "go"
    script = f"echo first line; while [ ! -e {go} ]; do sleep 0.05; done; echo second line; echo warn >&2"
    task_id = taskd.taskctl("submit", "shell", "-q", "--", "sh", "-c", script)
    open_page(browser, f"{taskd.url}/ui/tasks/{task_id}")
    mark_page(browser)
    log = browser.driver.find_element(By.ID, "log")
    eventually(lambda: "first line" in log.text, 15, "the first line")
    assert "second line" not in log.text
    go.touch()
    eventually(
        lambda: "second line" in log.text and "warn" in log.text, 15, "the lines after"
    )
    stderr = browser.driver.find_element(By.CSS_SELECTOR, "#log .s-stderr")
    assert stderr.text == "warn"
    eventually(
        lambda: text(browser, "#head .badge") == "succeeded",
        15,
        "the status turns succeeded",
    )
    assert same_page(browser)
    assert log.text.count("first line") == 1, "no line twice"
    browser.clean_since_last(taskd.url)


def test_cancel_and_retry_from_the_page_change_the_task(
    taskd: Taskd, browser: Browser
) -> None:
    task_id = taskd.taskctl("submit", "sleep", "--payload", '{"ms": 600000}', "-q")
    eventually(lambda: status_of(taskd, task_id) == "running", what="the task runs")
    open_page(browser, f"{taskd.url}/ui/tasks/{task_id}")
    mark_page(browser)
    # Dismissing the confirmation does nothing.
    action(browser, "Cancel").click()
    dialog = browser.driver.find_element(By.ID, "confirm")
    eventually(dialog.is_displayed, 5, "the confirmation opens")
    dialog.find_element(By.CSS_SELECTOR, "button[value='cancel']").click()
    eventually(lambda: not dialog.is_displayed(), 5, "the confirmation closes")
    assert status_of(taskd, task_id) == "running"

    action(browser, "Cancel").click()
    confirm(browser)
    eventually(
        lambda: status_of(taskd, task_id) == "cancelled",
        what="cancelled through the page",
    )
    eventually(
        lambda: text(browser, "#head .badge") == "cancelled",
        what="the page shows it",
    )
    action(browser, "Retry").click()
    confirm(browser)
    eventually(
        lambda: status_of(taskd, task_id) in ("queued", "running"),
        what="retried through the page",
    )
    eventually(
        lambda: "Cancel" in text(browser, "#head .actions"), what="Cancel offered again"
    )
    assert same_page(browser)
    audit = taskd.api("GET", "/api/v1/audit").json()["entries"]
    assert [e["action"] for e in audit if e["target"] == task_id][:2] == [
        "retry",
        "cancel",
    ]
    browser.clean_since_last(taskd.url)


def sign_in(browser: Browser, token: str) -> None:
    field = browser.driver.find_element(By.NAME, "token")
    field.clear()
    field.send_keys(token)
    field.send_keys(Keys.ENTER)


def test_with_a_read_only_token_actions_are_absent_and_the_api_refuses_them(
    start_taskd: Any, browser: Browser
) -> None:
    taskd: Taskd = start_taskd(auth=True)
    admin = taskd.token("admin", "root")
    reader = taskd.token("tasks.read", "viewer")
    task_id = taskd.taskctl(
        "submit", "sleep", "--payload", '{"ms": 600000}', "-q", token=admin
    )
    eventually(
        lambda: status_of(taskd, task_id, admin) == "running", what="the task runs"
    )

    browser.driver.get(f"{taskd.url}/ui/tasks/{task_id}")
    eventually(
        lambda: "/ui/login" in browser.driver.current_url, what="sent to sign in"
    )
    sign_in(browser, "not-a-token")
    error = browser.driver.find_element(By.ID, "login-error")
    eventually(error.is_displayed, 5, "a bad token is refused")
    sign_in(browser, reader)
    eventually(
        lambda: browser.driver.current_url == f"{taskd.url}/ui/tasks/{task_id}",
        what="back to the task",
    )
    open_page(browser, f"{taskd.url}/ui/tasks/{task_id}")
    assert "viewer" in browser.driver.find_element(By.CSS_SELECTOR, ".who").text
    assert actions(browser) == []
    # The token is in no URL and no cookie a script can read.
    assert reader not in browser.driver.current_url
    assert browser.driver.execute_script("return document.cookie") == ""
    open_page(browser, f"{taskd.url}/ui/tasks")
    assert not browser.driver.find_elements(By.ID, "submit-task")
    # The API refuses the action the page no longer offers.
    answer = browser.driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        f"fetch('/api/v1/tasks/{task_id}/cancel', {{method: 'POST'}})"
        ".then(async (r) => done([r.status, await r.text()]));"
    )
    assert answer[0] == 403 and "tasks.write" in answer[1], answer
    assert status_of(taskd, task_id, admin) == "running"
    browser.driver.get(f"{taskd.url}/ui/audit")
    assert "admin scope" in browser.driver.page_source
    # The refusals above (the bad token's 401, the cancel's and the audit page's 403) are
    # in the console; nothing else.
    refused = [e["message"] for e in browser.console()]
    assert len(refused) == 3 and all(("401" in m or "403" in m) for m in refused), (
        refused
    )

    browser.driver.find_element(By.CSS_SELECTOR, "[data-logout]").click()
    eventually(lambda: "/ui/login" in browser.driver.current_url, what="signed out")
    browser.driver.get(f"{taskd.url}/ui/")
    eventually(
        lambda: "/ui/login" in browser.driver.current_url, what="the cookie is gone"
    )
    sign_in(browser, admin)
    eventually(
        lambda: browser.driver.current_url == f"{taskd.url}/ui/",
        what="signed in as admin",
    )
    open_page(browser, f"{taskd.url}/ui/tasks/{task_id}")
    assert [b.text for b in actions(browser)] == ["Cancel"]
    open_page(browser, f"{taskd.url}/ui/audit")
    assert h1(browser) == "Audit log"
    browser.clean_since_last(taskd.url)


def test_ui_readonly_hides_every_action_and_no_ui_turns_the_dashboard_off(
    start_taskd: Any, browser: Browser
) -> None:
    taskd: Taskd = start_taskd("--ui-readonly")
    ids = seed(taskd)
    for path in ("/ui/", f"/ui/tasks/{ids['dead']}", "/ui/dlq", "/ui/queues", "/ui/schedules",
                 f"/ui/workflows/{ids['workflow']}"):  # fmt: skip
        open_page(browser, taskd.url + path)
        assert actions(browser) == [], path
        assert "read-only" in browser.driver.find_element(By.CSS_SELECTOR, ".who").text
    open_page(browser, f"{taskd.url}/ui/tasks")
    assert not browser.driver.find_elements(By.ID, "submit-task")
    # The API itself still takes what its callers may do.
    taskd.taskctl("retry", ids["dead"])
    browser.clean_since_last(taskd.url)

    off: Taskd = start_taskd("--no-ui")
    response = off.api("GET", "/ui/")
    assert (
        response.status_code == 404
        and response.json()["error"]["code"] == "route_not_found"
    )
    assert off.api("GET", "/api/v1/tasks").status_code == 200


def test_a_lost_connection_shows_a_banner_and_the_page_recovers(
    taskd: Taskd, browser: Browser
) -> None:
    open_page(browser, f"{taskd.url}/ui/")
    mark_page(browser)
    banner = browser.driver.find_element(By.ID, "banner")
    assert not banner.is_displayed()
    taskd.stop()
    eventually(banner.is_displayed, 20, "the banner while taskd is down")
    taskd.start()
    eventually(
        lambda: not banner.is_displayed(), 30, "the banner goes once taskd is back"
    )
    taskd.taskctl("submit", "echo", "--queue", "after-restart", "-q")
    eventually(
        lambda: browser.driver.find_elements(
            By.XPATH, "//section[@id='queues']//a[text()='after-restart']"
        ),
        15,
        "live updates after the restart",
    )
    assert same_page(browser)
    # Console errors are expected while taskd was down (failed requests); none about the page.
    problems = [e for e in browser.console() if "ERR_CONNECTION_REFUSED" not in e["message"]
                and "Failed to load resource" not in e["message"]]  # fmt: skip
    assert not problems, problems


def test_submit_from_the_form(taskd: Taskd, browser: Browser) -> None:
    open_page(browser, f"{taskd.url}/ui/tasks")
    browser.driver.find_element(By.CSS_SELECTOR, "#new summary").click()
    form = browser.driver.find_element(By.ID, "submit-task")
    form.find_element(
        By.CSS_SELECTOR, "select[name='kind'] option[value='echo']"
    ).click()
    payload = form.find_element(By.NAME, "payload")
    payload.clear()
    payload.send_keys('{"msg": "not json"')
    form.find_element(By.NAME, "labels").send_keys("via=ui")
    form.find_element(By.CSS_SELECTOR, "button[type='submit']").click()
    error = browser.driver.find_element(By.ID, "submit-error")
    eventually(
        lambda: "not JSON" in error.text, 5, "a bad payload is refused in the page"
    )
    payload.clear()
    payload.send_keys('{"msg": "from the form"}')
    form.find_element(By.CSS_SELECTOR, "button[type='submit']").click()
    assert (
        text(browser, "#confirm-text") == "Submit a task of kind echo to queue default?"
    )
    confirm(browser)
    eventually(
        lambda: "/ui/tasks/0" in browser.driver.current_url, 10, "the new task's page"
    )
    task_id = browser.driver.current_url.rsplit("/", 1)[1]
    task = taskd.task(task_id)
    assert task["kind"] == "echo" and task["payload"] == {"msg": "from the form"}
    assert task["labels"] == {"via": "ui"}
    browser.clean_since_last(taskd.url)


def test_dead_letters_and_queues_are_driven_from_their_pages(
    taskd: Taskd, browser: Browser
) -> None:
    ids = seed(taskd)
    dead = taskd.api("GET", "/api/v1/tasks?status=failed").json()["tasks"]
    assert ids["dead"] in [t["id"] for t in dead]
    open_page(browser, f"{taskd.url}/ui/dlq")
    # The purge counts what it deletes: the shell task, not the workflow's failed step.
    purge = action(browser, "Purge all matching").get_attribute("data-confirm")
    assert "(1 now.)" in purge and "workflow steps stay" in purge, purge
    action(browser, "Retry all matching").click()
    confirm(browser)
    toast = browser.driver.find_element(By.ID, "toast")
    eventually(lambda: f"done ({len(dead)})" in toast.text, 10, "the retry's count")
    audit = taskd.api("GET", "/api/v1/audit?action=dlq").json()["entries"]
    assert audit[0]["action"] == "dlq.retry", audit
    open_page(browser, f"{taskd.url}/ui/queues")

    def press(label: str) -> None:
        # Found and clicked in one step: the live table may be swapped in between.
        clicked = browser.driver.execute_script(
            "const row = [...document.querySelectorAll('#queues tr')].find("
            "(r) => r.querySelector('a') && r.querySelector('a').textContent === 'default');"
            "const button = row && [...row.querySelectorAll('button')].find((b) => b.textContent === arguments[0]);"
            "if (button) button.click(); return !!button;",
            label,
        )
        assert clicked, f"no {label} button for queue default"

    press("Pause")
    confirm(browser)

    def paused() -> bool:
        queues = taskd.api("GET", "/api/v1/queues").json()["queues"]
        return any(q["queue"] == "default" and q["paused"] for q in queues)

    eventually(paused, 10, "the queue paused through the page")
    eventually(
        lambda: browser.driver.execute_script(
            "return [...document.querySelectorAll('#queues tr')].some("
            "(r) => r.textContent.includes('default') && r.textContent.includes('paused'))"
        ),
        10,
        "the page shows it",
    )
    press("Resume")
    confirm(browser)
    eventually(lambda: not paused(), 10, "resumed")
    open_page(browser, f"{taskd.url}/ui/schedules")
    action(browser, "Run now").click()
    confirm(browser)
    eventually(lambda: "Run now: done" in text(browser, "#toast"), 10, "the trigger")
    history = taskd.taskctl("schedule", "history", "nightly", "-o", "id")
    assert history.strip(), "the schedule fired"
    browser.clean_since_last(taskd.url)


def test_the_keyboard_reaches_search_and_the_task_pages(
    taskd: Taskd, browser: Browser
) -> None:
    task_id = taskd.taskctl("submit", "echo", "-q")
    open_page(browser, f"{taskd.url}/ui/tasks")
    page = browser.driver.find_element(By.TAG_NAME, "body")
    page.send_keys(Keys.TAB)
    active = browser.driver.switch_to.active_element
    assert active.text == "Skip to content"
    browser.driver.execute_script("document.activeElement.blur()")
    browser.driver.find_element(By.TAG_NAME, "body").send_keys("/")
    search = browser.driver.switch_to.active_element
    assert search.get_attribute("name") == "id"
    search.send_keys(task_id, Keys.ENTER)
    eventually(
        lambda: browser.driver.current_url.endswith(f"/ui/tasks/{task_id}"),
        10,
        "search by id",
    )
    browser.clean_since_last(taskd.url)


def test_screenshots_of_the_overview_a_task_and_a_workflow(
    taskd: Taskd, browser: Browser, tmp_path: Path
) -> None:
    """Renders the README's pictures; UPDATE_SCREENSHOTS=1 writes them into docs/screenshots."""
    ids = seed(taskd)
    for n in range(20):
        taskd.taskctl(
            "submit",
            "echo",
            "--queue",
            "emails" if n % 2 else "default",
            "--label",
            f"batch={n % 3}",
            "-q",
        )
    script = (
        "for host in web-1 web-2 web-3; do echo rotating logs on $host: ok; sleep 0.2; done; "
        "echo web-4: connection refused, will retry >&2; sleep 600"
    )
    runner = taskd.taskctl(
        "submit", "shell", "--label", "team=ops", "-q", "--", "sh", "-c", script
    )
    eventually(
        lambda: status_of(taskd, runner) == "running", what="the shell task runs"
    )
    shots = {
        "overview": "/ui/",
        "task": f"/ui/tasks/{runner}",
        "workflow": f"/ui/workflows/{ids['workflow']}",
    }
    out = tmp_path / "shots"
    out.mkdir()
    for (width, height), scheme in ((DESKTOP, "light"), (PHONE, "dark")):
        browser.size(width, height)
        browser.scheme(scheme == "dark")
        for name, path in shots.items():
            open_page(browser, taskd.url + path)
            if name == "task":
                eventually(
                    lambda: "will retry" in text(browser, "#log"),
                    10,
                    "the log shown",
                )
            file = out / f"{name}-{'desktop' if width > 500 else 'phone'}.png"
            assert browser.driver.save_screenshot(str(file))
            assert file.stat().st_size > 10_000, f"{file} is nearly empty"
    taskd.taskctl("cancel", runner)
    browser.clean_since_last(taskd.url)
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        target = REPO / "docs" / "screenshots"
        target.mkdir(exist_ok=True)
        for file in out.iterdir():
            shutil.copy(file, target / file.name)
