"""Two DynamoDB calls per step on the happy path (issue 10.3): the claim and the checkpoint. The
input comes with the activation (``Activation.input``: the predecessor's output reference), so a
step no longer reads its predecessor's checkpoint (before: a third call, a GetItem, every step).

Counted as the marginal cost of a step: the calls of a 40-step chain less those of a 10-step
chain, over 30 steps, so the per-run calls (start, finishing the run) cancel out."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from stepchain import Workflow
from stepchain.testing import Harness, SqsHarness


def chain(n: int) -> Workflow:
    wf = Workflow(f"chain-{n}")
    for i in range(n):

        def step(ctx: Any, x: int) -> int:
            return x + 1

        wf.step(name=f"s{i}")(step)
    return wf


def dynamodb_calls(kind: str, n: int) -> tuple[Counter[str], Any]:
    wf = chain(n)
    h: Harness = SqsHarness(wf) if kind == "sqs" else Harness(wf, backend="moto")
    with h:
        rid = h.start(wf.name, 0)
        assert h.run(rid) == "SUCCEEDED" and h.output(rid) == n
        calls = Counter({k: v for k, v in h.api_calls.items() if k.startswith("dynamodb.")})
    return calls, rid


@pytest.mark.parametrize("kind", ["inprocess", "sqs"])
def test_a_step_costs_two_dynamodb_calls(kind: str) -> None:
    short, _ = dynamodb_calls(kind, 10)
    long, _ = dynamodb_calls(kind, 40)
    per_step = {op: d / 30 for op in long | short if (d := long[op] - short[op])}
    assert sum(per_step.values()) == 2.0, per_step
    assert per_step == {"dynamodb.UpdateItem": 2.0}, per_step  # claim + checkpoint; no GetItem


def gets_for_output_of(size: int) -> int:
    wf = Workflow(f"handoff-{size}")

    @wf.step()
    def big(ctx: Any, x: int) -> str:
        return "x" * size

    @wf.step()
    def small(ctx: Any, s: str) -> int:
        return len(s)

    with Harness(wf, backend="moto") as h:
        rid = h.start(wf.name, 0)
        assert h.run(rid) == "SUCCEEDED"
        gets = h.api_calls["dynamodb.GetItem"]
        assert h.output(rid) == size
    return gets


def test_an_output_reference_too_long_for_the_message_is_read_from_its_node() -> None:
    # 5,000 characters: inline in its checkpoint (< 32 KB) but over the activation's 4,096
    assert gets_for_output_of(5000) - gets_for_output_of(10) == 1  # `small` reads `big`'s checkpoint
