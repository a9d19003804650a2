"""The workflow of test_limits_local.py, in a module of its own so the embedded runtime's worker
processes can import it (``tests.integration.limits_local_flow:wf``).

Its step holds a slot of a key of 2 for 0.3 s of real time and appends its start and end (wall
clock, ms) to the file named by ``$LIMITS_LOG``: the workflow's own record of its holders.
"""

from __future__ import annotations

import os
import time
from typing import Any

from stepchain import Concurrency, Workflow

LOG = "LIMITS_LOG"
LIMIT = 2

wf = Workflow("limits-local")


@wf.step(limits=Concurrency(LIMIT, key=lambda ctx, x: "shared", name="local", poll_s=0.2))
def hold(ctx: Any, n: int) -> int:
    start = time.time() * 1000
    time.sleep(0.3)
    with open(os.environ[LOG], "a") as f:
        f.write(f"{start} {time.time() * 1000}\n")
    return n
