"""The workflow of test_harness_parity.py, in a module of its own so the embedded runtime's
worker processes can import it (``tests.integration.harness_parity_flow:wf``).

Its last step fails while the file named by ``$PARITY_FAIL_FLAG`` exists (a flag worker processes
see too). Timings are short because the embedded runtime runs in real time.
"""

from __future__ import annotations

import os
from typing import Any

from stepchain import TerminalError, Workflow

WAIT_TIMEOUT_S = 8  # more than a crash costs (budget 3 s + lease grace 2 s + 1 s)
SLEEP_S = 2
BUDGET_MS = 3000
FAIL_FLAG = "PARITY_FAIL_FLAG"

wf = Workflow("parity")


@wf.step()
def split(ctx: Any, n: int) -> list[int]:
    return list(range(n))


@wf.map()
def square(ctx: Any, i: int) -> int:
    return i * i


wf.wait_for_event("go", timeout_s=WAIT_TIMEOUT_S)
wf.sleep(SLEEP_S)


@wf.step()
def total(ctx: Any, go: Any) -> dict[str, Any]:
    flag = os.environ.get(FAIL_FLAG)
    if flag and os.path.exists(flag):
        raise TerminalError("the total is refused")
    return {"go": go, "sum": sum(ctx.output_of("square"))}
