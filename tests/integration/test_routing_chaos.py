"""A crash at every worker boundary inside a loop iteration, with every message delivered twice,
on every harness: the loop completes, and no completed iteration runs again (each step counts its
completed executions in the workflow's own ``RAN`` counter: every count is exactly 1)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from tests.integration.routing_flows import RAN, SECRET, guess, review
from tests.matrix import spread

from stepchain.testing import WORKER_BOUNDARIES, Harness, SfnHarness, SqsHarness

KINDS = ["inprocess", "sqs", "sfn"]

#: (boundary, node key) inside iteration 1 or 2 of the reviewer loop
REVIEW_CRASHES = [
    ("after_claim", "write~00001"),
    ("after_claim", "judge~00002"),
    ("mid_item", "write~00001"),
    ("item_window", "write~00002"),
    ("effect_window", "write~00001"),
    ("after_checkpoint", "write~00001"),
    ("after_checkpoint", "judge~00001"),
    ("before_handoff", "write~00002"),
    ("before_handoff", "publish~00002"),
]
#: inside iteration 1 or 2 of the guessing loop: the wait, the map (an item, its join), the sleep;
#: (boundary, node, matches to let pass first): the map's 3 items report under its key too
GUESS_CRASHES = [
    ("after_claim", "guess~00001", 0),
    ("after_checkpoint", "check~00001", 0),
    ("before_handoff", "spread~00002#00001", 0),
    ("after_claim", "spread~00002#00001", 0),
    ("after_checkpoint", "spread~00002#00002", 0),
    ("after_checkpoint", "spread~00002", 3),
    ("after_claim", "pause~00002", 0),
    ("after_checkpoint", "pause~00002", 0),
    ("before_handoff", "score~00002", 0),
]


def test_every_worker_boundary_is_crashed_inside_a_loop() -> None:
    assert {b for b, _ in REVIEW_CRASHES} == set(WORKER_BOUNDARIES)


@contextmanager
def harness(kind: str, duplicate: bool) -> Iterator[Any]:
    if kind == "sfn":
        with SfnHarness(review, guess, duplicate_delivery=duplicate) as s:
            yield s
    elif kind == "sqs":
        with SqsHarness(review, guess, backend="memory", duplicate_delivery=duplicate) as q:
            yield q
    else:
        with Harness(review, guess, backend="moto", duplicate_delivery=duplicate) as h:
            yield h


def counts(run_id: str) -> dict[str, int]:
    return {k: n for (r, k), n in RAN.items() if r == run_id}


@pytest.mark.parametrize(("kind", "boundary", "node"), spread((k, *c) for c in REVIEW_CRASHES for k in KINDS))
def test_reviewer_loop_survives_a_crash_inside_an_iteration(kind: str, boundary: str, node: str) -> None:
    with harness(kind, duplicate=True) as h:
        h.crash_at(boundary, node=node)
        rid = h.start("review-loop", "essay")
        assert h.run(rid) == "SUCCEEDED", h.view(rid).error
        assert h.output(rid) == {"published": "essay-r2-p1+essay-r2-p2", "rounds": 2}
        assert (boundary, node) in h.probe.crashes  # the crash did happen, inside the loop iteration
        c = counts(rid)
        assert len(c) == 8 and all(n == 1 for n in c.values()), c
        # the effect ran once per iteration (at-least-once only inside its effect_window)
        runs = {k: n for k, n in h.effects.items() if k.startswith("write")}
        assert len(runs) == 3
        assert all(n == (2 if boundary == "effect_window" and k.startswith(node) else 1) for k, n in runs.items())


@pytest.mark.parametrize(("kind", "boundary", "node", "skip"), spread((k, *c) for c in GUESS_CRASHES for k in KINDS))
def test_guess_loop_survives_a_crash_inside_an_iteration(kind: str, boundary: str, node: str, skip: int) -> None:
    with harness(kind, duplicate=True) as h:
        h.crash_at(boundary, node=node, skip=skip)
        rid = h.start("guess-loop", "di")
        for n in (1, 2, SECRET):
            assert h.run(rid) == "WAITING"
            h.send_event(rid, "guess", {"n": n}, iteration=h.waiting_for(rid)["iteration"])
        assert h.run(rid) == "SUCCEEDED", h.view(rid).error
        assert h.output(rid) == {"sum": 2 * sum(range(SECRET))}
        assert (boundary, node) in h.probe.crashes  # the crash did happen, inside the loop iteration
        c = counts(rid)
        assert c["score~00002"] == 1 and c["spread~00002#00002"] == 1
        assert all(n == 1 for n in c.values()), c
