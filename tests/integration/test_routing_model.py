"""Seeded random route choices against a pure-Python model of the routing rules: the same path of
(node, iteration) keys, the same output, the same end (done, or the iteration cap)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from stepchain import END, Workflow, goto
from stepchain.store.records import node_key
from stepchain.testing import Harness

NODES = ["n0", "n1", "n2", "n3", "n4"]
CAP = 6


def pick(seed: int, key: str) -> str | None:
    """The route the step of ``key`` takes: None (a plain value: the chain's next node), END or a node."""
    rng = random.Random(f"{seed}:{key}")
    return rng.choice([None, None, END, *NODES])


def model(seed: int) -> tuple[str, list[str]]:
    """What the routing rules say happens: (final status, keys visited in order)."""
    pos = {n: i for i, n in enumerate(NODES)}
    node, it, path = NODES[0], 0, []
    while True:
        key = node_key(node, None, it)
        path.append(key)
        to = pick(seed, key)
        if to is None:
            if pos[node] + 1 == len(NODES):
                return "SUCCEEDED", path
            node = NODES[pos[node] + 1]
            continue
        if to == END:
            return "SUCCEEDED", path
        nxt_it = it + 1 if pos[to] <= pos[node] else it
        if nxt_it >= CAP:
            return "FAILED", path
        node, it = to, nxt_it


def build() -> Workflow:
    wf = Workflow("random-routes", max_iterations=CAP)
    for name in NODES:

        def step(ctx: Any, s: dict[str, Any]) -> Any:
            state = {**s, "path": [*s["path"], ctx.key]}
            to = pick(s["seed"], ctx.key)
            return state if to is None else goto(to, state)

        wf.step(name=name, routes=(*NODES, END))(step)
    return wf


WF = build()


@pytest.mark.parametrize("seed", range(40))
def test_random_routes_follow_the_model(seed: int) -> None:
    status, path = model(seed)
    with Harness(WF, backend="memory", duplicate_delivery=seed % 2 == 1) as h:
        rid = h.start("random-routes", {"seed": seed, "path": []})
        assert h.run(rid) == status
        if status == "SUCCEEDED":
            assert h.output(rid)["path"] == path
            assert set(h.executions) == set(path)
        else:
            assert (h.view(rid).error or {}).get("type") == "IterationLimitExceeded"
            assert set(h.executions) == set(path[:-1])  # the last one failed
        assert all(n == 1 for n in h.executions.values())
        assert sorted(n.key for n in h.view(rid).nodes) == sorted(path)


def test_the_seeds_cover_loops_ends_and_the_cap() -> None:
    outcomes = [model(s) for s in range(40)]
    assert {st for st, _ in outcomes} == {"SUCCEEDED", "FAILED"}
    assert any(any("~" in k for k in p) for st, p in outcomes if st == "SUCCEEDED")  # a loop that ended
    assert any(len(p) == 1 for _, p in outcomes) or any(p[-1] != "n4" for _, p in outcomes)
