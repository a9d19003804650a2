"""A long loop keeps its node items the same size at every iteration (the quick version of the
500-iteration bench in bench/loop_bench.py; sizes only, no timing): nothing about an iteration
grows with the iterations before it."""

from __future__ import annotations

import pytest
from bench.loop_bench import run_loop


@pytest.mark.parametrize(("backend", "iterations", "same_digits"), [("memory", 300, 100), ("moto", 40, 10)])
def test_node_items_stay_the_same_size_at_every_iteration(backend: str, iterations: int, same_digits: int) -> None:
    late = iterations - 2  # the last iteration routes to END (a longer route name)
    r = run_loop(iterations, backend, sample=(1, 10, 100, late))
    sizes = r["sizes"]
    # `same_digits` and `late` hold counters of as many digits: exactly the same size
    assert sizes[f"think~{late}"] == sizes[f"think~{same_digits}"], sizes
    assert sizes[f"act~{late}"] == sizes[f"act~{same_digits}"], sizes
    assert max(sizes.values()) - min(sizes.values()) <= 12, sizes  # counters' digits, nothing else
    if backend == "moto":  # 2 per step (claim, checkpoint), + the run's start and its end
        assert r["dynamodb_calls"] == 2 * r["steps"] + 2
