"""Dollar budgets per run (issue 19, first slice; stepchain.engine.budget), on every harness.

A run of a budgeted workflow is checked before each step: spent (LLM + compute, ADDed to the RUN
item by each attempt) + the step's ``estimate_usd`` must stay within the budget. Over it, the run
pauses in its ``budget`` wait (a raised budget resumes it) or fails, as the workflow chooses.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest

from stepchain import StepContext, Workflow
from stepchain.engine.budget import NANO, RECHECK_S
from stepchain.exceptions import BudgetExceeded, InvalidRunState, ValidationError
from stepchain.probe import CrashRule
from stepchain.testing import Harness, SfnHarness, SqsHarness

HARNESSES: dict[str, Callable[..., Harness]] = {
    "memory": lambda *wfs, **kw: Harness(*wfs, backend="memory", **kw),
    "moto": lambda *wfs, **kw: Harness(*wfs, backend="moto", **kw),
    "sqs": lambda *wfs, **kw: SqsHarness(*wfs, **kw),
    "sfn": lambda *wfs, **kw: SfnHarness(*wfs, **kw),
}
CALLS: list[str] = []

#: each step's LLM call costs $0.04; the workflow's budget is $0.10; each step declares $0.05
agent = Workflow("budgeted-agent", budget_usd=0.10)
strict = Workflow("budgeted-strict", budget_usd=0.10, on_budget="fail")
free = Workflow("unbudgeted-agent")


def llm(ctx: StepContext, name: str, x: int) -> int:
    CALLS.append(name)
    ctx.record_cost(usd=0.04)
    return x + 1


for wf in (agent, strict, free):
    for name in ("plan", "search", "write", "review"):

        def fn(ctx: StepContext, x: int, name: str = name) -> int:
            return llm(ctx, name, x)

        fn.__name__ = name
        wf.step(estimate_usd=0.05)(fn)


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    CALLS.clear()
    yield
    CALLS.clear()


def recheck(h: Harness, kind: str, moved: Callable[[], bool]) -> None:
    """Step Functions: a held task wakes from its Wait state at its re-check (virtual time), in
    moto's thread; wait (real time, bounded) until it ``moved`` before ``run`` looks again."""
    if kind != "sfn":
        return
    h.advance(RECHECK_S)
    deadline = time.monotonic() + 20
    while not moved() and time.monotonic() < deadline:
        time.sleep(0.05)


def cancel_held(h: Harness) -> None:
    """Cancel the runs left held (Step Functions: stop their executions before moto goes away)."""
    for rid in h.runs():
        if h.status(rid) in ("WAITING", "RUNNING"):
            h.cancel(rid)


def spent_usd(h: Harness, rid: str) -> float:
    return h.engine.get_run(rid).spent_nano / NANO


@pytest.mark.parametrize("kind", list(HARNESSES))
def test_a_run_over_its_budget_pauses_before_the_next_step_and_resumes_when_raised(kind: str) -> None:
    with HARNESSES[kind](agent) as h:
        rid = h.start("budgeted-agent", 0)
        # plan ($0.04) and search ($0.08 spent) run; write would reach 0.08 + 0.05 > 0.10: held
        assert h.run(rid) == "WAITING"
        assert CALLS == ["plan", "search"]
        assert h.waiting_for(rid) == {"event": "budget", "iteration": 0}
        spent = spent_usd(h, rid)
        assert 0.08 <= spent < 0.081  # LLM + compute
        assert spent <= 0.10 + 0.05  # never more than budget + one step's estimate
        totals = h.view(rid).totals
        assert totals["budget_usd"] == 0.10 and totals["budget_spent_usd"] == spent
        h.raise_budget(rid, 0.50)
        recheck(h, kind, lambda: "write" in CALLS)  # Step Functions: the held task sleeps until its re-check
        assert h.run(rid) == "SUCCEEDED"
        assert CALLS == ["plan", "search", "write", "review"]  # each step ran once
        assert h.output(rid) == 4
        assert 0.16 <= spent_usd(h, rid) < 0.161


@pytest.mark.parametrize("kind", list(HARNESSES))
def test_an_approval_lets_the_held_step_run_and_only_it(kind: str) -> None:
    with HARNESSES[kind](agent) as h:
        rid = h.start("budgeted-agent", 0)
        assert h.run(rid) == "WAITING"
        h.approve_budget(rid)
        recheck(h, kind, lambda: "write" in CALLS)
        assert h.run(rid) == "WAITING"  # write ran; review is held again
        assert CALLS.count("write") == 1 and "review" not in CALLS
        assert h.waiting_for(rid) == {"event": "budget", "iteration": 0}
        assert spent_usd(h, rid) <= h.engine.get_run(rid).budget_nano / NANO  # within the approved budget
        cancel_held(h)


@pytest.mark.parametrize("kind", ["memory", "sqs"])
def test_a_held_run_rechecks_its_budget_on_its_own(kind: str) -> None:
    with HARNESSES[kind](agent) as h:
        rid = h.start("budgeted-agent", 0)
        assert h.run(rid) == "WAITING"
        h.engine.store.set_budget(rid, NANO, h.clock.now_ms())  # raised behind the API's back
        h.advance(RECHECK_S)
        assert h.run(rid) == "SUCCEEDED"
        assert CALLS == ["plan", "search", "write", "review"]


@pytest.mark.parametrize("kind", ["memory", "sfn"])
def test_on_budget_fail_fails_the_run_before_the_step(kind: str) -> None:
    with HARNESSES[kind](strict) as h:
        rid = h.start("budgeted-strict", 0)
        assert h.run(rid) == "FAILED"
        assert CALLS == ["plan", "search"]
        err = h.engine.get_run(rid).error
        assert err is not None and err["type"] == "BudgetExceeded" and err["node"] == "write"


def test_a_budget_given_at_start_overrides_the_workflows() -> None:
    with Harness(agent, free) as h:
        rid = h.start("budgeted-agent", 0, budget_usd=0.05)
        assert h.run(rid) == "WAITING"
        assert CALLS == ["plan"]
        with pytest.raises(ValidationError):
            h.start("unbudgeted-agent", 0, budget_usd=1.0)  # a run is limited only if its workflow is
        for bad in (-1, "1", True, float("nan")):
            with pytest.raises(ValidationError):
                h.start("budgeted-agent", 0, budget_usd=bad)


def test_only_a_held_run_takes_an_approval_and_only_a_budgeted_active_run_a_budget() -> None:
    with Harness(agent, free) as h:
        rid, other = h.start("budgeted-agent", 0), h.start("unbudgeted-agent", 0)
        with pytest.raises(InvalidRunState):
            h.approve_budget(rid)  # RUNNING: nothing held
        with pytest.raises(InvalidRunState):
            h.raise_budget(other, 1.0)  # no budget
        with pytest.raises(ValidationError):
            h.raise_budget(rid, -1)
        h.raise_budget(rid, 1.0)
        assert h.run(rid) == "SUCCEEDED"
        with pytest.raises(InvalidRunState):
            h.raise_budget(rid, 2.0)  # finished


def test_an_unbudgeted_run_makes_no_budget_calls() -> None:
    with Harness(free) as h:
        rid = h.start("unbudgeted-agent", 0)
        assert h.run(rid) == "SUCCEEDED"
        run = h.engine.get_run(rid)
        assert run.budget_nano is None and run.spent_nano == 0
        assert h.view(rid).totals["budget_usd"] is None


@pytest.mark.parametrize("victim", ["plan", "search"])
def test_a_crash_between_the_spend_and_the_checkpoint_over_counts_never_under(victim: str) -> None:
    """A crash after the ADD and before the node write: the rerun counts again (the run pauses
    early, never late); the run still never spends more than budget + one step's estimate."""
    with Harness(agent) as h:
        # the worker dies after the step's spend was ADDed, before its checkpoint ("step_executed"
        # is an observation point, not one of crash_at's boundaries: the rule goes in directly)
        h.probe.rules.append(CrashRule("step_executed", victim, times=1))
        rid = h.start("budgeted-agent", 0)
        status = h.run(rid)
        assert status == "WAITING"
        # the crashed attempt counted: plan (ran twice, $0.08) or plan + search ($0.08) leave no
        # room for another $0.05 step; the crashed search is not run again
        assert (["plan", "plan"] if victim == "plan" else ["plan", "search"]) == CALLS
        assert spent_usd(h, rid) <= 0.10 + 0.05
        assert spent_usd(h, rid) >= 0.04 * len(CALLS)  # every attempt counted


def chain(n: int, budget_usd: float | None) -> Workflow:
    wf = Workflow(f"chain-{n}-{'b' if budget_usd else 'u'}", budget_usd=budget_usd)
    for i in range(n):

        def step(ctx: StepContext, x: int) -> int:
            return x + 1

        wf.step(name=f"s{i}", estimate_usd=0.001)(step)
    return wf


def dynamodb_calls(n: int, budget_usd: float | None) -> Counter[str]:
    wf = chain(n, budget_usd)
    with Harness(wf, backend="moto") as h:
        rid = h.start(wf.name, 0)
        assert h.run(rid) == "SUCCEEDED" and h.output(rid) == n
        return Counter({k: v for k, v in h.api_calls.items() if k.startswith("dynamodb.")})


def per_step(budget_usd: float | None) -> dict[str, float]:
    """The marginal DynamoDB calls of one step: a 12-step chain less a 2-step chain, over 10 steps."""
    short, long = dynamodb_calls(2, budget_usd), dynamodb_calls(12, budget_usd)
    return {op: d / 10 for op in long | short if (d := long[op] - short[op])}


def test_a_budgeted_step_costs_two_extra_dynamodb_calls_and_an_unbudgeted_one_none() -> None:
    assert per_step(None) == {"dynamodb.UpdateItem": 2.0}  # claim + checkpoint, as before
    # + the check's GetItem of the RUN item + the spend's UpdateItem (ADD spent_nano)
    assert per_step(1.0) == {"dynamodb.UpdateItem": 3.0, "dynamodb.GetItem": 1.0}


@pytest.mark.parametrize("kind", ["memory", "moto", "sqs", "sfn"])
def test_a_callers_daily_budget_blocks_a_second_run(kind: str) -> None:
    """Each budgeted run reserves its budget on its caller's (caller, UTC day) counter at its start
    (one conditional write): $0.15 a day holds one $0.10 run, not two; another caller is not blocked."""
    with HARNESSES[kind](agent) as h:
        h.engine.worker.limits = replace(h.engine.worker.limits, caller_daily_budget_usd=0.15)
        first = h.start("budgeted-agent", 0, owner="iam:alice")
        with pytest.raises(BudgetExceeded):
            h.start("budgeted-agent", 0, owner="iam:alice")
        assert len(h.runs()) == 1  # the refused start created nothing
        h.start("budgeted-agent", 0, owner="iam:bob", budget_usd=0.15)
        # a retried start (same idempotency key) is the same run: reserved once
        again = h.start("budgeted-agent", 0, owner="iam:bob", idempotency_key="k", budget_usd=0.0)
        assert h.start("budgeted-agent", 0, owner="iam:bob", idempotency_key="k", budget_usd=0.0) == again
        assert h.run(first) == "WAITING"
        day = time.strftime("%Y-%m-%d", time.gmtime(h.clock.now_ms() // 1000))
        assert h.engine.store.caller_day("iam:alice", day) == 100_000_000
        assert h.engine.store.caller_day("iam:bob", day) == 150_000_000
        cancel_held(h)


@pytest.mark.parametrize("kind", ["memory", "sqs", "sfn"])
def test_duplicate_deliveries_run_each_step_once_and_count_each_attempt_once(kind: str) -> None:
    """Every activation delivered twice (and a raise sent twice): each step runs once, its spend
    is added once (the duplicate is served from the checkpoint or finds the node busy)."""
    with HARNESSES[kind](agent, duplicate_delivery=True) as h:
        rid = h.start("budgeted-agent", 0)
        assert h.run(rid) == "WAITING"
        h.raise_budget(rid, 0.50)
        h.raise_budget(rid, 0.50)
        recheck(h, kind, lambda: "review" in CALLS)
        assert h.run(rid) == "SUCCEEDED"
        assert CALLS == ["plan", "search", "write", "review"]
        assert 0.16 <= spent_usd(h, rid) < 0.161
