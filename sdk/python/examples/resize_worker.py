"""A worker for the kind `resize`: doubles `w` and `h` of its payload.

    taskd --kinds resize &
    python examples/resize_worker.py          # TASKPLANE_SERVER, TASKPLANE_TOKEN if set
    taskctl submit resize --payload '{"w": 640, "h": 480}'

Stop it with Ctrl-C or SIGTERM: it stops leasing, lets running tasks finish for up to
30 s and gives the others back to the queue.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from taskplane import Fail, LeasedTask, Worker

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise

worker = Worker(
    os.environ.get("TASKPLANE_SERVER", "http://127.0.0.1:7070"),
    token=os.environ.get("TASKPLANE_TOKEN"),
    concurrency=4,
)


@worker.handler("resize")
def resize(task: LeasedTask) -> dict[str, Any]:
    payload = task.payload if isinstance(task.payload, dict) else {}
    try:
        w, h = int(payload["w"]), int(payload["h"])
    except (KeyError, TypeError, ValueError) as error:
        # A payload that is wrong stays wrong: no retry.
        raise Fail(f"payload needs integer w and h: {error!r}") from error
    task.log(f"resizing {w}x{h} to {2 * w}x{2 * h} (attempt {task.attempt})")
    return {"w": 2 * w, "h": 2 * h}


if __name__ == "__main__":
    with worker:
        worker.run()
