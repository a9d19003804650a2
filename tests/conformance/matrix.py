"""The cases of the conformance matrix, generated from the tables (cells.KINDS, cells.POSITIONS,
driver.TRANSPORTS, cells.boundaries_of, duplicate delivery or not), and the known bugs they find.

* ``all_cases(transports)``: every (kind, position, boundary, duplicate) on each transport.
* ``sample_cases()``: a seeded all-pairs sample on the transports other than the in-memory harness:
  with the whole in-memory matrix (run anyway), every pair of values of any two factors that a valid
  case holds appears at least once; the sample itself holds every (transport, kind / position /
  boundary / duplicate) pair of the other transports.
* ``params(cases)``: pytest parameters; a case a known bug breaks is ``xfail(strict=True)`` with the
  issue-15 item that names the bug, so it flips to XPASS (a failure) when the fix lands.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
from tests.conformance.cells import KINDS, POSITIONS, boundaries_of, cells
from tests.conformance.driver import TRANSPORTS, Case

from stepchain.testing.pairwise import pairwise

SEED = 15  # issue 15
#: relative cost of a case per transport (measured after warm-up on a loaded machine: ~1.2 s, ~1 s, ~1.5 s)
COST = {"memory": 0.01, "moto": 1.2, "sqs": 1.0, "sfn": 1.5}
DUPLICATE = (False, True)


def all_cases(transports: Iterable[str]) -> list[Case]:
    return [
        Case(kind, position, transport, boundary, dup)
        for transport in transports
        for kind, position in cells()
        for boundary in boundaries_of(kind, position)
        for dup in DUPLICATE
    ]


def _valid(c: dict[str, Any]) -> bool:
    return c["position"] not in KINDS[c["kind"]].not_at and c["boundary"] in boundaries_of(c["kind"], c["position"])


def factors() -> dict[str, list[Any]]:
    return {
        "kind": list(KINDS),
        "position": list(POSITIONS),
        "transport": list(TRANSPORTS),
        "boundary": sorted({b for k, p in cells() for b in boundaries_of(k, p)}),
        "duplicate": list(DUPLICATE),
    }


def as_dict(case: Case) -> dict[str, Any]:
    return {
        "kind": case.kind,
        "position": case.position,
        "transport": case.transport,
        "boundary": case.boundary,
        "duplicate": case.duplicate,
    }


def sample_cases(seed: int = SEED) -> list[Case]:
    memory = [as_dict(c) for c in all_cases(["memory"])]
    chosen = pairwise(
        factors(),
        valid=lambda c: c["transport"] != "memory" and _valid(c),
        cost=lambda c: COST[c["transport"]],
        given=memory,
        seed=seed,
    )
    return [Case(**c) for c in chosen]


def known_bug(case: Case) -> str | None:
    """The issue-15 item whose bug breaks ``case`` (another engineer fixes those), or None."""
    return None


def params(cases: Iterable[Case]) -> list[Any]:
    out = []
    for case in cases:
        reason = known_bug(case)
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        out.append(pytest.param(case, id=case.id, marks=marks))
    return out
