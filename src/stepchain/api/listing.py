"""``GET /runs`` without ``workflow`` when several workflows are deployed: every workflow's runs, merged
newest first (openapi.json documents ``workflow`` as optional; it used to be a 400 ``workflow_required``).

The store lists one workflow at a time (``gsi1`` / the ``owner`` index are keyed by workflow), so a page
is a k-way merge of the next ``limit`` unseen runs of each workflow. Store cursors are opaque, so each
workflow resumes from the store cursor of the page its last shown run came from, skipping by sort key
``(created_ms, run_id)`` what was shown: a run started meanwhile is neither lost nor shown twice. The API
cursor wraps that state and is signed like any list cursor (``stepchain.api.cursors``), for the query
``workflow="*"`` (no workflow name can be ``*``).

Cost: per workflow still listed, store queries for at most about ``2 * limit`` runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from stepchain.api.cursors import decode_cursor, encode_cursor
from stepchain.api.errors import ApiError
from stepchain.engine.runs import RunService
from stepchain.store.records import RunRecord, RunStatus

__all__ = ["ALL_WORKFLOWS", "list_all"]

#: the ``workflow`` a cursor of a listing across workflows is bound to
ALL_WORKFLOWS = "*"
T = TypeVar("T")
#: per workflow: [store cursor to read from (None: the start), sort key of the last run shown (None: none)]
_State = dict[str, list[Any]]


def _key(run: RunRecord) -> tuple[int, str]:
    return (run.created_ms, run.run_id)


def _decode(cursor: str | None, status: RunStatus | None, names: list[str]) -> _State:
    if cursor is None:
        return {name: [None, None] for name in names}
    inner = decode_cursor(cursor, ALL_WORKFLOWS, status)
    bad = ApiError(400, "invalid_cursor", "cursor is not one this API returned")
    try:
        state = json.loads(inner)
    except ValueError:
        raise bad from None
    ok = isinstance(state, dict) and all(
        isinstance(v, list)
        and len(v) == 2
        and (v[0] is None or isinstance(v[0], str))
        and (v[1] is None or (isinstance(v[1], list) and len(v[1]) == 2))
        for v in state.values()
    )
    if not ok:
        raise bad
    return {k: v for k, v in state.items() if k in names}


def _unseen(
    runs: RunService, name: str, at: list[Any], status: RunStatus | None, limit: int, owner: str | None
) -> tuple[list[tuple[RunRecord, str | None]], bool]:
    """Up to ``limit`` runs of ``name`` after the last shown one, each with the store cursor it was read
    from, and whether more may follow."""
    cursor, last = at[0], None if at[1] is None else (int(at[1][0]), str(at[1][1]))
    out: list[tuple[RunRecord, str | None]] = []
    for _ in range(limit + 1):  # each round reads a store page that yields a run, or ends
        page = runs.list_runs(name, status=status, limit=limit, cursor=cursor, owner=owner)
        out += [(r, cursor) for r in page.runs if last is None or _key(r) < last]
        if len(out) >= limit or page.cursor is None:
            return out[:limit], page.cursor is not None or len(out) > limit
        cursor = page.cursor
    return out, True


def list_all(
    runs: RunService,
    status: RunStatus | None,
    limit: int,
    cursor: str | None,
    owner: str | None,
    summarize: Callable[[RunRecord], T],
) -> tuple[list[T], str | None]:
    """A page of the runs of every registered workflow, newest first, and the next cursor (None: done)."""
    state = _decode(cursor, status, runs.registry.names())
    fetched = {name: _unseen(runs, name, at, status, limit, owner) for name, at in state.items()}
    merged = [(r, c, name) for name, (rs, _) in fetched.items() for r, c in rs]
    page = sorted(merged, key=lambda t: _key(t[0]), reverse=True)[:limit]
    nxt: _State = {}
    for name, (rest, more) in fetched.items():
        mine = [(r, c) for r, c, n in page if n == name]
        if len(mine) == len(rest) and not more:
            continue  # this workflow is done
        nxt[name] = [mine[-1][1], list(_key(mine[-1][0]))] if mine else state[name]
    out = [summarize(r) for r, _, _ in page]
    return out, encode_cursor(ALL_WORKFLOWS, status, json.dumps(nxt, separators=(",", ":"))) if nxt else None
