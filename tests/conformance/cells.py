"""The conformance matrix's cells: every node kind in every position, and the pure model of each.

A cell is (kind, position). ``build(kind, position)`` makes the workflows of the cell (the root, and
the children a position or a kind needs) with the kind's node ``x`` placed in that position, and
``expect(kind, position)`` computes, without running anything, what the run must produce: the
root's output, the executions of every counted step (exactly once each), the ``ctx.once`` effects,
the number of runs (children started once) and the effect reruns the ledger reports.

The value flowing through a cell is a list of ints; every node kind is one entry of ``KINDS`` with
its builder (what the workflow does, through stepchain) and its model (a pure function of the input
list and the loop iteration). Adding a kind = one ``Kind`` entry; a position = one ``POSITIONS``
entry and its chain in ``build``/``expect``.

The workflow's own counters (``WORLD``): every step increments ``ran[(workflow, node key)]`` right
before it returns (a crash at any boundary comes before that, or after the checkpoint: each count
must be exactly 1); every ``ctx.once`` effect increments ``effects[(workflow, node key)]``.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from stepchain import StepContext, Workflow, goto

EVENT = "go"
SLEEP_S = 30
WORKER = ("after_claim", "after_checkpoint", "before_handoff")


@dataclass
class World:
    """What the workflows did (their own counters), reset before each case."""

    ran: Counter[tuple[str, str]] = field(default_factory=Counter)
    effects: Counter[tuple[str, str]] = field(default_factory=Counter)
    ledger: dict[tuple[str, str], int] = field(default_factory=dict)  # the provider's record of an effect
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self.lock:
            self.ran.clear()
            self.effects.clear()
            self.ledger.clear()

    def count(self, ctx: StepContext) -> None:
        ctx.emit("ran")  # the stream column: one "ran" event per execution the model counts (driver.py)
        with self.lock:
            self.ran[(ctx.workflow, ctx.key)] += 1


WORLD = World()


def iteration_of(key: str) -> int:
    """The loop iteration of a node key (``judge~00002`` -> 2; no suffix -> 0)."""
    node = key.split("#", 1)[0]
    return int(node.split("~", 1)[1]) if "~" in node else 0


def key_of(node: str, it: int, index: int | None = None) -> str:
    key = node if it == 0 else f"{node}~{it:05d}"
    return key if index is None else f"{key}#{index:05d}"


def norm(value: Any) -> list[int]:
    """A parallel's ``{branch: list}`` becomes one list (branches in name order); a list stays."""
    if isinstance(value, dict):
        return [x for name in sorted(value) for x in value[name]]
    return list(value)


# ============================================================================ the kinds
@dataclass(frozen=True)
class Place:
    """Where the kind's node ``x`` goes: its workflow, its successor and predecessor node ids."""

    wf: Workflow
    nxt: str
    prev: str | None


@dataclass(frozen=True)
class Kind:
    name: str
    #: adds node ``x`` to ``place.wf``
    build: Callable[[Place], None]
    #: pure: ``x``'s output from its input and its loop iteration
    model: Callable[[list[int], int], list[int]]
    #: the counted step keys ``x`` executes (exactly once each), from its key and input
    ran: Callable[[str, list[int]], list[str]] = lambda _key, _xs: []
    #: ``ctx.once`` effects ``x`` runs per execution (its node keys)
    effects: bool = False
    #: crash boundaries that exist for this kind (besides the worker ones every kind has)
    boundaries: tuple[str, ...] = ()
    #: child runs one execution of ``x`` starts
    children: int = 0
    #: positions the kind cannot take (with the reason in the comment of its entry)
    not_at: tuple[str, ...] = ()
    #: the node's effect reruns are answered by ``reconcile`` (the ledger should count none)
    reconciled: bool = False


def _step(place: Place) -> None:
    @place.wf.step(name="x")
    def x(ctx: StepContext, xs: Any) -> list[int]:
        out = [v + 1 for v in norm(xs)]
        WORLD.count(ctx)
        return out


def _route(place: Place) -> None:
    @place.wf.step(name="x", routes=(place.nxt,))
    def x(ctx: StepContext, xs: Any) -> Any:
        out = [v + 2 for v in norm(xs)]
        WORLD.count(ctx)
        return goto(place.nxt, out)


def _map(place: Place) -> None:
    @place.wf.map(name="x", max_concurrency=2)
    def x(ctx: StepContext, v: int) -> int:
        WORLD.count(ctx)
        return v * 2


def _each(place: Place) -> None:
    @place.wf.step(name="x")
    def x(ctx: StepContext, xs: Any) -> list[int]:
        out = ctx.each(norm(xs), lambda v: v + 3)
        WORLD.count(ctx)
        return list(out)


def _effect(ctx: StepContext, xs: list[int]) -> int:
    with WORLD.lock:
        WORLD.effects[(ctx.workflow, ctx.key)] += 1
        WORLD.ledger[(ctx.workflow, ctx.key)] = sum(xs)
    return sum(xs)


def _once(place: Place) -> None:
    @place.wf.step(name="x")
    def x(ctx: StepContext, xs: Any) -> list[int]:
        vals = norm(xs)
        paid = ctx.once("fx", lambda: _effect(ctx, vals))
        WORLD.count(ctx)
        return [*vals, paid]


def _once_reconciled(place: Place) -> None:
    @place.wf.step(name="x")
    def x(ctx: StepContext, xs: Any) -> list[int]:
        vals = norm(xs)
        paid = ctx.once("fx", lambda: _effect(ctx, vals), reconcile=lambda: WORLD.ledger.get((ctx.workflow, ctx.key)))
        WORLD.count(ctx)
        return [*vals, paid]


def _output_of(place: Place) -> None:
    assert place.prev is not None
    prev = place.prev

    @place.wf.step(name="x")
    def x(ctx: StepContext, xs: Any) -> list[int]:
        out = [v + 4 for v in norm(ctx.output_of(prev))]  # the predecessor's checkpoint: this input
        WORLD.count(ctx)
        return out


def _wait(place: Place) -> None:
    place.wf.wait_for_event(EVENT, timeout_s=7 * 86400, name="x")


def _sleep(place: Place) -> None:
    place.wf.sleep(SLEEP_S, name="x")


def _callee(name: str, node: str, fn: Callable[[int], int]) -> Workflow:
    wf = _workflow(name)

    @wf.step(name=node)
    def work(ctx: StepContext, xs: Any) -> list[int]:
        out = [fn(v) for v in norm(xs)]
        WORLD.count(ctx)
        return out

    return wf


def _call(place: Place) -> None:
    place.wf.call(_callee("cf-callee", "callee", lambda v: v * 3), name="x")


def _parallel(place: Place) -> None:
    branches = {"a": _callee("cf-branch-a", "pa", lambda v: v * 3), "b": _callee("cf-branch-b", "pb", lambda v: v + 5)}
    place.wf.parallel(branches, name="x")


def _items(key: str, xs: list[int]) -> list[str]:
    return [f"{key}#{i:05d}" for i in range(len(xs))]


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("step", _step, lambda xs, _it: [v + 1 for v in xs], ran=lambda key, _xs: [key]),
        Kind("route", _route, lambda xs, _it: [v + 2 for v in xs], ran=lambda key, _xs: [key]),
        Kind("map", _map, lambda xs, _it: [v * 2 for v in xs], ran=_items),
        Kind(
            "each",
            _each,
            lambda xs, _it: [v + 3 for v in xs],
            ran=lambda key, _xs: [key],
            boundaries=("mid_item", "item_window"),
        ),
        Kind(
            "once",
            _once,
            lambda xs, _it: [*xs, sum(xs)],
            ran=lambda key, _xs: [key],
            effects=True,
            boundaries=("effect_window",),
        ),
        Kind(
            "once_reconcile",
            _once_reconciled,
            lambda xs, _it: [*xs, sum(xs)],
            ran=lambda key, _xs: [key],
            effects=True,
            boundaries=("effect_window",),
            reconciled=True,
        ),
        # reads its predecessor's checkpoint: there is none at a run's first node
        Kind(
            "output_of",
            _output_of,
            lambda xs, _it: [v + 4 for v in xs],
            ran=lambda key, _xs: [key],
            not_at=("first", "child_first", "branch_first"),
        ),
        # the driver answers a wait with [50 + the wait's iteration]
        Kind("wait", _wait, lambda _xs, it: [50 + it], boundaries=("api_event",)),
        Kind("sleep", _sleep, lambda xs, _it: list(xs)),
        Kind("call", _call, lambda xs, _it: [v * 3 for v in xs], children=1),
        Kind("parallel", _parallel, lambda xs, _it: [v * 3 for v in xs] + [v + 5 for v in xs], children=2),
    )
}

# ============================================================================ the positions
#: first: x is the root's first node; after_route: a routing step chose x; loop_iter: x inside
#: iteration 1 of a loop (crashed there); after_loop: a loop's last routing step chose x;
#: in_child: x inside a called child run (after its first step); in_parallel: x inside a parallel
#: branch's run (after its first step); child_first, branch_first: x is the child's (branch's) first node
POSITIONS = (
    "first",
    "after_route",
    "loop_iter",
    "after_loop",
    "in_child",
    "in_parallel",
    "child_first",
    "branch_first",
)
CHILD = ("in_child", "in_parallel", "child_first", "branch_first")
ROOT = "cf-root"
INPUT = [1, 2]


def crash_key(position: str) -> str:
    """The node key the crash of a case targets: ``x`` where the position puts it (a loop: iteration 1)."""
    return "x~00001" if position in ("loop_iter", "after_loop") else "x"


def boundaries_of(kind: str, position: str) -> tuple[str, ...]:
    """The crash boundaries of a cell: none, the worker ones, the kind's own, ``api_start`` at first."""
    return ("none", *WORKER, *KINDS[kind].boundaries, *(("api_start",) if position == "first" else ()))


def cells() -> list[tuple[str, str]]:
    return [(k, p) for k in KINDS for p in POSITIONS if p not in KINDS[k].not_at]


def _plain(wf: Workflow, name: str, add: int, routes: tuple[str, ...] = (), choose: Any = None) -> None:
    """A counted plain step (``+add``); with ``routes``, a routing step: ``choose(iteration)`` names the successor."""

    @wf.step(name=name, routes=routes)
    def fn(ctx: StepContext, xs: Any) -> Any:
        out = [v + add for v in norm(xs)]
        WORLD.count(ctx)
        return goto(choose(iteration_of(ctx.key)), out) if routes else out


#: the ``Workflow(fuse=...)`` of the workflows :func:`build` makes (tests/conformance/test_matrix.py: fused)
_FUSE: ContextVar[bool | int] = ContextVar("cf_fuse", default=False)


def _workflow(name: str, **kw: Any) -> Workflow:
    return Workflow(name, fuse=_FUSE.get(), **kw)


def build(kind: str, position: str, fuse: bool | int = False) -> list[Workflow]:
    """The workflows of a cell (the root first), each defined with ``fuse`` (step fusion)."""
    token = _FUSE.set(fuse)
    try:
        return _build(kind, position)
    finally:
        _FUSE.reset(token)


def _build(kind: str, position: str) -> list[Workflow]:
    k = KINDS[kind]
    root = _workflow(ROOT, max_iterations=5)
    if position == "first":
        k.build(Place(root, "tail", None))
        _plain(root, "tail", 1000)
    elif position == "after_route":
        _plain(root, "head", 10, ("x", "tail"), lambda _it: "x")
        k.build(Place(root, "tail", "head"))
        _plain(root, "tail", 1000)
    elif position == "loop_iter":
        _plain(root, "head", 10)
        _plain(root, "pre", 20)
        k.build(Place(root, "judge", "pre"))
        _plain(root, "judge", 7, ("pre", "tail"), lambda it: "pre" if it < 1 else "tail")
        _plain(root, "tail", 1000)
    elif position == "after_loop":
        _plain(root, "head", 10)
        _plain(root, "spin", 20)
        _plain(root, "judge", 7, ("spin", "x"), lambda it: "spin" if it < 1 else "x")
        k.build(Place(root, "tail", "judge"))
        _plain(root, "tail", 1000)
    elif position in CHILD:
        child = _workflow("cf-child")
        if position in ("in_child", "in_parallel"):
            _plain(child, "c_pre", 30)
            k.build(Place(child, "c_post", "c_pre"))
        else:
            k.build(Place(child, "c_post", None))
        _plain(child, "c_post", 40)
        _plain(root, "head", 10)
        if position in ("in_child", "child_first"):
            root.call(child, name="sub")
        else:
            root.parallel({"a": child, "b": _callee("cf-other", "other", lambda v: v - 1)}, name="sub")
        _plain(root, "tail", 1000)
    else:
        raise ValueError(f"unknown position {position!r}")
    return [root]


# ============================================================================ the pure model
@dataclass
class Expected:
    output: list[int]
    ran: Counter[tuple[str, str]]
    effects: Counter[tuple[str, str]]
    runs: int
    effect_reruns: int


def expect(kind: str, position: str, boundary: str = "none") -> Expected:
    """What the cell must produce when ``boundary`` is crashed once at ``crash_key(position)``."""
    k = KINDS[kind]
    ran: Counter[tuple[str, str]] = Counter()
    effects: Counter[tuple[str, str]] = Counter()
    runs = 1

    def plain(wf: str, node: str, it: int, xs: list[int], add: int) -> list[int]:
        ran[(wf, key_of(node, it))] += 1
        return [v + add for v in xs]

    def x(wf: str, it: int, xs: list[int]) -> list[int]:
        nonlocal runs
        key = key_of("x", it)
        for r in k.ran(key, xs):
            ran[(wf, r)] += 1
        if k.effects:
            effects[(wf, key)] += 1
        if kind == "call":
            ran[("cf-callee", "callee")] += 1
        if kind == "parallel":
            ran[("cf-branch-a", "pa")] += 1
            ran[("cf-branch-b", "pb")] += 1
        runs += k.children
        return k.model(xs, it)

    xs = list(INPUT)
    if position == "first":
        xs = plain(ROOT, "tail", 0, x(ROOT, 0, xs), 1000)
    elif position == "after_route":
        xs = plain(ROOT, "tail", 0, x(ROOT, 0, plain(ROOT, "head", 0, xs, 10)), 1000)
    elif position == "loop_iter":
        xs = plain(ROOT, "head", 0, xs, 10)
        for it in (0, 1):
            xs = plain(ROOT, "judge", it, x(ROOT, it, plain(ROOT, "pre", it, xs, 20)), 7)
        xs = plain(ROOT, "tail", 1, xs, 1000)
    elif position == "after_loop":
        xs = plain(ROOT, "head", 0, xs, 10)
        for it in (0, 1):
            xs = plain(ROOT, "judge", it, plain(ROOT, "spin", it, xs, 20), 7)
        xs = plain(ROOT, "tail", 1, x(ROOT, 1, xs), 1000)
    else:
        xs = plain(ROOT, "head", 0, xs, 10)
        pre = plain("cf-child", "c_pre", 0, xs, 30) if position in ("in_child", "in_parallel") else xs
        child = plain("cf-child", "c_post", 0, x("cf-child", 0, pre), 40)
        runs += 1
        if position in ("in_parallel", "branch_first"):
            runs += 1
            ran[("cf-other", "other")] += 1
            child = child + [v - 1 for v in xs]
        xs = plain(ROOT, "tail", 0, child, 1000)
    if boundary == "effect_window" and k.effects:
        # at-least-once inside the window: the effect ran, its result was not checkpointed
        key = next(key for key in effects if key[1] == crash_key(position))
        if not k.reconciled:
            effects[key] += 1
    reruns = 1 if boundary == "effect_window" and k.effects and not k.reconciled else 0
    return Expected(xs, ran, effects, runs, reruns)
