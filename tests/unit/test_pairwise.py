"""stepchain.testing.pairwise: every valid pair covered, nothing invalid chosen, seeded."""

from __future__ import annotations

import itertools
import random

import pytest

from stepchain.testing.pairwise import covered_pairs, pairwise


def test_every_pair_of_values_is_covered_with_far_fewer_cases_than_the_product() -> None:
    factors = {"a": list(range(5)), "b": list("vwxyz"), "c": [0, 1, 2], "d": [False, True]}
    cases = pairwise(factors, seed=3)
    full = [dict(zip(factors, combo, strict=True)) for combo in itertools.product(*factors.values())]
    assert covered_pairs(cases) == covered_pairs(full)
    assert 25 <= len(cases) <= 35 < len(full)  # at least |a| x |b|


@pytest.mark.parametrize("seed", range(5))
def test_only_valid_cases_are_chosen_and_every_pair_a_valid_case_holds_is_covered(seed: int) -> None:
    rng = random.Random(seed)
    factors = {"kind": list("abcdef"), "pos": list(range(4)), "boundary": list("wxyz"), "dup": [False, True]}
    banned = {(rng.choice(factors["kind"]), rng.choice(factors["boundary"])) for _ in range(8)}

    def valid(c: dict[str, object]) -> bool:
        return (c["kind"], c["boundary"]) not in banned

    cases = pairwise(factors, valid=valid, seed=seed)
    full = [dict(zip(factors, combo, strict=True)) for combo in itertools.product(*factors.values())]
    assert all(valid(c) for c in cases)
    assert covered_pairs(cases) == covered_pairs([c for c in full if valid(c)])


def test_the_same_seed_gives_the_same_sample_and_another_seed_may_not() -> None:
    factors = {"a": list(range(4)), "b": list(range(4)), "c": list(range(4))}
    assert pairwise(factors, seed=1) == pairwise(factors, seed=1)
    assert any(pairwise(factors, seed=1) != pairwise(factors, seed=s) for s in range(2, 6))


def test_a_factor_without_values_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one value"):
        pairwise({"a": [1], "b": []})


def test_a_costly_value_appears_only_as_often_as_its_own_pairs_need() -> None:
    factors = {"kind": list("abcdefgh"), "pos": list(range(6)), "transport": ["cheap", "slow"]}
    plain = pairwise(factors, seed=2)
    costed = pairwise(factors, cost=lambda c: 10.0 if c["transport"] == "slow" else 1.0, seed=2)
    full = [dict(zip(factors, combo, strict=True)) for combo in itertools.product(*factors.values())]
    assert covered_pairs(costed) == covered_pairs(full)
    slow = sum(c["transport"] == "slow" for c in costed)
    assert slow == len(factors["kind"]) < sum(c["transport"] == "slow" for c in plain)


def test_given_cases_count_as_covered() -> None:
    factors = {"kind": list("abcdef"), "pos": list(range(5)), "transport": ["fast", "slow"]}
    fast = [{"kind": k, "pos": p, "transport": "fast"} for k in factors["kind"] for p in factors["pos"]]
    slow = pairwise(factors, valid=lambda c: c["transport"] == "slow", given=fast, seed=4)
    full = [dict(zip(factors, combo, strict=True)) for combo in itertools.product(*factors.values())]
    assert covered_pairs(fast + slow) == covered_pairs(full)
    assert all(c["transport"] == "slow" for c in slow) and len(slow) == len(factors["kind"])
