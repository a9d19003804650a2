"""Step fusion on the moto-backed transports: SqsHarness (the deployed SQS worker, real queues) and
SfnHarness (the generated state machine, where a fused chain's task leaves through its ``.fused``
Choice). A crash inside a fused chain and duplicate delivery: no completed step runs again."""

from __future__ import annotations

import pytest
from tests.integration.fusion_flows import EFFECTS, START, chain, flaky_chain, looped, with_child

from stepchain.engine.heartbeat import ENV_INTERVAL, ENV_VISIBILITY
from stepchain.testing import WORKER_BOUNDARIES, Harness, SfnHarness, SqsHarness

KINDS = {"sqs": SqsHarness, "sfn": SfnHarness}


#: the workflows' ``Workflow(fuse=...)`` here: at most 5 steps per invocation
FUSE = 5


def done(h: Harness, name: str) -> str:
    rid = h.start(name, START)
    assert h.run(rid) == "SUCCEEDED"
    return rid


@pytest.mark.parametrize("kind", KINDS)
def test_a_chain_fuses_on_every_transport(kind: str) -> None:
    wf = chain(f"fuse-t-{kind}", 12, fuse=FUSE)
    with KINDS[kind](wf) as h:
        rid = done(h, wf.name)
        assert h.output(rid)["path"] == [f"s{i}" for i in range(12)]
        assert [i.key for i in h.invocations] == ["s0", "s5", "s10"]
        assert all(n == 1 for n in h.executions.values())
        saved = h.view(rid).fusion_saved  # 9 handoffs not made, priced as the transport's
        handoff = {"sqs_send": 9, "sqs_receive": 9, "sqs_delete": 9} if kind == "sqs" else {"sfn_transition": 9}
        assert saved["requests"] == {"ddb_write": 9, "ddb_wru": 9, "lambda_invoke": 9, **handoff}
        assert saved["handoff_s"] >= 0 and saved["usd"] > 0


#: every worker boundary a chain of plain steps reaches (``mid_item``/``item_window`` are a map's),
#: at a fused step inside the first chain (s0..s4); a fused step has no handoff of its own, so
#: ``before_handoff`` is at s5, the head of the next chain
AT = {"after_claim": "s3", "after_checkpoint": "s2", "effect_window": "s3", "before_handoff": "s5"}
#: one run, chains of 3 (s0-s2, s3-s5, s6-s8, s9-s11), a crash at every boundary at each position a
#: chain has: its head, a fused step, its tail (whose checkpoint ends the chain), the next chain's
#: handoff (a recovery hands the step it takes over off: chains after a crash start there)
EVERYWHERE = [
    ("after_claim", "s0"),  # head
    ("effect_window", "s1"),  # fused
    ("after_checkpoint", "s5"),  # tail
    ("before_handoff", "s6"),  # the handoff that ends chain 2
    ("effect_window", "s6"),  # head
    ("after_claim", "s7"),  # fused (the implied claim)
    ("after_checkpoint", "s10"),  # fused
    ("effect_window", "s11"),  # tail, the run's last step
]


def test_the_cases_cover_every_boundary_a_chain_reaches() -> None:
    chain_boundaries = {b for b in WORKER_BOUNDARIES if b not in ("mid_item", "item_window")}
    assert set(AT) == chain_boundaries and {b for b, _ in EVERYWHERE} == chain_boundaries


def effects(rid: str) -> dict[str, int]:
    return {k: v for (r, k), v in EFFECTS.items() if r == rid}


def once_but_crashed_effects(h: Harness, rid: str, n: int) -> None:
    """No completed step ran again; every effect ran once, twice after a crash inside its own window."""
    assert all(v == 1 for v in h.executions.values()) and len(h.executions) == n, h.executions
    crashed = {k for b, k in h.probe.crashes if b == "effect_window"}
    assert effects(rid) == {f"s{i}": 2 if f"s{i}" in crashed else 1 for i in range(n)}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("boundary", AT)
def test_a_crash_inside_a_fused_chain(kind: str, boundary: str) -> None:
    wf = chain(f"fuse-tc-{kind}", 8, fuse=FUSE)
    with KINDS[kind](wf) as h:
        h.crash_at(boundary, node=AT[boundary])
        rid = done(h, wf.name)
        assert h.output(rid)["n"] == 8 and h.probe.crashes == [(boundary, AT[boundary])]
        once_but_crashed_effects(h, rid, 8)


@pytest.mark.parametrize("kind", KINDS)
def test_a_crash_at_every_boundary_and_position_of_fused_chains_with_duplicates(kind: str) -> None:
    wf = chain(f"fuse-te-{kind}", 12, fuse=3)
    with KINDS[kind](wf, duplicate_delivery=True) as h:
        for boundary, at in EVERYWHERE:
            h.crash_at(boundary, node=at)
        rid = done(h, wf.name)
        assert h.output(rid)["path"] == [f"s{i}" for i in range(12)]
        assert sorted(h.probe.crashes) == sorted(EVERYWHERE)  # every planned crash happened
        once_but_crashed_effects(h, rid, 12)


@pytest.mark.parametrize("kind", KINDS)
def test_duplicate_delivery_of_a_fused_chain(kind: str) -> None:
    wf = chain(f"fuse-td-{kind}", 7, fuse=FUSE)
    with KINDS[kind](wf, duplicate_delivery=True) as h:
        rid = done(h, wf.name)
        assert h.output(rid)["n"] == 7 and all(n == 1 for n in h.executions.values())


@pytest.mark.parametrize("kind", KINDS)
def test_a_loop_a_retry_and_a_child_on_every_transport(kind: str) -> None:
    loop, flaky = looped(f"fuse-tl-{kind}", fuse=FUSE), flaky_chain(f"fuse-tf-{kind}", fuse=FUSE)
    parent, child = with_child(f"fuse-tp-{kind}", fuse=FUSE)
    with KINDS[kind](loop, flaky, parent, child) as h:
        runs = [done(h, loop.name), done(h, flaky.name), done(h, parent.name)]
        assert len(h.output(runs[0])["path"]) == 10
        assert h.output(runs[1])["path"] == ["s0", "flaky", "s2"]
        assert h.output(runs[2])["n"] == 7
        # every step's effect ran once per run (node keys repeat across these workflows)
        assert {v for (r, _), v in EFFECTS.items() if r in set(runs) | set(h.runs())} == {1}


@pytest.mark.parametrize("crash", [None, "after_checkpoint"])
def test_a_fused_chain_under_the_sqs_heartbeat(crash: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The deployed SQS worker with its heartbeat (V = 20 s, H = 5 s): the chain's message stays in
    flight while it runs; killed mid-chain, it comes back after V and waits for the chain's lease."""
    monkeypatch.setenv(ENV_VISIBILITY, "20")
    monkeypatch.setenv(ENV_INTERVAL, "5")
    wf = chain(f"fuse-hb-{int(crash is not None)}", 8, fuse=FUSE)
    with SqsHarness(wf, heartbeat="env") as h:
        if crash:
            h.crash_at(crash, node="s3")
        rid = done(h, wf.name)
        assert h.output(rid)["n"] == 8 and all(n == 1 for n in h.executions.values())
        assert {v for (r, _), v in EFFECTS.items() if r == rid} == {1}
        assert h.invocations[0].key == "s0" and (crash is not None or len(h.invocations) == 2)


@pytest.mark.parametrize("kind", KINDS)
def test_crashes_in_different_fused_steps_do_not_spend_one_heads_redeliveries(kind: str) -> None:
    """One crash more than a message comes back (SQS receive count: 5, the Step Functions task's
    Retry: 3), each in another step of one fused chain: unfused, each step's own message comes back
    once. Fused, a recovery hands the step it takes over off, so the next crash comes back through
    that step's own message, not through the chain head's again (exhausted: a FAILED or stranded run)."""
    crashes = {"sqs": 6, "sfn": 4}[kind]
    wf = chain(f"fuse-tr-{kind}", 8, fuse=10)
    with KINDS[kind](wf) as h:
        for i in range(1, crashes + 1):
            h.crash_at("after_checkpoint", node=f"s{i}")
        rid = done(h, wf.name)
        assert h.output(rid)["n"] == 8 and len(h.probe.crashes) == crashes
        once_but_crashed_effects(h, rid, 8)
