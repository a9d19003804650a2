"""Workflows the live-view tests run (importable by worker processes as ``tests.ui.ui_flows``)."""

from __future__ import annotations

import os
import time
from typing import Any

from stepchain import StepContext, TerminalError, Workflow

#: each slow step sleeps this long (real time on the embedded runtime), so a browser sees it RUNNING
SLOW_S = float(os.environ.get("UI_TEST_SLOW_S", "1.5"))

slow = Workflow("slow", stream_lifecycle=True)


@slow.step()
def gather(ctx: StepContext, doc: Any) -> list[int]:
    def row(i: int) -> int:  # each item emits: its flush carries the each progress before it
        time.sleep(SLOW_S / 3)
        ctx.emit("gathered", {"row": i})
        return i

    ctx.emit("gathering", {"question": doc.get("question") if isinstance(doc, dict) else None})
    return ctx.each([1, 2, 3], row, name="rows")


@slow.map()
def square(ctx: StepContext, n: int) -> int:
    time.sleep(SLOW_S / 3)
    return n * n


slow.wait_for_event("approval", timeout_s=600)


@slow.step()
def report(ctx: StepContext, decision: Any) -> dict[str, Any]:
    time.sleep(SLOW_S)
    if isinstance(decision, dict) and decision.get("fail"):
        raise TerminalError("asked to fail")
    return {"decision": decision}


kid = Workflow("kid")


@kid.step()
def work(ctx: StepContext, doc: Any) -> dict[str, Any]:
    return {"kid": doc}


#: the parent's last step fails while this is set (the browser test redrives it after clearing it)
FAIL_FINISH = {"on": False}

parent = Workflow("parent")


@parent.step()
def begin(ctx: StepContext, doc: Any) -> Any:
    return doc


parent.parallel({"left": kid, "right": kid}, name="both")


@parent.step()
def finish(ctx: StepContext, branches: dict[str, Any]) -> dict[str, Any]:
    if FAIL_FINISH["on"]:
        raise TerminalError("finish was told to fail")
    return {"branches": sorted(branches)}
