"""An agent with a typed durable state that loops through an approval wait (the state tests).

``act`` runs one tool call per loop iteration (a ``ctx.once`` effect, counted in ``TOOL_CALLS``)
and records it in the state; ``approval`` waits for an event whose payload merges into the state;
``review`` gets only the event's payload as input, reads everything else from ``ctx.state`` and
loops back to ``act`` until ``TURNS`` turns are done. A step that finds a wrong state raises a
TerminalError (the run fails), so a lost or doubled state update cannot go unnoticed.
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any

from pydantic import BaseModel

from stepchain import END, TerminalError, Workflow, goto
from stepchain.define.state import add, append

TURNS = 2
TOOL_CALLS: Counter[tuple[str, int]] = Counter()  # (run id, iteration) -> real tool executions


class AgentState(BaseModel):
    task: str = ""
    notes: Annotated[list[str], append] = []
    turns: Annotated[int, add] = 0
    approvals: Annotated[list[str], append] = []
    approved_by: str | None = None


agent = Workflow("state-agent", state=AgentState, max_iterations=TURNS + 1)


@agent.step()
def plan(ctx: Any, task: str) -> str:
    ctx.update_state(task=task)
    return "planned"


@agent.step()
def act(ctx: Any, _: Any) -> str:
    s = ctx.state
    if s.turns != ctx.iteration or len(s.notes) != ctx.iteration or len(s.approvals) != ctx.iteration:
        raise TerminalError(f"act in iteration {ctx.iteration} saw state {s!r}")

    def tool() -> str:
        TOOL_CALLS[(ctx.run_id, ctx.iteration)] += 1
        return f"{s.task}-result{ctx.iteration}"

    result = ctx.once("tool", tool)
    ctx.update_state(notes=[result], turns=1)
    return "acted"  # the next step (after the wait) does not get this: it reads the state


agent.wait_for_event("approve", into_state=True, timeout_s=3600)


@agent.step(routes=("act", END))
def review(ctx: Any, payload: Any) -> Any:
    s = ctx.state
    want = [f"{s.task}-result{i}" for i in range(ctx.iteration + 1)]
    if s.notes != want or s.turns != ctx.iteration + 1 or payload.get("approvals") != s.approvals[-1:]:
        raise TerminalError(f"review in iteration {ctx.iteration} saw state {s!r} and payload {payload!r}")
    if s.turns >= TURNS:
        return goto(END, s.model_dump())
    return goto("act", None)


def expected(task: str) -> dict[str, Any]:
    return {
        "task": task,
        "notes": [f"{task}-result{i}" for i in range(TURNS)],
        "turns": TURNS,
        "approvals": [f"ann-{i}" for i in range(TURNS)],
        "approved_by": f"ann-{TURNS - 1}",
    }
