"""The workflow `bench/kill_resume.py` kills workers in: one long step of short ctx.each items."""

from __future__ import annotations

import os
import time
from typing import Any

from stepchain import StepContext, Workflow

ITEM_S = float(os.environ.get("KILL_RESUME_ITEM_S", "0.1"))

wf = Workflow("kill-resume")


@wf.step(timeout_s=60)
def slow(ctx: StepContext, x: dict[str, Any]) -> list[int]:
    def one(i: int) -> int:
        time.sleep(ITEM_S)
        return i

    return ctx.each(list(range(int(x["items"]))), one)


@wf.step()
def done(ctx: StepContext, xs: list[int]) -> int:
    return len(xs)
