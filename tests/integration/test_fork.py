"""Fork a run from a step (issue 18): a looping agent with a typed state, forked at ``think`` in
iteration 2 with an edited state, on every harness, with a crash at every boundary of the fork
operation (``api_fork_copy``, ``api_fork``) and of the forked run; a fork of a fork; the source's
node items byte-identical; the refusals; map and call nodes copied by their outputs only.
"""

from __future__ import annotations

from typing import Any

import pytest
from tests.integration.fork_flows import TOOL_CALLS, TURNS, agent, drive, notes

from stepchain import InvalidRunState, StateNotDeclared, StepNotFound, ValidationError, Workflow
from stepchain.testing import WORKER_BOUNDARIES, Harness, InjectedCrash, SfnHarness, SqsHarness

HARNESSES: dict[str, Any] = {"memory": Harness, "sqs": SqsHarness, "sfn": SfnHarness}
FORKED = ("think", "approve", "review")
RUN_BOUNDARIES = [b for b in WORKER_BOUNDARIES if b not in ("mid_item", "item_window")]
MEMORY = [("api_fork_copy", "think"), ("api_fork", "think"), ("api_event", "approve")] + [
    (b, n) for b in RUN_BOUNDARIES for n in FORKED
]
#: the transports: the fork's own boundaries, every worker boundary at its first node, the event at its wait
TRANSPORT = [("api_fork_copy", "think"), ("api_fork", "think"), ("api_event", "approve")] + [
    (b, "think") for b in RUN_BOUNDARIES
]
CASES = [(k, b, n) for k, cells in (("memory", MEMORY), ("sqs", TRANSPORT), ("sfn", TRANSPORT)) for b, n in cells]
FORMAL = notes("t", ["plain", "plain", "formal", "formal"])


def source_run(h: Any) -> str:
    run_id = h.start("fork-agent", "t")
    assert drive(h, run_id) == "SUCCEEDED"
    assert h.output(run_id)["notes"] == notes("t", ["plain"] * TURNS)
    return str(run_id)


def fork(h: Any, run_id: str, **kw: Any) -> str:
    """Fork as a client does: a crash inside the call is retried with the same idempotency key."""
    before = set(h.runs())
    try:
        return str(h.fork(run_id, "think", idempotency_key="k1", **kw))
    except InjectedCrash:
        assert set(h.runs()) - before == set() or len(set(h.runs()) - before) == 1
    return str(h.fork(run_id, "think", idempotency_key="k1", **kw))


@pytest.mark.parametrize(("kind", "boundary", "node"), CASES)
def test_a_fork_at_iteration_2_with_an_edited_state_survives_a_crash_at_every_boundary(
    kind: str, boundary: str, node: str
) -> None:
    with HARNESSES[kind](agent) as h:
        src = source_run(h)
        items = h.store.node_items(src)
        h.crash_at(boundary, node=node)
        fid = fork(h, src, iteration=2, state={"tone": "formal"})
        assert fid != src and h.engine.get_run(fid).forked_from == {"run_id": src, "node": "think", "iteration": 2}
        assert drive(h, fid) == "SUCCEEDED", h.view(fid).to_dict()
        assert h.output(fid)["notes"] == FORMAL and h.view(fid).state["tone"] == "formal"
        for it in range(TURNS):  # iterations 0, 1 are copies: their tool never runs in the fork
            ran = TOOL_CALLS[(fid, it)]
            want = 0 if it < 2 else 1
            assert ran == want or (ran == 2 and boundary == "effect_window"), (it, ran)
        assert h.store.node_items(src) == items  # the source untouched, byte for byte
        assert sorted(h.runs()) == sorted([src, fid])  # a fork that died before its run is invisible


@pytest.mark.parametrize("kind", ["memory", "sqs", "sfn"])
def test_a_fork_of_a_fork_and_duplicate_delivery(kind: str) -> None:
    with HARNESSES[kind](agent, duplicate_delivery=True) as h:
        src = source_run(h)
        first = h.fork(src, "think", iteration=2, state={"tone": "formal"})
        assert drive(h, first) == "SUCCEEDED"
        second = h.fork(first, "think", iteration=3, state={"tone": "terse"})
        assert drive(h, second) == "SUCCEEDED"
        assert h.output(second)["notes"] == notes("t", ["plain", "plain", "formal", "terse"])
        assert [TOOL_CALLS[(second, it)] for it in range(TURNS)] == [0, 0, 0, 1]
        view = h.view(second)
        assert view.forked_from == {"run_id": first, "node": "think", "iteration": 3}
        copied = {n.key: n.copied_from for n in view.nodes}
        assert copied["think~00002"] == first and copied["think~00003"] is None


def test_the_copies_are_by_reference_and_keep_the_source_expiry() -> None:
    with Harness(agent, inline_limit=64) as h:  # every output of ~100 bytes goes to the blob store
        h.store.retention_s = 3600
        src = source_run(h)
        puts = h.codec.blobs.puts  # type: ignore[attr-defined]
        fid = h.fork(src, "think", iteration=2)
        assert h.codec.blobs.puts == puts  # type: ignore[attr-defined]  # no payload written
        source = {i["sk"]: i for i in h.store.node_items(src)}
        copies = [i for i in h.store.node_items(fid) if i.get("copied_from") == src]
        assert len(copies) == 7  # plan, think, approve, review of iteration 0, and those of iteration 1
        for c in copies:
            s = source[c["sk"]]
            assert (c.get("output"), c.get("state"), c["expires_at"]) == (
                s.get("output"),
                s.get("state"),
                s["expires_at"],
            )
            assert c["invocations"] == 0 and "cost_nano" not in c and "owner" not in c


def test_a_waiting_source_can_be_forked_and_only_finished_nodes_are_copied() -> None:
    with Harness(agent) as h:
        src = h.start("fork-agent", "w")
        h.run(src)
        h.send_event(src, "approve", {"approvals": ["ok-0"]}, iteration=0)
        h.run(src)  # now waiting in iteration 1
        assert h.waiting_for(src) == {"event": "approve", "iteration": 1}
        fid = h.fork(src, "approve", iteration=1, input={"edited": True})
        assert h.run(fid) == "WAITING" and h.waiting_for(fid) == {"event": "approve", "iteration": 1}
        keys = {n.key for n in h.view(fid).nodes}
        assert keys == {"plan", "think", "approve", "review", "think~00001", "approve~00001"}
        assert drive(h, fid) == "SUCCEEDED" and drive(h, src) == "SUCCEEDED"
        assert h.output(fid)["notes"] == h.output(src)["notes"] == notes("w", ["plain"] * TURNS)


def test_refusals() -> None:
    stateless = Workflow("fork-plain")

    @stateless.step()
    def one(ctx: Any, x: int) -> int:
        return x + 1

    with Harness(agent, stateless) as h:
        src = source_run(h)
        cases: list[tuple[type[Exception], dict[str, Any]]] = [
            (StepNotFound, {"node": "nope"}),
            (ValidationError, {"node": "think#00001"}),
            (InvalidRunState, {"node": "think", "iteration": TURNS + 1}),  # never ran in it
            (ValidationError, {"node": "think", "iteration": -1}),
            (ValidationError, {"node": "think", "iteration": 1, "state": {"turns": "many"}}),
            (ValidationError, {"node": "think", "iteration": 1, "state": {"unknown": 1}}),
            (StateNotDeclared, {"node": "plan", "state": {"tone": "x"}}),
        ]
        for exc, kw in cases:
            with pytest.raises(exc):
                h.fork(src, **kw)
        plain = h.start("fork-plain", 1)
        h.run(plain)
        with pytest.raises(StateNotDeclared):
            h.fork(plain, "one", state={"a": 1})
        waiting = h.start("fork-agent", "x")
        h.run(waiting)
        with pytest.raises(InvalidRunState):  # review never ran in it
            h.fork(waiting, "review")
        assert h.runs() == sorted([src, plain, waiting])  # nothing made by a refused fork
        assert h.fork(plain, "one", input=41, replace_input=True) in h.runs()


SQUARE = Workflow("fork-square")


@SQUARE.step()
def total(ctx: Any, xs: list[int]) -> int:
    return sum(xs)


PIPE = Workflow("fork-pipe")


@PIPE.step()
def nums(ctx: Any, n: int) -> list[int]:
    return list(range(n))


@PIPE.map()
def square(ctx: Any, x: int) -> int:
    return x * x


PIPE.call(SQUARE, name="sum")


@PIPE.step()
def report(ctx: Any, s: int) -> str:
    return f"sum={s}"


def test_map_and_call_nodes_are_copied_by_their_outputs_alone() -> None:
    with Harness(PIPE, SQUARE) as h:
        src = h.start("fork-pipe", 4)
        assert h.run(src) == "SUCCEEDED" and h.output(src) == "sum=14"
        runs = set(h.runs())
        fid = h.fork(src, "report", input=99, replace_input=True)
        assert h.run(fid) == "SUCCEEDED" and h.output(fid) == "sum=99"
        assert set(h.runs()) - runs == {fid}  # the child run is not copied
        keys = [i["sk"] for i in h.store.node_items(fid)]
        assert keys == ["N#nums", "N#report", "N#square", "N#sum"]  # no map items
        assert h.executions["square#00001"] == 1 and h.executions["total"] == 1
        view = h.view(fid).to_dict()
        assert view["forked_from"] == {"run_id": src, "node": "report", "iteration": 0}
        again = h.fork(src, "square")  # a map node starts again from its input
        assert h.run(again) == "SUCCEEDED" and h.output(again) == "sum=14"
        (child,) = [r for r in runs if r != src]  # a step of the child run: fork the child run itself
        with pytest.raises(StepNotFound):
            h.fork(src, "total")
        alone = h.fork(child, "total", input=[5], replace_input=True)
        assert h.run(alone) == "SUCCEEDED" and h.output(alone) == 5
        assert h.engine.get_run(alone).parent is None and h.output(src) == "sum=14"  # reports to no parent


LONG = Workflow("fork-long", max_iterations=402)


@LONG.step()
def a(ctx: Any, n: int) -> int:
    return n + 1


@LONG.step()
def b(ctx: Any, n: int) -> int:
    return n


@LONG.step(routes=("a", "__end__"))
def c(ctx: Any, n: int) -> Any:
    from stepchain import END, goto

    return goto("a", n) if n < 401 else goto(END, n)


def test_a_fork_of_iteration_400_copies_1200_items_in_12_transactions() -> None:
    """The copies stay bounded: one item per node and iteration before the chosen node (3 x 400),
    written 100 per transaction, plus one query of the source's node items and the run's own
    transaction (the figure README.md states)."""
    with Harness(LONG) as h:
        src = h.start("fork-long", 0)
        assert h.run(src) == "SUCCEEDED" and h.output(src) == 401
        calls = h.store.calls  # type: ignore[attr-defined]
        fid = h.fork(src, "a", iteration=400, input=1000, replace_input=True)
        made = h.store.calls - calls  # type: ignore[attr-defined]
        copies = [i for i in h.store.node_items(fid) if i.get("copied_from") == src]
        assert len(copies) == 1200
        # get_run, the query of the source's node items, 12 copy transactions, the run's transaction
        assert made == 1 + 1 + 12 + 1, made
        assert h.run(fid) == "SUCCEEDED" and h.output(fid) == 1001


def approve_all(h: Any, run_id: str) -> str:
    """Approve each turn (no sweeper, no virtual time: the embedded runtime's own workers move it)."""
    for _ in range(4 * TURNS):
        status = str(h.run(run_id))
        waiting = h.waiting_for(run_id)
        if status != "WAITING" or waiting is None:
            return status
        h.send_event(run_id, "approve", {"approvals": [f"ok-{waiting['iteration']}"]}, iteration=waiting["iteration"])
    return str(h.status(run_id))


@pytest.mark.parametrize(("boundary", "node"), [("api_fork", "think"), ("after_checkpoint", "think")])
def test_a_fork_on_the_embedded_runtime_with_a_crash(boundary: str, node: str) -> None:
    """``LocalHarness``: real worker processes; a worker killed after the fork's first checkpoint is
    replaced, and a fork whose first activation died with the API call is re-issued by the retry."""
    from pathlib import Path

    from stepchain.testing import LocalHarness

    root = str(Path(__file__).resolve().parents[2])
    with LocalHarness("tests.integration.fork_flows:agent", budget_ms=2000, pythonpath=[root]) as h:
        src = h.start("fork-agent", "t")
        assert approve_all(h, src) == "SUCCEEDED"
        h.crash_at(boundary, node=node)
        fid = fork(h, src, iteration=2, state={"tone": "formal"})
        assert approve_all(h, fid) == "SUCCEEDED"
        assert h.output(fid)["notes"] == FORMAL
        ran = {k: v for k, v in h.executions.items() if k.startswith("think")}
        assert ran == {"think": 1, "think~00001": 1, "think~00002": 2, "think~00003": 2}, ran  # source + fork


@pytest.mark.parametrize("kind", ["memory", "sqs", "sfn"])
def test_the_sweeper_starts_a_fork_whose_caller_died_before_its_first_activation(kind: str) -> None:
    """No retry (no idempotency key): the fork is RUNNING with its first node PENDING; the sweeper
    re-issues it with its source found among the copies (Step Functions: starts its execution at
    ``think`` in iteration 2), and the edited state reaches it."""
    with HARNESSES[kind](agent) as h:
        src = source_run(h)
        h.crash_at("api_fork", node="think")
        with pytest.raises(InjectedCrash):
            h.fork(src, "think", iteration=2, state={"tone": "formal"})
        (fid,) = set(h.runs()) - {src}
        assert h.status(fid) == "RUNNING" and h.store.get_node(fid, "think~00002").status.value == "PENDING"
        assert drive(h, fid) == "SUCCEEDED"  # time passes, the sweeper acts
        assert h.output(fid)["notes"] == FORMAL
        assert [TOOL_CALLS[(fid, it)] for it in range(TURNS)] == [0, 0, 1, 1]


def test_stepchain_show_and_watch_name_the_source_and_mark_the_copies() -> None:
    from stepchain.observe.timeline import render_html, render_text
    from stepchain.ui.watch import render

    with Harness(agent) as h:
        src = source_run(h)
        fid = h.fork(src, "think", iteration=2)
        assert drive(h, fid) == "SUCCEEDED"
        view = h.view(fid)
        text = render_text(view)
        assert f"forked from run {src} at think (iteration 2)" in text
        assert sum(" copied " in line for line in text.splitlines()) == 7
        assert f"Forked from run {src} at think (iteration 2)" in render_html(view)
        lines = render(view.to_dict())
        assert f"(forked from {src} at think, iteration 2)" in lines[0]
        assert sum("copied" in line for line in lines) == 7
        assert "forked from" not in render_text(h.view(src))


def test_copies_are_cut_into_transactions_by_count_and_size() -> None:
    from stepchain.store.fork import COPY_BYTES, _chunks

    small = [{"sk": f"N#a~{i:05d}", "output": "x"} for i in range(250)]
    assert [len(c) for c in _chunks(small)] == [100, 100, 50]
    big = [{"sk": f"N#a~{i:05d}", "output": "x" * 100_000} for i in range(70)]  # ~7 MB: over DynamoDB's 4 MB
    sizes = [sum(len(i["output"]) for i in c) for c in _chunks(big)]
    assert len(sizes) == 3 and all(s <= COPY_BYTES for s in sizes)


def test_the_readme_fork_example_runs() -> None:
    """README's fork block, as written, on README's durable-state agent after three turns."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    agent_code = readme.split("### Durable run state")[1].split("```python\n")[1].split("```")[0]
    fork_code = readme.split("### Fork a run from a step")[1].split("```python\n")[1].split("```")[0]
    ns: dict[str, Any] = {}
    exec(compile(agent_code, "README.md", "exec", dont_inherit=True), ns)  # our own README
    with Harness(ns["agent"]) as h:
        run_id = h.start("agent", "refunds")
        for it in range(3):
            h.run(run_id)
            h.send_event(run_id, "approve", {"approved_by": f"ann{it}"}, iteration=it)
        assert h.run(run_id) == "SUCCEEDED"
        ns.update(h=h, run_id=run_id, engine=h.engine)
        exec(compile(fork_code, "README.md", "exec", dont_inherit=True), ns)
        forks = {ns["fork_id"], ns["run"].run_id, *h.runs()} - {run_id}
        assert len(forks) == 3
        first = h.run_ids[1]  # the first fork: act in iteration 2 on another task
        assert h.run(first) == "WAITING"
        h.send_event(first, "approve", {"approved_by": "bob"}, iteration=2)
        assert h.run(first) == "SUCCEEDED"
        out = h.output(first)
        assert out["notes"][:2] == h.output(run_id)["notes"][:2] and out["turns"] == 3
        assert out["notes"][2] == "looked into battery prices in 2030" and out["approved_by"] == "bob"
