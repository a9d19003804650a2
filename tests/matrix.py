"""Crash matrices on slow transports, sampled: ``make test`` runs a covering sample, ``make test-full``
(``pytest --exhaustive``) every case.

A crash case (a boundary, a node, ...) exercises the engine's recovery, which is the same code on
every transport; what a transport adds is its own delivery of the recovery (SQS redelivery, a Step
Functions retry), which any case exercises. So the in-memory harness runs every case, and the slow
transports (moto's SQS, moto's Step Functions interpreter: seconds per run) share the cases between
them: each case runs on one slow transport, in rotation, so every case and every transport is still
covered (each-choice over the transport axis). The other combinations carry the ``exhaustive`` marker,
deselected unless ``--exhaustive`` is given (tests/conftest.py).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any

import pytest

SLOW_KINDS = ("sqs", "sfn", "moto")


def spread(
    cases: Iterable[Sequence[Any]],
    *,
    kind_at: int = 0,
    slow: Sequence[str] = SLOW_KINDS,
    case_of: Callable[[Sequence[Any]], Hashable] | None = None,
    prefer: dict[Hashable, str] | None = None,
) -> list[Any]:
    """``cases`` as ``pytest.param``s: every case of a fast kind; of the slow kinds, each case (the tuple
    without its kind, or ``case_of(case)``) once, rotating over the slow kinds it has (``prefer``: the kind
    for a case that is about one transport); the rest exhaustive."""
    cases = [tuple(c) for c in cases]
    key = case_of or (lambda c: c[:kind_at] + c[kind_at + 1 :])
    kinds_of: dict[Hashable, list[str]] = {}
    for c in cases:
        if c[kind_at] in slow:
            kinds_of.setdefault(key(c), []).append(c[kind_at])
    chosen = {k: kinds[i % len(kinds)] for i, (k, kinds) in enumerate(kinds_of.items())} | (prefer or {})
    return [
        pytest.param(*c)
        if c[kind_at] not in slow or chosen[key(c)] == c[kind_at]
        else pytest.param(*c, marks=pytest.mark.exhaustive)
        for c in cases
    ]


def first(cases: Iterable[Any], n: int) -> list[Any]:
    """The first ``n`` cases as they are, the rest exhaustive (seeded runs: a longer soak)."""
    out = []
    for i, c in enumerate(cases):
        values = tuple(c) if isinstance(c, tuple | list) else (c,)
        out.append(pytest.param(*values) if i < n else pytest.param(*values, marks=pytest.mark.exhaustive))
    return out
