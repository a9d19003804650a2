"""Step fusion (issue 20, stepchain.engine.fusion) in process: consecutive plain steps of one
function run in one invocation, one conditional write per fused step, and a crash at every
boundary of a fused chain resumes at the first unfinished node without running a completed step
(or repeating an effect) again. The other harnesses: tests/integration/test_fusion_transports.py."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from tests.integration.fusion_flows import EFFECTS, START, budgeted, chain, flaky_chain, looped, stateful, with_child

from stepchain import Workflow
from stepchain.engine.fusion import ENV_MAX_STEPS
from stepchain.store.records import NodeStatus
from stepchain.testing import Harness


def effects_of(run_id: str) -> Counter[str]:
    return Counter({k: v for (r, k), v in EFFECTS.items() if r == run_id})


def run_chain(h: Harness, name: str, start: Any = START) -> str:
    rid = h.start(name, start)
    assert h.run(rid) == "SUCCEEDED"
    return rid


def test_a_chain_runs_in_invocations_of_at_most_the_cap_one_write_per_fused_step() -> None:
    wf = chain("fuse-25", 25)
    with Harness(wf, backend="moto") as h:
        rid = run_chain(h, wf.name)
        assert h.output(rid)["n"] == 25 and h.output(rid)["path"] == [f"s{i}" for i in range(25)]
        assert [i.key for i in h.invocations] == ["s0", "s10", "s20"]  # 10 + 10 + 5 steps
        recs = {r.key: r for r in h.store.list_nodes(rid)}
        assert all(r.status is NodeStatus.SUCCEEDED and r.attempts == 1 and r.invocations == 1 for r in recs.values())
        assert sorted(k for k, r in recs.items() if not r.fused) == ["s0", "s10", "s20"]
        assert all(h.executions[k] == 1 for k in recs) and set(effects_of(rid).values()) == {1}
        view = h.view(rid)
        assert [n.key for n in view.nodes if not n.fused] == ["s0", "s10", "s20"]
        assert view.fusion_saved["fused_steps"] == 22 and view.fusion_saved["requests"]["ddb_write"] == 22
        assert view.fusion_saved["usd"] > 0
        # node writes: 3 claims + 25 checkpoints, + 2 per effect (its marker and result) per step
        writes = h.api_calls["dynamodb.UpdateItem"] + h.api_calls["dynamodb.PutItem"]
        assert writes - 2 * 25 - 1 <= 3 + 25 + 2  # + the run's start transaction, its final write


def test_fuse_false_and_the_cap_start_a_new_invocation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_MAX_STEPS, "3")  # the operator's cap lowers the definition's (10)
    wf = chain("fuse-opt-out", 8, no_fuse=(5,))
    with Harness(wf) as h:
        rid = run_chain(h, wf.name)
        assert [i.key for i in h.invocations] == ["s0", "s3", "s5"]  # 3 + 2 (s5 opts out) + 3
        assert h.output(rid)["n"] == 8


def test_the_definition_is_the_switch_the_operators_cap_never_raises_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A workflow defined without ``fuse`` never fuses, whatever STEPCHAIN_FUSE_MAX_STEPS says (its
    generated state machine has no ``.fused`` Choice); ``fuse=True`` fuses with no env var at all."""
    off, on = chain("fuse-off", 4, fuse=False), chain("fuse-on", 4, fuse=True)
    monkeypatch.setenv(ENV_MAX_STEPS, "50")
    with Harness(off) as h:
        run_chain(h, off.name)
        assert [i.key for i in h.invocations] == ["s0", "s1", "s2", "s3"]
    monkeypatch.delenv(ENV_MAX_STEPS)
    with Harness(on) as h:
        run_chain(h, on.name)
        assert [i.key for i in h.invocations] == ["s0"]


def test_the_deadline_hands_off_when_the_next_steps_timeout_no_longer_fits() -> None:
    def slow(ctx: Any, x: dict[str, Any]) -> dict[str, Any]:
        h.clock.advance(4_000)
        return {**x, "n": x["n"] + 1, "path": [*x["path"], ctx.key]}

    wf = Workflow("fuse-deadline", fuse=True)  # the function's timeout: 20 s
    for i in range(7):
        wf.step(name=f"s{i}", timeout_s=10)(slow)
    with Harness(wf) as h:
        rid = run_chain(h, wf.name)
        # 4 s a step: after 3 steps 8 s are left, less than the next step's 10 s (+ margin)
        assert [i.key for i in h.invocations] == ["s0", "s3", "s6"]
        assert h.output(rid)["n"] == 7


@pytest.mark.parametrize("boundary", ["after_claim", "after_checkpoint", "before_handoff", "effect_window"])
@pytest.mark.parametrize("at", ["s0", "s1", "s5", "s9", "s10", "s11"])
def test_a_crash_at_every_boundary_resumes_at_the_first_unfinished_node(boundary: str, at: str) -> None:
    """s0..s9 are one fused chain, s10..s13 the next (cap 10); a fused step has no handoff, so
    ``before_handoff`` fires only at s10 (s0's is inside ``start``: the API's own crash tests)."""
    wf = chain("fuse-crash", 14)
    with Harness(wf) as h:
        h.crash_at(boundary, node=at, skip=1 if (boundary, at) == ("before_handoff", "s0") else 0)
        rid = run_chain(h, wf.name)
        assert h.output(rid)["n"] == 14 and h.output(rid)["path"] == [f"s{i}" for i in range(14)]
        assert all(n == 1 for n in h.executions.values()), h.executions  # no completed step ran again
        effects = effects_of(rid)
        want = {f"s{i}": 1 for i in range(14)}
        if boundary == "effect_window" and h.probe.crashes:
            want[at] = 2  # the effect returned, its result was not checkpointed: it runs again
        assert effects == want
        recs = {r.key: r for r in h.store.list_nodes(rid)}
        assert all(r.status is NodeStatus.SUCCEEDED for r in recs.values()) and len(recs) == 14


@pytest.mark.parametrize("boundary", ["after_claim", "after_checkpoint", "effect_window"])
def test_a_crash_twice_in_one_chain_and_duplicates(boundary: str) -> None:
    wf = chain("fuse-dup", 12)
    with Harness(wf, duplicate_delivery=True) as h:
        h.crash_at(boundary, node="s3")
        h.crash_at(boundary, node="s7")
        rid = run_chain(h, wf.name)
        assert h.output(rid)["n"] == 12
        assert all(n == 1 for n in h.executions.values()), h.executions
        assert all(v == 1 or boundary == "effect_window" for v in effects_of(rid).values())


def test_a_late_duplicate_of_the_chains_message_is_held_then_walks_the_chain() -> None:
    wf = chain("fuse-late", 6)
    with Harness(wf) as h:
        rid = run_chain(h, wf.name)
        first = h.store.get_node(rid, "s0")
        assert first is not None and first.chain_until_ms is not None
        from stepchain.handoff.messages import Activation

        h.redeliver(Activation(rid, wf.name, wf.version, "s0"))
        assert h.run(rid) == "SUCCEEDED"
        assert all(n == 1 for n in h.executions.values())
        assert h.invocations[-1].outcome == "DONE"


def test_fusion_follows_a_loop_and_a_goto() -> None:
    wf = looped()
    with Harness(wf) as h:
        rid = run_chain(h, wf.name)
        out = h.output(rid)
        assert out["path"] == [
            "a",
            "b",
            "c",
            "a~00001",
            "b~00001",
            "c~00001",
            "a~00002",
            "b~00002",
            "c~00002",
            "d~00002",
        ]
        assert [i.key for i in h.invocations] == ["a"]  # 10 steps, one invocation


@pytest.mark.parametrize("boundary", ["after_checkpoint", "after_claim"])
def test_a_crash_in_a_loop_resumes_in_the_right_iteration(boundary: str) -> None:
    wf = looped("fuse-loop-crash")
    with Harness(wf) as h:
        h.crash_at(boundary, node="b~00001")
        rid = run_chain(h, wf.name)
        assert len(h.output(rid)["path"]) == 10 and all(n == 1 for n in h.executions.values())


def test_a_fused_chain_inside_a_child_workflow() -> None:
    parent, child = with_child()
    with Harness(parent, child) as h:
        h.crash_at("after_checkpoint", node="s1")  # inside the child's fused chain
        rid = run_chain(h, parent.name)
        assert h.output(rid)["path"][-2:] == ["p2", "p3"] and h.output(rid)["n"] == 7
        assert all(n == 1 for n in h.executions.values())
        keys = [i.key for i in h.invocations]
        # the child: one chain, its redelivery, and s2 (taken over: handed off, not run inline)
        assert keys.count("s0") == 2 and "s1" not in keys and keys.count("s2") == 1


def test_a_retry_inside_a_fused_chain_is_the_fused_steps_own() -> None:
    wf = flaky_chain()
    with Harness(wf) as h:
        rid = run_chain(h, wf.name)
        rec = h.store.get_node(rid, "flaky")
        assert rec is not None and rec.fused and rec.attempts == 2 and rec.status is NodeStatus.SUCCEEDED
        assert [i.key for i in h.invocations] == ["s0", "flaky"]  # the retry: its own delayed activation
        assert h.output(rid)["path"] == ["s0", "flaky", "s2"]


def test_state_and_stream_are_kept_across_fused_steps() -> None:
    wf = stateful()
    with Harness(wf) as h:
        h.crash_at("after_checkpoint", node="t1")
        rid = run_chain(h, wf.name, 0)
        assert h.output(rid) == 4
        # the chain, its redelivery after the crash, t2 taken over and handed off (its chain: t2, t3)
        assert [i.key for i in h.invocations] == ["t0", "t0", "t2"]


def test_the_sweeper_leaves_a_live_chain_alone_and_moves_a_dead_one() -> None:
    wf = chain("fuse-sweep", 4)
    with Harness(wf) as h:
        h.crash_at("after_checkpoint", node="s1")
        rid = h.start(wf.name, START)
        h.run(rid, max_activations=1)  # the chain dies after s1's checkpoint: s2 absent, s1 holds it
        rec = h.store.get_node(rid, "s1")
        assert rec is not None and rec.chain_until_ms is not None and h.store.get_node(rid, "s2") is None
        h.clock.set_to(rec.chain_until_ms - 1)
        assert h.sweep() == 0
        assert h.run(rid) == "SUCCEEDED" and all(n == 1 for n in h.executions.values())


def test_a_budget_hold_inside_a_fused_chain_ends_it_with_the_hold() -> None:
    wf = budgeted()
    with Harness(wf) as h:
        rid = h.start(wf.name, START)
        assert h.run(rid) == "WAITING" and h.waiting_for(rid) == {"event": "budget", "iteration": 0}
        held = h.store.get_node(rid, "b2")
        assert held is not None and held.status is NodeStatus.RETRYING and held.fused  # created by the hold's write
        assert [i.key for i in h.invocations] == ["b0"]  # b0, b1 ran; b2's check held the chain
        h.raise_budget(rid, 1.0)
        assert h.run(rid) == "SUCCEEDED" and h.output(rid)["path"] == ["b0", "b1", "b2"]
        assert all(n == 1 for n in h.executions.values())


def test_the_embedded_runtime_fuses_and_survives_a_crash_in_the_chain() -> None:
    from pathlib import Path

    from stepchain.testing import LocalHarness

    root = Path(__file__).resolve().parents[2]
    with LocalHarness("tests.integration.fusion_flows:LOCAL", pythonpath=[str(root)], budget_ms=8_000) as h:
        h.crash_at("after_checkpoint", node="s2")
        rid = h.start("fuse-local", START)
        assert h.run(rid, timeout_s=60) == "SUCCEEDED"
        assert h.output(rid)["path"] == [f"s{i}" for i in range(6)]
        recs = {r.key: r for r in h.store.list_nodes(rid)}
        assert recs["s1"].fused and recs["s2"].fused and h.restarts >= 1
        # s2's checkpoint was s3's claim: the worker died holding s3, the fresh one took it over
        assert (recs["s3"].attempts, recs["s3"].crashes) == (2, 1)
        assert all(r.attempts == 1 for k, r in recs.items() if k != "s3")


def test_a_cancel_during_a_fused_step_ends_the_chain() -> None:
    wf = Workflow("fuse-cancel", fuse=True)
    holder: list[Harness] = []
    for i in range(5):

        @wf.step(name=f"c{i}")
        def c(ctx: Any, x: int) -> int:
            if ctx.key == "c2":
                holder[0].cancel(ctx.run_id)  # the API cancels while the fused step c2 runs
            return x + 1

    with Harness(wf) as h:
        holder.append(h)
        rid = h.start(wf.name, 0)
        assert h.run(rid) == "CANCELLED"
        assert h.executions["c2"] == 1 and "c3" not in h.executions  # c2's checkpoint refused, the chain ended
        c2 = h.store.get_node(rid, "c2")
        assert c2 is not None and c2.status is NodeStatus.CANCELLED


@pytest.mark.parametrize("boundary", ["after_checkpoint", "after_claim"])
def test_a_crash_holding_a_fused_step_is_its_takeover(boundary: str) -> None:
    """s1's checkpoint claims s2: dying after it (or after s2's implied claim) is s2's takeover, as a
    crash after a claim is: a crashed invocation in s2's history, an attempt and a crash counted."""
    wf = chain("fuse-takeover", 4)
    with Harness(wf) as h:
        h.crash_at(boundary, node="s1" if boundary == "after_checkpoint" else "s2")
        rid = run_chain(h, wf.name)
        s2 = h.store.get_node(rid, "s2")
        assert s2 is not None and (s2.attempts, s2.crashes, s2.invocations) == (2, 1, 2)
        assert [i.outcome for i in s2.history] == ["crashed", "succeeded"]
        assert [(c["kind"], c["node"]) for c in h.view(rid).crash_events] == [("takeover", "s2")]
        assert h.view(rid).restart_tax_avoided.crashes == 1 and all(n == 1 for n in h.executions.values())


def test_a_step_with_a_concurrency_or_rate_limit_is_never_fused() -> None:
    """A limited step always starts from a handoff (engine.fusion.static_fusable): a throttled one then
    waits without a running Lambda; its workflow-level limits count too."""
    from stepchain import Concurrency, RateLimit, Workflow

    wf = Workflow("fuse-limited", fuse=10)
    for i in range(4):
        lim = [Concurrency(2, key=lambda _c, _x: "k", name="fuse-slots")] if i == 2 else []
        wf.step(name=f"s{i}", limits=lim)(lambda ctx, x: (x or 0) + 1)
    with Harness(wf) as h:
        rid = run_chain(h, wf.name, 0)
        assert h.output(rid) == 4
        assert [i.key for i in h.invocations] == ["s0", "s2"]  # s1 fused; s2 handed off, s3 fused after it
    wide = Workflow(
        "fuse-limited-wf", fuse=10, limits=[RateLimit(1000, per_s=60, key=lambda _c, _x: "k", name="fuse-rpm")]
    )
    for i in range(3):
        wide.step(name=f"s{i}")(lambda ctx, x: (x or 0) + 1)
    with Harness(wide) as h:
        rid = run_chain(h, wide.name, 0)
        assert h.output(rid) == 3 and not any(n.fused for n in h.view(rid).nodes)
        assert sorted({i.key for i in h.invocations}) == ["s0", "s1", "s2"]  # (a throttled step: again)
