"""Step fusion on the moto-backed transports: SqsHarness (the deployed SQS worker, real queues) and
SfnHarness (the generated state machine, where a fused chain's task leaves through its ``.fused``
Choice). A crash inside a fused chain and duplicate delivery: no completed step runs again."""

from __future__ import annotations

import pytest
from tests.integration.fusion_flows import EFFECTS, START, chain, flaky_chain, looped, with_child

from stepchain.engine.heartbeat import ENV_INTERVAL, ENV_VISIBILITY
from stepchain.testing import Harness, SfnHarness, SqsHarness

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


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("boundary", "at"), [("after_checkpoint", "s2"), ("after_claim", "s3"), ("before_handoff", "s5")]
)
def test_a_crash_inside_a_fused_chain(kind: str, boundary: str, at: str) -> None:
    wf = chain(f"fuse-tc-{kind}", 8, fuse=FUSE)
    with KINDS[kind](wf) as h:
        h.crash_at(boundary, node=at)
        rid = done(h, wf.name)
        assert h.output(rid)["n"] == 8 and all(n == 1 for n in h.executions.values()), h.executions
        assert h.probe.crashes == [(boundary, at)]


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
