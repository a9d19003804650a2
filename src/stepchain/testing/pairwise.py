"""A deterministic all-pairs (pairwise) sample of a test matrix.

Every pair of values of any two factors that some valid combination holds appears in at least one
chosen combination; far fewer cases than the full product (roughly the product of the two largest
factors). Greedy (AETG-like) over the valid combinations, seeded: the same factors, ``valid`` and
seed give the same sample, in the same order.

>>> cases = pairwise({"kind": ["step", "map"], "transport": ["sqs", "sfn"], "dup": [False, True]}, seed=1)
>>> len(cases)
4
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Case = dict[str, Any]
_Pair = tuple[int, int, int, int]  # (factor a, value index, factor b, value index), a < b


def _pairs(idx: Sequence[int]) -> set[_Pair]:
    return {(a, idx[a], b, idx[b]) for a, b in itertools.combinations(range(len(idx)), 2)}


def pairwise(
    factors: Mapping[str, Sequence[Any]],
    *,
    valid: Callable[[Case], bool] = lambda _case: True,
    cost: Callable[[Case], float] = lambda _case: 1.0,
    given: Sequence[Case] = (),
    seed: int = 0,
) -> list[Case]:
    """Combinations of ``factors`` (name -> values) covering every pair of values that a combination
    accepted by ``valid`` holds. Each step picks the combination covering the most new pairs per
    ``cost`` (a slow transport's cases can cost more: its pairs get covered, the others elsewhere);
    ties are broken by ``seed``. ``given``: cases run anyway (e.g. the whole matrix on a fast transport):
    their pairs count as covered, and ``valid`` may then refuse those values."""
    names = list(factors)
    values = [list(factors[n]) for n in names]
    if any(not v for v in values):
        raise ValueError("every factor needs at least one value")
    rng = random.Random(seed)
    candidates: list[tuple[Case, set[_Pair], float]] = []
    for idx in itertools.product(*(range(len(v)) for v in values)):
        case = {n: values[i][j] for i, (n, j) in enumerate(zip(names, idx, strict=True))}
        if valid(case):
            price = cost(case)
            if price <= 0:
                raise ValueError(f"cost must be > 0, got {price} for {case}")
            candidates.append((case, _pairs(idx), price))
    uncovered: set[_Pair] = set().union(*(p for _, p, _ in candidates)) if candidates else set()
    for case in given:
        uncovered -= _pairs([values[i].index(case[n]) for i, n in enumerate(names)])
    chosen: list[Case] = []
    while uncovered:
        gains = [len(p & uncovered) / price for _, p, price in candidates]
        best = max(gains)
        top = [c for c, g in zip(candidates, gains, strict=True) if g == best]
        case, covered, _ = top[rng.randrange(len(top))]
        uncovered -= covered
        chosen.append(case)
    return chosen


def covered_pairs(cases: Sequence[Case]) -> set[tuple[str, Any, str, Any]]:
    """The value pairs ``cases`` hold: (factor, value, other factor, its value), factors in case order."""
    out: set[tuple[str, Any, str, Any]] = set()
    for case in cases:
        items = list(case.items())
        for (a, x), (b, y) in itertools.combinations(items, 2):
            out.add((a, x, b, y))
    return out
