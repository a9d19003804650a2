"""RunLifecycle.rejoin: how each transport has a parent node joined when one of its child runs
ended (the engine no longer tests which transport it has: engine/lifecycle.py)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from stepchain.handoff.base import Handoff, QueueLifecycle
from stepchain.handoff.messages import Activation, Outcome, OutcomeKind
from stepchain.handoff.stepfunctions import StepFunctionsHandoff
from stepchain.store.records import NodeRecord, NodeStatus

JOIN = Activation("r1", "parent", "v1", "pay", action="join")


class Recorder(Handoff):
    def __init__(self) -> None:
        self.sent: list[Activation] = []

    def _send(self, msgs: Sequence[Activation], at_ms: int | None) -> None:
        self.sent.extend(msgs)


@dataclass
class FakeSfn:
    calls: list[dict[str, Any]] = field(default_factory=list)

    def send_task_success(self, **kw: Any) -> None:
        self.calls.append({"token": kw["taskToken"], **json.loads(kw["output"])})


def record(token: str | None) -> NodeRecord:
    return NodeRecord("r1", "pay", "pay", None, NodeStatus.SUCCEEDED, task_token=token)


def test_a_queue_sends_the_join_activation_and_does_not_join_here() -> None:
    q = Recorder()
    QueueLifecycle(q).rejoin(JOIN, lambda: (_ for _ in ()).throw(AssertionError("joined here")))
    assert q.sent == [JOIN]


def test_step_functions_joins_here_and_completes_the_token_with_the_outcome() -> None:
    client = FakeSfn()
    sfn = StepFunctionsHandoff({"*": "arn:aws:states:r:1:stateMachine:m"}, client=client)  # type: ignore[arg-type]
    nxt = Activation("r1", "parent", "v1", "email")
    sfn.rejoin(JOIN, lambda: (Outcome(OutcomeKind.DONE, next=(nxt,), then=nxt), record("tok-1")))
    err = {"node": "pay", "type": "ChildRunFailed", "message": "x"}
    sfn.rejoin(JOIN, lambda: (Outcome(OutcomeKind.FAILED, error=err), record("tok-2")))
    sfn.rejoin(JOIN, lambda: (Outcome(OutcomeKind.DONE), record(None)))  # no token: nothing to complete
    sfn.rejoin(JOIN, lambda: None)  # nothing to join (version not registered)
    assert [(c["token"], c["status"]) for c in client.calls] == [("tok-1", "DONE"), ("tok-2", "FAILED")]
    assert client.calls[0]["route"] == "email" and client.calls[1]["error"] == err
    assert all("action" not in c for c in client.calls)
