"""The conformance matrix of issue 15: every node kind in every position, on every transport, crashed
at every boundary, with and without duplicate delivery, against the pure model of cells.py.

The normal run: the whole matrix on the in-memory harness, and a seeded all-pairs sample of it on
the other transports (moto DynamoDB, SQS, Step Functions). ``make conformance``: the whole matrix on
every transport (the tests marked ``conformance``, deselected by default in pyproject.toml).
"""

from __future__ import annotations

import random

import pytest
from tests.conformance.cells import KINDS, POSITIONS, boundaries_of, cells
from tests.conformance.driver import TRANSPORTS, Case, run_case
from tests.conformance.matrix import SEED, all_cases, as_dict, params, sample_cases

from stepchain.testing import BOUNDARIES, FORK_BOUNDARIES
from stepchain.testing.pairwise import covered_pairs

MEMORY = all_cases(["memory"])
SAMPLE = sample_cases()
#: in a seeded random order: a run cut short (make conformance under a timeout) is a uniform sample of the matrix
FULL = all_cases(TRANSPORTS)
random.Random(SEED).shuffle(FULL)


def test_the_tables_cover_every_kind_position_and_boundary() -> None:
    assert len(cells()) == len(KINDS) * len(POSITIONS) - sum(len(k.not_at) for k in KINDS.values())
    used = {b for k, p in cells() for b in boundaries_of(k, p)} - {"none"}
    # api_cancel and api_redrive need a cancel or a redrive, the fork's a fork, which no cell's contract
    # includes (tests/integration/test_fork.py crashes a fork at those)
    assert used == set(BOUNDARIES) - {"api_cancel", "api_redrive", *FORK_BOUNDARIES}


def test_the_normal_run_covers_every_pair_a_case_of_the_whole_matrix_holds() -> None:
    def pairs(cases: list[Case]) -> set[tuple[object, ...]]:
        return covered_pairs([as_dict(c) for c in cases])

    assert pairs(MEMORY + SAMPLE) == pairs(FULL)
    assert all(c.transport != "memory" for c in SAMPLE)
    assert sample_cases() == SAMPLE  # seeded: the same sample every run
    assert len(SAMPLE) < len(FULL) / 40


@pytest.mark.parametrize("case", params(MEMORY))
def test_memory_matrix(case: Case) -> None:
    assert run_case(case) == []


@pytest.mark.parametrize("case", params(SAMPLE))
def test_transport_sample(case: Case) -> None:
    assert run_case(case) == []


@pytest.mark.conformance
@pytest.mark.parametrize("case", params(FULL))
def test_full_matrix(case: Case) -> None:
    assert run_case(case) == []


#: step fusion on (``Workflow(fuse=8)``, stepchain.engine.fusion): consecutive plain steps in one invocation
FUSE = 8


def fused_problems(case: Case) -> list[str]:
    """A fused step is not handed off: its ``before_handoff`` boundary is never reached (only that is excused)."""
    fused_away = case.boundary == "before_handoff"
    return [p for p in run_case(case, fuse=FUSE) if not (fused_away and "never happened" in p)]


@pytest.mark.parametrize("case", params(MEMORY))
def test_memory_matrix_fused(case: Case) -> None:
    assert fused_problems(case) == []


@pytest.mark.parametrize("case", params(SAMPLE))
def test_transport_sample_fused(case: Case) -> None:
    assert fused_problems(case) == []
