"""A looping agent with a typed durable state and an approval wait each turn (the fork tests).

``think`` makes one tool call per loop iteration (a ``ctx.once`` effect counted in ``TOOL_CALLS``)
and records it in the state; ``approval`` waits for an event merged into the state; ``review``
loops back to ``think`` until ``TURNS`` turns are done. A step that finds a state that does not
match its iteration raises a TerminalError, so a fork that copied too much or too little, or lost
its edited state, fails its run.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Annotated, Any

from pydantic import BaseModel

from stepchain import END, TerminalError, Workflow, goto
from stepchain.define.state import add, append
from stepchain.testing import InjectedCrash

TURNS = 4
TOOL_CALLS: Counter[tuple[str, int]] = Counter()  # (run id, iteration) -> real tool executions


class LoopState(BaseModel):
    task: str = ""
    tone: str = "plain"
    notes: Annotated[list[str], append] = []
    turns: Annotated[int, add] = 0
    approvals: Annotated[list[str], append] = []


agent = Workflow("fork-agent", state=LoopState, max_iterations=TURNS + 1)


@agent.step()
def plan(ctx: Any, task: str) -> str:
    ctx.update_state(task=task)
    return "planned"


@agent.step()
def think(ctx: Any, _: Any) -> str:
    s = ctx.state
    if s.turns != ctx.iteration or len(s.notes) != ctx.iteration or len(s.approvals) != ctx.iteration:
        raise TerminalError(f"think in iteration {ctx.iteration} saw state {s!r}")

    def tool() -> str:
        TOOL_CALLS[(ctx.run_id, ctx.iteration)] += 1
        return f"{s.task}-{s.tone}-{ctx.iteration}"

    result = ctx.once("tool", tool)
    ctx.update_state(notes=[result], turns=1)
    return result


agent.wait_for_event("approve", into_state=True, timeout_s=3600)


@agent.step(routes=("think", END))
def review(ctx: Any, payload: Any) -> Any:
    s = ctx.state
    if s.turns != ctx.iteration + 1 or payload.get("approvals") != s.approvals[-1:]:
        raise TerminalError(f"review in iteration {ctx.iteration} saw state {s!r} and payload {payload!r}")
    if s.turns >= TURNS:
        return goto(END, s.model_dump())
    return goto("think", None)


def notes(task: str, tones: list[str]) -> list[str]:
    return [f"{task}-{tone}-{i}" for i, tone in enumerate(tones)]


def drive(h: Any, run_id: str) -> str:
    """Approve each turn until the run ends. A crash inside an API call is recovered as a deployment
    does: time passes and the sweeper finishes the call's work."""
    for _ in range(8 * TURNS):
        h.run(run_id)
        if h.status(run_id) in ("SUCCEEDED", "FAILED", "CANCELLED"):
            break
        waiting = h.waiting_for(run_id)
        if waiting is not None:
            it = waiting["iteration"]
            with contextlib.suppress(InjectedCrash):  # the sweeper finishes the delivery
                h.send_event(run_id, "approve", {"approvals": [f"ok-{it}"]}, iteration=it)
        h.advance(600)
        h.sweep()
    return str(h.status(run_id))
