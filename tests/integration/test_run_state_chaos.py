"""The acceptance line of issue 18's durable state: "an agent with a typed state loops through an
approval wait and reads its state afterwards on all harnesses with a crash at every boundary:
state correct, no effect repeated", with duplicate deliveries too.

Seeded and reproducible: each case draws its crash rules (boundary, node, skip) and whether every
message is delivered twice from ``random.Random(seed)``; the seed is in the test id. Every worker
and API boundary is drawn on every harness: the cases of one harness together cover each boundary
(checked by ``test_the_draws_cover_every_boundary``). The invariants are the workflow's own: its
steps raise TerminalError on a state they did not expect (``state_flows.py``), the output and the
run view carry the state, and ``TOOL_CALLS`` counts the real tool executions per loop iteration
(one each; two only after a crash inside that effect's own window). ``LocalHarness`` (real worker
processes, real time) takes the worker boundaries in one run with duplicate delivery: its API
boundaries need the sweeper's grace, which real time does not skip.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from tests.integration.state_flows import TOOL_CALLS, TURNS, agent, expected
from tests.integration.test_run_state import ALL_NODES, STATE_BOUNDARIES, drive

from stepchain.testing import Harness, LocalHarness, SfnHarness, SqsHarness

ROOT = Path(__file__).resolve().parents[2]
#: the API reports only the first node (start) and the wait node (event)
API_NODE = {"api_start": "plan", "api_event": "approve"}  # the wait node: keyed by its event
#: the nodes where a boundary is reached in every run (the others: any node); only ``act`` has an effect
REACHES: dict[str, tuple[str, ...]] = {"effect_window": ("act",), **{b: (n,) for b, n in API_NODE.items()}}
#: the nodes that run once per turn (a rule's ``skip`` picks the turn); ``plan`` runs once
LOOPED = ("act", "approve", "review")
SEEDS = {"memory": range(12), "moto": range(6), "sqs": range(8), "sfn": range(4)}
HARNESSES: dict[str, Any] = {
    "memory": lambda **kw: Harness(agent, **kw),
    "moto": lambda **kw: Harness(agent, backend="moto", **kw),
    "sqs": lambda **kw: SqsHarness(agent, **kw),
    "sfn": lambda **kw: SfnHarness(agent, **kw),
}


def draw(kind: str, seed: int) -> tuple[list[tuple[str, str, int]], bool]:
    """This case's crash rules and duplicate flag. Case ``seed`` of a harness crashes at
    ``STATE_BOUNDARIES[seed % n]`` (so the cases cover every boundary) plus one more: drawn at random,
    or, on a harness with fewer cases than boundaries (Step Functions: 4 cases, 6 boundaries),
    ``STATE_BOUNDARIES[(seed + cases) % n]``, so its cases cover every boundary too. A covering rule
    takes a node where its boundary is reached (``REACHES``) and must fire (the test checks it)."""
    rng = random.Random(f"{kind}/{seed}")
    n, cases = len(STATE_BOUNDARIES), len(SEEDS[kind])
    second = STATE_BOUNDARIES[(seed + cases) % n] if cases < n else rng.choice(STATE_BOUNDARIES)
    rules = []
    for boundary in (STATE_BOUNDARIES[seed % n], second):
        node = rng.choice(REACHES.get(boundary, ALL_NODES))
        rules.append((boundary, node, rng.randrange(TURNS) if node in LOOPED and boundary != "api_start" else 0))
    return rules, rng.random() < 0.5


def covering(kind: str, seed: int) -> list[tuple[str, str, int]]:
    """The rules of case ``seed`` that the harness's cases cover the boundaries with."""
    rules, _ = draw(kind, seed)
    return rules if len(SEEDS[kind]) < len(STATE_BOUNDARIES) else rules[:1]


CASES = [(kind, seed) for kind, seeds in SEEDS.items() for seed in seeds]


def test_the_draws_cover_every_boundary() -> None:
    for kind, seeds in SEEDS.items():
        drawn = {b for seed in seeds for b, _, _ in covering(kind, seed)}
        assert drawn == set(STATE_BOUNDARIES), (kind, set(STATE_BOUNDARIES) - drawn)


@pytest.mark.parametrize(("kind", "seed"), CASES)
def test_typed_state_through_an_approval_loop_survives_random_crashes_and_duplicates(kind: str, seed: int) -> None:
    rules, duplicate = draw(kind, seed)
    with HARNESSES[kind](duplicate_delivery=duplicate) as h:
        for boundary, node, skip in rules:
            h.crash_at(boundary, node=node, skip=skip)
        run_id = drive(h, f"s{seed}")
        fired = [rule.fired for rule in h.probe.rules]
        assert all(fired[i] for i in range(len(covering(kind, seed)))), (rules, fired)  # the covering crash happened
        assert h.status(run_id) == "SUCCEEDED", (rules, duplicate, h.view(run_id).to_dict())
        assert h.output(run_id) == expected(f"s{seed}")
        assert h.view(run_id).state == expected(f"s{seed}")
        for it in range(TURNS):  # once, plus once per crash inside that call's own effect window
            key = "act" if it == 0 else f"act~{it:05d}"
            ran = TOOL_CALLS[(run_id, it)]
            assert ran == 1 + h.probe.crashes.count(("effect_window", key)), (rules, duplicate, it, ran)


def test_the_embedded_runtime_keeps_the_state_through_every_worker_boundary() -> None:
    """LocalHarness: one run, a crash at each worker boundary (on the nodes around the wait and the
    loop), every message delivered twice; the tool's executions read from the workers' audit."""
    cells = [
        ("after_claim", "plan"),
        ("after_checkpoint", "act"),
        ("before_handoff", "act"),
        ("effect_window", "act"),
        ("after_checkpoint", "review"),
    ]
    with LocalHarness(
        "tests.integration.state_flows:agent", budget_ms=3000, duplicate_delivery=True, pythonpath=[str(ROOT)]
    ) as h:
        for boundary, node in cells:
            h.crash_at(boundary, node=node)
        run_id = h.start("state-agent", "local")
        for _ in range(4 * TURNS):
            if h.run(run_id) != "WAITING":
                break
            waiting = h.waiting_for(run_id)
            if waiting is not None:
                it = waiting["iteration"]
                h.send_event(run_id, "approve", {"approvals": [f"ann-{it}"], "approved_by": f"ann-{it}"}, iteration=it)
        assert h.status(run_id) == "SUCCEEDED", h.view(run_id).to_dict()
        assert h.output(run_id) == expected("local")
        assert h.view(run_id).state == expected("local")
        tools = Counter(e["key"] for e in h._audit() if e["event"] == "once_executed" and e["run_id"] == run_id)
        assert sum(tools.values()) in (TURNS, TURNS + 1), tools  # +1: the crash inside the effect's window
        assert sorted(h.crashes) == sorted(cells)  # every planned crash happened
