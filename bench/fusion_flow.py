"""The workflows bench/fusion_bench.py runs on the embedded runtime: one step whose ctx.each loop
checkpoints ITEMS trivial items, then STEPS trivial steps (one function): ``wf`` without fusion,
``fused`` the same chain defined with ``Workflow(fuse=50)``."""

from __future__ import annotations

from typing import Any

from stepchain import StepContext, Workflow

ITEMS = STEPS = 40


def loop(ctx: StepContext, x: Any) -> int:
    return len(ctx.each(list(range(ITEMS)), lambda i: i))


def bump(ctx: StepContext, n: int) -> int:
    return n + 1


def build(name: str, fuse: bool | int) -> Workflow:
    flow = Workflow(name, fuse=fuse)
    flow.step(name="loop", timeout_s=1)(loop)
    for i in range(STEPS):
        flow.step(name=f"s{i}", timeout_s=1)(bump)
    return flow


wf = build("fusion-gap", False)
fused = build("fusion-gap-fused", 50)
