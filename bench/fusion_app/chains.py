"""The two chains of bench/fusion_localstack.py, deployed side by side in ONE stack: the same 8
trivial steps, ``chain-fused`` defined with ``fuse=True`` (step fusion), ``chain-plain`` without.
Their steps have the same settings, so one worker function serves both (as in a real app)."""

from __future__ import annotations

from typing import Any

from stepchain import Workflow

STEPS = 8  # the template maps every node id to its queue in one env var (STEPCHAIN_QUEUES): 4 KB


def _bump(ctx: Any, x: dict[str, Any]) -> dict[str, Any]:
    return {"n": int(x.get("n", 0)) + 1}


def chain(name: str, prefix: str, *, fuse: bool) -> Workflow:
    wf = Workflow(name, fuse=fuse)
    for i in range(STEPS):
        wf.step(name=f"{prefix}{i:02d}", timeout_s=30)(_bump)
    return wf


fused = chain("chain-fused", "f", fuse=True)
plain = chain("chain-plain", "p", fuse=False)
