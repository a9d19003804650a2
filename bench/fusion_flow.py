"""The workflow bench/fusion_bench.py runs on the embedded runtime: one step whose ctx.each loop
checkpoints ITEMS trivial items, then STEPS trivial steps (one function: they fuse when fusion is on)."""

from __future__ import annotations

from typing import Any

from stepchain import StepContext, Workflow

ITEMS = STEPS = 40

wf = Workflow("fusion-gap")


@wf.step(name="loop", timeout_s=1)
def loop(ctx: StepContext, x: Any) -> int:
    return len(ctx.each(list(range(ITEMS)), lambda i: i))


def bump(ctx: StepContext, n: int) -> int:
    return n + 1


for _i in range(STEPS):
    wf.step(name=f"s{_i}", timeout_s=1)(bump)
