"""tests/matrix.py: the sampled crash matrices still cover every case and every transport."""

from __future__ import annotations

from collections import Counter

from tests.matrix import spread

KINDS = ("memory", "moto", "sqs", "sfn")
BOUNDARIES = ("after_claim", "mid_item", "after_checkpoint", "before_handoff", "effect_window", "item_window")


def sampled(params: list) -> list[tuple]:  # type: ignore[type-arg]
    return [tuple(p.values) for p in params if not any(m.name == "exhaustive" for m in p.marks)]


def test_every_case_runs_in_memory_and_once_on_a_slow_transport_and_every_transport_runs() -> None:
    params = spread((k, b) for k in KINDS for b in BOUNDARIES)
    assert len(params) == len(KINDS) * len(BOUNDARIES)  # nothing dropped: the rest is marked exhaustive
    kept = sampled(params)
    assert {b for k, b in kept if k == "memory"} == set(BOUNDARIES)
    slow = Counter(b for k, b in kept if k != "memory")
    assert slow == Counter(BOUNDARIES)  # each boundary exactly once on a slow transport
    assert {k for k, _ in kept} == set(KINDS)


def test_a_case_about_one_transport_stays_on_it() -> None:
    cases = [(k, b) for k in ("sqs", "sfn") for b in ("a", "b", "c")]
    kept = sampled(spread(cases, prefer={("b",): "sqs"}))
    assert ("sqs", "b") in kept and ("sfn", "b") not in kept
    assert len(kept) == 3
