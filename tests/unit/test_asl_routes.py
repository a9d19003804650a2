"""The generated ASL of a routing step: a Choice on the route its task returned (issue 8.2)."""

from __future__ import annotations

from typing import Any

import pytest

from stepchain import END, Workflow, goto
from stepchain.deploy.asl import to_asl
from stepchain.exceptions import ValidationError
from stepchain.handoff.messages import Activation, Outcome, OutcomeKind
from stepchain.runtimes.aws.sfn_worker import task_state


def loop() -> Workflow:
    wf = Workflow("asl-loop")

    @wf.step()
    def setup(ctx: Any, x: Any) -> Any:
        return x

    @wf.step(routes=("act", END))
    def think(ctx: Any, x: Any) -> Any:
        return goto("act", x)

    @wf.step(routes=("think",))
    def act(ctx: Any, x: Any) -> Any:
        return goto("think", x)

    @wf.step()
    def tail(ctx: Any, x: Any) -> Any:
        return x

    return wf


def test_a_routing_step_goes_through_a_choice_on_its_route() -> None:
    states = to_asl(loop())["States"]
    assert states["think"]["Type"] == "Task" and states["think"]["Next"] == "think.goto"  # DONE: the route Choice
    goto_state = states["think.goto"]
    assert goto_state["Type"] == "Choice"
    assert {c["StringEquals"]: c["Next"] for c in goto_state["Choices"]} == {"act": "act", END: "Succeeded"}
    assert all(c["Variable"] == "$.route" for c in goto_state["Choices"])
    assert goto_state["Default"] == "act"  # a plain value: the chain's next node
    assert {c["StringEquals"]: c["Next"] for c in states["act.goto"]["Choices"]} == {"think": "think"}
    assert states["act.goto"]["Default"] == "tail"
    assert "setup.goto" not in states  # steps without routes keep their shape: one transition, Task -> Task
    assert states["setup"]["Next"] == "think"


def test_a_done_task_state_names_the_successor_and_its_iteration() -> None:
    msg = Activation("r", "asl-loop", "v", "act", iteration=2)
    then = Activation("r", "asl-loop", "v", "think", iteration=3, src="act~00002", input='{"v":1}')
    state = task_state(msg, Outcome(OutcomeKind.DONE, then=then))
    assert state["route"] == "think" and state["iteration"] == 3
    assert state["src"] == "act~00002" and state["input"] == '{"v":1}'
    ended = task_state(msg, Outcome(OutcomeKind.DONE))
    assert ended["route"] == END and ended["input"] is None
    again = task_state(msg.with_(input="x"), Outcome(OutcomeKind.CONTINUE))
    assert again["iteration"] == 2 and again["input"] == "x" and again["route"] is None  # the same task again


def test_asl_refuses_a_route_to_an_unknown_node() -> None:
    wf = Workflow("asl-bad")

    @wf.step(routes=("ghost",))
    def a(ctx: Any, x: Any) -> Any:
        return x

    with pytest.raises(ValidationError, match="ghost"):
        to_asl(wf)
