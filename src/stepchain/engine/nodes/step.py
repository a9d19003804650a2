"""The step node kind (and each item of a map): run the user's function, checkpoint its output.

A step's function gets a :class:`~stepchain.define.context.StepContext`; it may continue in a fresh
invocation (``ContinueInNewInvocation``), be stopped by a cancel (``StepCancelled``), or fail
(retried with the node's policy, or failing the run). An ``async def`` function runs on its own
event loop within the invocation's time budget (:mod:`stepchain.define.aio`). A ``RetryableError`` with
``retry_after_s`` sets the delay before the next attempt.
"""

from __future__ import annotations

import inspect
import traceback
from collections.abc import Callable
from typing import Any

from stepchain.define.aio import budget_ms, run_coroutine
from stepchain.define.context import CostMeter, StepContext
from stepchain.define.state import StateBox, take_update
from stepchain.define.workflow import Node, Workflow
from stepchain.engine import admission, budget
from stepchain.engine.nodes.base import NodeKindHandler
from stepchain.engine.nodes.scope import ActivationScope, KindServices
from stepchain.engine.nodes.stream import episode, opens_run
from stepchain.engine.routing import chosen_route
from stepchain.engine.shared import error_of, key_of
from stepchain.exceptions import (
    ContinueInNewInvocation,
    RetryableError,
    StepCancelled,
    TerminalError,
    ValidationError,
)
from stepchain.handoff.messages import Activation, Outcome, OutcomeKind
from stepchain.logs import LambdaContextLike, logger
from stepchain.store.records import Invocation, NodeRecord, NodeStatus


def run_step(w: KindServices, wf: Workflow, node: Node, msg: Activation, lctx: LambdaContextLike) -> Outcome:
    key = key_of(msg)
    rec = w.claim(wf, node, msg, key, lctx)
    if isinstance(rec, Outcome):
        return rec
    input_ref = w.input_of(wf, node, msg, rec)
    if input_ref is None:
        return w.release(msg, key, rec, "predecessor not finished")
    assert node.fn is not None
    ctx = StepContext(
        msg.run_id,
        wf.name,
        node.id,
        key,
        msg.index,
        rec.attempts,
        lctx,
        w,
        generation=rec.generation,
        owner=rec.owner,
        iteration=msg.iteration,
        invocation=rec.invocations,
        state_box=state_box(w, wf, node, msg, rec),
        stream_lifecycle=wf.stream_lifecycle,
    )
    decoded: list[Any] = []

    def value_of() -> Any:  # the input, decoded once (a limit's key may read it before the step)
        if not decoded:
            decoded.append(w.codec.decode(input_ref))
        return decoded[0]

    attempt = admission.Attempt(w, wf, node, msg, key, rec, ctx, value_of)
    try:  # the ONE admission check: the run's budget, the step's limits (none: no request)
        gate = admission.admit(attempt)
    except ValidationError as bad:  # a limit's key function failed: the step fails
        return step_failed(w, node, msg, key, rec, bad, w.clock.monotonic_ms(), w.clock.now_ms(), ctx.cost)
    if isinstance(gate, Outcome):
        return gate

    def settle(raised: Exception | None) -> None:  # right before the node write: its requests go on the ledger
        admission.settle(w, gate, ctx.cost, raised)

    return _execute(attempt, settle)


def _execute(a: admission.Attempt, settle: Callable[[Exception | None], None]) -> Outcome:
    """Run the step's function and write the node (``settle`` first: what admission took goes back)."""
    w, wf, node, msg, key, rec, ctx, value_of = a.w, a.wf, a.node, a.msg, a.key, a.rec, a.ctx, a.value_of
    assert node.fn is not None
    t0 = w.clock.monotonic_ms()
    started = w.clock.now_ms()
    owner = rec.owner
    spent = False
    if wf.stream_lifecycle:  # buffered: written with the invocation's first flush (an emit, or its end)
        if opens_run(wf, node, msg) and rec.generation == 0 and not rec.redriven:
            ctx.emits.run_event("started", {}, "started")
        began = {"attempt": rec.attempts, "invocation": rec.invocations, **_item(node, msg)}
        ctx.emits.lifecycle("started", began, f"started|a{rec.attempts}|i{rec.invocations}{episode(rec)}")
    try:
        output = node.fn(ctx, value_of())
        if inspect.isawaitable(output):  # an async def step: its own event loop, within the budget
            output = run_coroutine(output, budget=budget_ms(ctx.remaining_ms(), ctx.margin_ms), clock=w.clock)
        budget.spend(w, wf, node, msg.run_id, t0, ctx.cost)  # before the node write: a crash over-counts
        spent = True
        output = take_update(ctx.state_box, output)  # a returned StateUpdate: merged, then the output
        output, route = chosen_route(wf, node, msg.iteration, output)
        output = take_update(ctx.state_box, output)  # goto(x, StateUpdate(...))
        w.probe.reached("step_executed", msg.run_id, key)
        out_ref = w.codec.encode(output, scope=f"{msg.run_id}/{key}")
        state_ref = None
        if ctx.state_box is not None:  # the state after the step, checkpointed with its output
            box = ctx.state_box
            keep = box.ref is not None and not box.changed
            state_ref = box.ref if keep else w.codec.encode(box.dump(), scope=f"{msg.run_id}/{key}/state")
    except ContinueInNewInvocation as sig:
        budget.spend(w, wf, node, msg.run_id, t0, ctx.cost)
        data = {"reason": sig.reason, "cost": _cost_data(ctx.cost)}
        stream_end(ctx, wf, "continued", data, f"continued|i{rec.invocations}{episode(rec)}")
        now = w.clock.now_ms()
        inv = Invocation(started, now, "continued")
        changes = w.ledger(NodeStatus.CONTINUING, now, t0, ctx.cost, inv, prior=rec)
        settle(None)
        w.store.finish(msg.run_id, key, changes, owner=owner)
        logger.info("continuing in a fresh invocation", extra={"node": key, "reason": sig.reason})
        w.probe.reached("continued", msg.run_id, key)
        return Outcome(OutcomeKind.CONTINUE, detail=sig.reason)
    except StepCancelled as sig:  # the run was cancelled while the step ran: stop spending
        budget.spend(w, wf, node, msg.run_id, t0, ctx.cost)
        stream_end(ctx, wf, "cancelled", {"cost": _cost_data(ctx.cost)}, f"cancelled{episode(rec)}")
        now = w.clock.now_ms()
        inv = Invocation(started, now, "cancelled")
        changes = w.ledger(NodeStatus.CANCELLED, now, t0, ctx.cost, inv, ended=True)
        settle(None)
        w.store.finish(msg.run_id, key, changes, owner=owner)
        return Outcome(OutcomeKind.DROPPED, detail=str(sig))
    except Exception as exc:  # the step failed: retry or fail the run
        if not spent:
            budget.spend(w, wf, node, msg.run_id, t0, ctx.cost)
        settle(exc)
        return step_failed(w, node, msg, key, rec, exc, t0, started, ctx.cost, ctx=ctx, wf=wf)
    stream_end(ctx, wf, "succeeded", {"cost": _cost_data(ctx.cost), **_item(node, msg)}, f"succeeded{episode(rec)}")
    now = w.clock.now_ms()
    inv = Invocation(started, now, "succeeded")
    changes = w.ledger(
        NodeStatus.SUCCEEDED,
        now,
        t0,
        ctx.cost,
        inv,
        output_ref=out_ref,
        ended=True,
        prior=rec,
        route=route,
        state_ref=state_ref,
    )
    settle(None)
    return w.commit(wf, node, msg, key, changes, owner=owner)


def state_box(w: KindServices, wf: Workflow, node: Node, msg: Activation, rec: NodeRecord) -> StateBox | None:
    """The durable state the step sees (decoded on first read); None without a state or in a map item."""
    if wf.state is None or msg.index is not None:
        return None
    return StateBox(wf.state, w.state_of(wf, node, msg, rec), w.codec.decode)


def step_failed(
    w: KindServices,
    node: Node,
    msg: Activation,
    key: str,
    rec: NodeRecord,
    exc: Exception,
    t0: float,
    started: int,
    cost: CostMeter,
    *,
    ctx: StepContext | None = None,
    wf: Workflow | None = None,
) -> Outcome:
    now = w.clock.now_ms()
    err = error_of(exc, key)
    terminal = isinstance(exc, TerminalError | ValidationError)
    retry_after_s = exc.retry_after_s if isinstance(exc, RetryableError) else None
    if retry_after_s is not None:  # the step named the delay before its next attempt
        err["retry_after_s"] = f"{retry_after_s:g}"
    logger.warning(
        "step failed",
        extra={
            "node": key,
            "attempt": rec.attempts,
            "error": err,
            "terminal": terminal,
            "trace": traceback.format_exc(limit=5),
        },
    )
    retrying = not terminal and rec.attempts < node.retry.max_attempts
    if ctx is not None and wf is not None:
        kind = "retrying" if retrying else "failed"
        data = {"error": err, "attempt": rec.attempts, "cost": _cost_data(cost), **_item(node, msg)}
        suffix = f"retrying|a{rec.attempts}" if retrying else kind
        stream_end(ctx, wf, kind, data, suffix + episode(rec))
    if retrying:
        delay_ms = int(node.retry.delay_s(rec.attempts) * 1000)
        if retry_after_s is not None:
            delay_ms = int(retry_after_s * 1000)
        inv = Invocation(started, now, "retrying")
        changes = w.ledger(
            NodeStatus.RETRYING,
            now,
            t0,
            cost,
            inv,
            error=err,
            attempts=rec.attempts + 1,
            prior=rec,
            wake_at_ms=now + delay_ms,
        )
        w.store.finish(msg.run_id, key, changes, owner=rec.owner)
        return Outcome(OutcomeKind.WAIT, wake_at_ms=now + delay_ms, error=err)
    if not terminal:
        err["message"] = f"gave up after {rec.attempts} attempts: {err['message']}"
    inv = Invocation(started, now, "failed")
    changes = w.ledger(NodeStatus.FAILED, now, t0, cost, inv, error=err, ended=True, prior=rec)
    w.fail(msg, key, err, changes, owner=rec.owner)
    return Outcome(OutcomeKind.FAILED, error=err)


def stream_end(ctx: StepContext, wf: Workflow, kind: str, data: dict[str, Any], id_suffix: str) -> None:
    """Write the invocation's buffered stream events BEFORE the node's checkpoint (no request when there
    are none): a crash in between leaves them written, and the re-run's copies are dropped by their ids."""
    if wf.stream_lifecycle:
        ctx.emits.lifecycle(kind, data, id_suffix)
    if ctx.has_emits:
        ctx.emits.flush()


def _item(node: Node, msg: Activation) -> dict[str, Any]:
    """A map item's place in its map (a reader counts a map's progress from its items' events)."""
    return {} if msg.index is None else {"map": node.id, "index": msg.index}


def _cost_data(cost: CostMeter) -> dict[str, Any]:
    return {"usd": cost.usd_nano / 1e9, "input_tokens": cost.input_tokens, "output_tokens": cost.output_tokens}


class StepHandler(NodeKindHandler):
    fusable = True

    def activate(self, scope: ActivationScope) -> Outcome:
        assert scope.lctx is not None
        return run_step(scope.services, scope.wf, scope.node, scope.msg, scope.lctx)
