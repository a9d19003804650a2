"""The code paths the IAM-versus-code test (test_iam_measured.py) drives, on each transport, with every
AWS call recorded per Lambda function (tests/template/iam_record.py).

A :class:`Deployment` is one transport's harness on moto (SqsHarness: the deployed SQS worker served from
real queues; SfnHarness: the generated state machine in moto's Step Functions interpreter, tasks served by
the deployed Step Functions worker) with the calls attributed as the template deploys the code:

* a worker invocation -> the function ``stepchain.deploy.samgen.plan`` puts its node in (PlanFunction, ...,
  ControlFunction for sleeps, waits and failures);
* an API request -> ApiFunction: a REST proxy event through ``stepchain.api.handle_api_event``, the code
  the deployed API runs (secret-backed cursor key, presigned output URLs included);
* a sweep -> SweeperFunction (``stepchain.engine.sweeper.Sweeper``, what ``sweeper_handler`` runs).

Payloads go to S3 from 64 bytes on (``INLINE_LIMIT``), so every path also takes the claim-check.

To cover a new code path: add a function ``def path_<name>(d: Deployment) -> None`` that drives it (and
asserts that it got where it meant to: a path that silently stopped early would measure nothing), and add it
to ``PATHS`` (with the transports it applies to). Workflows it needs go to ``WORKFLOWS``; node ids must be
unique across them (the template routes by node id). The paths of a transport run one after the other in
ONE deployment (creating the state machines takes seconds): a path must leave its runs ended (or waiting
for an event it never gets), and count crashes or invocations as differences, not totals.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

from tests.lambda_context import ApiLambdaContext
from tests.template.iam_record import acting_as

from research_agent.fetcher import CorpusFetcher
from research_agent.workflow import services
from research_agent.workflow import wf as research_agent
from stepchain import StepContext, TerminalError, Workflow
from stepchain.api import handle_api_event
from stepchain.api import security as api_security
from stepchain.api import tokens as api_tokens
from stepchain.deploy.asl import CONTROL_FUNCTION
from stepchain.deploy.samgen import plan
from stepchain.engine.heartbeat import HeartbeatPolicy
from stepchain.engine.nodes import children
from stepchain.engine.sweeper import Sweeper, SweepPolicy
from stepchain.testing import InjectedCrash, SfnHarness, sfn_driver, sqs_driver
from stepchain.testing.sqs_driver import SqsHarness
from tool_agent import tools as tool_agent_tools
from tool_agent.llm import OfflineToolLLM
from tool_agent.workflow import lookup as tool_lookup
from tool_agent.workflow import services as tool_agent_services
from tool_agent.workflow import wf as tool_agent

EVENTS = Path(__file__).resolve().parents[2] / "events"
INLINE_LIMIT = 64
GRACE_S = SweepPolicy().grace_s
API, SWEEPER = "ApiFunction", "SweeperFunction"
BOX: dict[str, Any] = {}
#: the deployed API runs with RunOwnership=on: requests come from a team's principal (``TEAM``: its own
#: runs, listed from the ``owner`` index) or from an operator (``OPERATOR``: every run, from ``gsi1``)
TEAM, OPERATOR = "arn:aws:iam::123456789012:user/team-a", "arn:aws:iam::123456789012:user/oncall"
TOOL_QUESTION = (
    "By what percent did trips per station grow from 2024 to 2025? Email the answer to ops@northvale.example"
)
QUESTION = "What is the global installed capacity of grid-scale battery storage and how much do battery packs cost?"

# ------------------------------------------------------------------------------------ workflows
chain = Workflow("iam-chain")


@chain.step(timeout_s=5)
def c_gather(ctx: StepContext, n: int) -> list[str]:
    def one(i: int) -> str:
        BOX["h"].clock.advance(1500)  # 5 s budget: two items per invocation, then a continuation
        return f"item-{i}-" + "x" * 80

    sent = ctx.once("notify", lambda: {"sent": True})
    return ctx.each(list(range(n)), one) if sent["sent"] else []


@chain.map(max_concurrency=2)
def c_each(ctx: StepContext, item: str) -> str:
    return ctx.once("upper", lambda: item.upper())


chain.sleep(600, name="c_pause")


@chain.step()
def c_total(ctx: StepContext, items: list[str]) -> dict[str, Any]:
    return {"n": len(items), "first": ctx.output_of("c_gather")[0]}


approval = Workflow("iam-approval")


@approval.step()
def a_ask(ctx: StepContext, doc: Any) -> Any:
    return {"doc": doc}


approval.wait_for_event("a_go", timeout_s=3600, name="a_wait")


@approval.step()
def a_publish(ctx: StepContext, decision: Any) -> Any:
    return {"published": decision, "pad": "p" * 100}


failing = Workflow("iam-failing")


@failing.step()
def f_risky(ctx: StepContext, x: Any) -> Any:
    if BOX.get("flaky"):
        BOX["flaky"] -= 1
        raise RuntimeError("transient")  # retried by the node's RetryPolicy
    if BOX.get("broken"):
        raise TerminalError("bad input")
    return {"x": x, "pad": "f" * 100}


WORKFLOWS = (research_agent, tool_agent, tool_lookup, chain, approval, failing)


# ------------------------------------------------------------------------------------ deployment
class Deployment:
    """One transport's harness, with each call attributed to the function the template runs it in."""

    def __init__(self, transport: str, stack: ExitStack) -> None:
        self.transport = transport
        app = plan(WORKFLOWS)
        self.serving = {placeholder: lid for (_, placeholder), lid in app.served_by.items()}
        self.node_fn = {"*": CONTROL_FUNCTION}
        for wf in WORKFLOWS:
            for node in wf.nodes:
                self.node_fn[node.id] = app.served_by[(wf.name, node.function_name)]
        self.workers = {fn.logical_id for fn in app.functions} - {CONTROL_FUNCTION}
        children = {name for wf in WORKFLOWS for node in wf.nodes for _, name in node.branches}
        #: the workers that may end a child run (they serve a child workflow's steps)
        self.child_workers = {lid for (wf, _), lid in app.served_by.items() if wf in children} - {CONTROL_FUNCTION}
        self.invoked: dict[str, set[str]] = {}  # workflow -> functions its state machine invoked
        if transport == "sfn":
            harness: Any = SfnHarness(*WORKFLOWS, inline_limit=INLINE_LIMIT)
        else:  # the deployed SQS workers run the heartbeat (per-message visibility, stepchain.engine.heartbeat)
            harness = SqsHarness(*WORKFLOWS, inline_limit=INLINE_LIMIT, heartbeat=HeartbeatPolicy(20, 5))
        self.h = stack.enter_context(harness)
        BOX["h"] = self.h
        self._attribute_workers(stack)
        self._key_secrets(stack)
        tool_agent_services.llm = OfflineToolLLM(rate_limit_iteration=1, retry_after_s=2)  # a 429 once: a retry
        stack.callback(setattr, tool_agent_services, "llm", None)
        stack.callback(tool_agent_tools.OUTBOX.clear)
        services.fetcher = CorpusFetcher(latency_ms=1200, sleep=lambda s: self.h.clock.advance(s * 1000))
        stack.callback(setattr, services, "fetcher", None)

    def _attribute_workers(self, stack: ExitStack) -> None:
        if self.transport == "sfn":
            real_task = sfn_driver.handle_sfn_task

            def task(engine: Any, event: Any, ctx: Any, **kw: Any) -> Any:
                lid = self.serving[ctx.function_name]
                self.invoked.setdefault(str(event.get("workflow")), set()).add(lid)
                with acting_as(lid):
                    return real_task(engine, event, ctx, **kw)

            stack.enter_context(mock.patch.object(sfn_driver, "handle_sfn_task", task))
        else:
            real_batch = sqs_driver.handle_sqs_batch
            node_of = {self.h._arns[url]: node for node, url in self.h.queues.items()}

            def batch(engine: Any, event: Any, ctx: Any, **kw: Any) -> Any:
                with acting_as(self.node_fn[node_of[event["Records"][0]["eventSourceARN"]]]):
                    return real_batch(engine, event, ctx, **kw)

            stack.enter_context(mock.patch.object(sqs_driver, "handle_sqs_batch", batch))

    def _key_secrets(self, stack: ExitStack) -> None:
        """The API's configuration as the template deploys it: the cursor and approval-token keys in
        Secrets Manager (read on first use, as a cold API would), run ownership on, one operator."""
        import boto3

        sm = boto3.client("secretsmanager")
        cursor = sm.create_secret(Name="cursor-key", SecretString="k" * 64)["ARN"]
        approval = sm.create_secret(Name="approval-key", SecretString="a" * 64)["ARN"]
        env = {
            "STEPCHAIN_CURSOR_KEY_SECRET_ARN": cursor,
            "STEPCHAIN_APPROVAL_KEY_SECRET_ARN": approval,
            "STEPCHAIN_OWNERSHIP": "on",
            "STEPCHAIN_OPERATORS": OPERATOR,
        }
        stack.enter_context(mock.patch.dict("os.environ", env))
        for key in (api_security.CURSOR_KEY, api_tokens.APPROVAL_KEY):  # read them, as a cold API would
            stack.enter_context(mock.patch.object(key, "cached", None))

    # -- the API (ApiFunction) -----------------------------------------------------------------------
    def api(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict[str, str] | None = None,
        caller: str = TEAM,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        event = json.loads((EVENTS / "api-get-run.json").read_text())
        for k, v in (headers or {}).items():
            event["headers"][k], event["multiValueHeaders"][k] = v, [v]
        event["requestContext"]["identity"]["userArn"] = caller
        event["httpMethod"] = event["requestContext"]["httpMethod"] = method
        event["path"] = path
        event["requestContext"]["path"] = "/v1" + path
        event["body"] = None if body is None else json.dumps(body)
        event["queryStringParameters"] = query
        event["multiValueQueryStringParameters"] = None if query is None else {k: [v] for k, v in query.items()}
        with self._lock(), acting_as(API):
            out = handle_api_event(self.h.engine, copy.deepcopy(event), ApiLambdaContext())
        return int(out["statusCode"]), json.loads(out["body"]) if out.get("body") else None

    def start(self, workflow: str, input: Any) -> str:
        status, body = self.api("POST", "/runs", {"workflow": workflow, "input": input})
        assert status == 202, body
        run_id = str(body["run_id"])
        self.h.run_ids.append(run_id)
        return run_id

    def event(self, run_id: str, name: str, payload: Any, iteration: int | None = None) -> str:
        query = None if iteration is None else {"iteration": str(iteration)}
        status, body = self.api("POST", f"/runs/{run_id}/events/{name}", payload, query)
        assert status == 202, body
        return str(body["status"])

    def cancel(self, run_id: str) -> None:
        status, body = self.api("POST", f"/runs/{run_id}/cancel")
        assert status == 200, body
        self._drop_stopped_waits()

    def redrive(self, run_id: str, body: Any = None) -> None:
        status, reply = self.api("POST", f"/runs/{run_id}/redrive", body)
        assert status == 202, reply

    def crashing_api(self, boundary: str, call: Callable[[], Any], node: str | None = None) -> None:
        """``call`` dies inside the API at ``boundary`` (after its first durable write)."""
        self.h.crash_at(boundary, node=node)
        try:
            call()
        except InjectedCrash:
            return
        raise AssertionError(f"the API did not reach {boundary}")

    # -- the sweeper (SweeperFunction) and the workers ----------------------------------------------
    def sweep_later(self) -> int:
        self.h.advance(GRACE_S + 1)
        with self._lock(), acting_as(SWEEPER):
            acted = Sweeper(self.h.engine).sweep().acted
        self._drop_stopped_waits()
        return acted

    def run(self, run_id: str) -> str:
        if self.transport == "sfn":
            return str(self.h.run(run_id))
        self.h.run()
        return str(self.h.status(run_id))

    def _lock(self) -> Any:
        return self.h._lock if self.transport == "sfn" else nullcontext()

    def _drop_stopped_waits(self) -> None:
        """moto's StopExecution leaves a callback wait running (AWS ends it): the harness ends it."""
        if self.transport == "sfn":
            self.h._stop_cancelled()


# ------------------------------------------------------------------------------------------ paths
def path_research_agent(d: Deployment) -> None:
    """The research agent through the API: start, approval event, list, read, step output links."""
    run_id = d.start("research-agent", {"question": QUESTION, "max_sources": 3})
    assert d.run(run_id) == "WAITING", d.h.engine.get_run(run_id).error
    assert d.event(run_id, "approval", {"approved": True, "reviewer": "qa"}) == "delivered"
    assert d.run(run_id) == "SUCCEEDED", d.h.engine.get_run(run_id).error
    status, page = d.api("GET", "/runs", query={"workflow": "research-agent", "limit": "1"})
    assert status == 200 and page["runs"], page
    status, run = d.api("GET", f"/runs/{run_id}")
    assert status == 200 and run["output_url"], run  # the output is in S3: a presigned link
    status, step = d.api("GET", f"/runs/{run_id}/steps/fetch")
    assert status == 200 and step["status"] == "SUCCEEDED", step


def path_tool_agent(d: Deployment) -> None:
    """The tool agent through the API, twice: an async routed loop (``goto``, a rate-limited model call
    retried after its Retry-After), a child run of ``tool-lookup`` (``wf.call``: started by the control
    function, its end completes the parent's node), and the approval wait, answered once through
    ``POST /runs/{id}/events/approval`` and once with a minted single-use token (``POST /approvals``, the
    token in the ``Approval-Token`` header)."""
    by_event = d.start("tool-agent", {"question": TOOL_QUESTION})
    assert d.run(by_event) == "WAITING", d.h.engine.get_run(by_event).error
    status, detail = d.api("GET", f"/runs/{by_event}")
    waiting = detail["waiting_for"]  # a wait inside a loop: the event names its iteration
    assert status == 200 and waiting["event"] == "approval", detail
    assert d.event(by_event, "approval", {"approved": True, "by": "qa"}, waiting["iteration"]) == "delivered"
    assert d.run(by_event) == "SUCCEEDED", d.h.engine.get_run(by_event).error
    assert d.h.output(by_event)["emailed"]["status"] == "sent"
    children = [r for r in d.h.runs() if d.h.engine.get_run(r).workflow == "tool-lookup"]
    assert children and all(d.h.status(r) == "SUCCEEDED" for r in children), children
    d.h.run_ids.extend(children)  # started by the engine, not through the API

    by_token = d.start("tool-agent", {"question": TOOL_QUESTION})
    assert d.run(by_token) == "WAITING", d.h.engine.get_run(by_token).error
    status, minted = d.api("POST", f"/runs/{by_token}/approvals", {"event": "approval", "ttl_s": 600})
    assert status == 201, minted
    status, used = d.api(
        "POST", "/approvals", {"approved": False, "by": "approver"}, headers={"Approval-Token": minted["token"]}
    )
    assert status == 202 and used["status"] == "delivered", used
    assert d.run(by_token) == "SUCCEEDED", d.h.engine.get_run(by_token).error
    assert d.h.output(by_token)["emailed"]["status"] == "denied"
    d.h.run_ids.extend(r for r in d.h.runs() if r not in d.h.run_ids)  # its child run


def path_cancel_while_starting_a_child(d: Deployment) -> None:
    """The run is cancelled (API) while the control function starts the call node's child run: the
    cancel found no child to cascade to, so the control function stops the child it just started."""
    real_start, runs = children.start_children, list[str]()

    def start(w: Any, wf: Any, node: Any, run_id: str, key: str, rec: Any) -> None:
        if not runs:
            runs.append(run_id)
            status, body = d.api("POST", f"/runs/{run_id}/cancel")  # the API, meanwhile
            assert status == 200, body
        real_start(w, wf, node, run_id, key, rec)

    with mock.patch.object(children, "start_children", start):
        run_id = d.start("tool-agent", {"question": TOOL_QUESTION})
        d._drop_stopped_waits()
        assert d.run(run_id) == "CANCELLED", d.h.engine.get_run(run_id).error
    [child] = [r for r in d.h.runs() if r not in d.h.run_ids]
    d.h.run_ids.append(child)
    assert d.h.engine.get_run(child).status.value == "CANCELLED"
    if d.transport == "sfn":  # moto's StopExecution of an execution started a moment ago fails (its interpreter
        d.sweep_later()  # thread has no environment yet; AWS stops it): the sweeper finishes that cancel


def path_listing_by_owner(d: Deployment) -> None:
    """A team lists its own runs (the ``owner`` index), another caller sees none of them (404), an
    operator lists every run (``gsi1``)."""
    run_id = d.start("iam-approval", "listed")
    assert d.run(run_id) == "WAITING"
    status, mine = d.api("GET", "/runs", query={"workflow": "iam-approval"})
    assert status == 200 and run_id in [r["run_id"] for r in mine["runs"]], mine
    stranger = "arn:aws:iam::123456789012:user/team-b"
    status, theirs = d.api("GET", "/runs", query={"workflow": "iam-approval"}, caller=stranger)
    assert status == 200 and theirs["runs"] == [], theirs
    status, _ = d.api("GET", f"/runs/{run_id}", caller=stranger)
    assert status == 404
    status, every = d.api("GET", "/runs", query={"workflow": "iam-approval", "limit": "100"}, caller=OPERATOR)
    assert status == 200 and run_id in [r["run_id"] for r in every["runs"]], every
    status, minted = d.api("POST", f"/runs/{run_id}/approvals", {"event": "a_go"})
    assert status == 201, minted
    token = {"Approval-Token": minted["token"]}
    status, used = d.api("POST", "/approvals", {"ok": 5}, caller=stranger, headers=token)  # the token suffices
    assert status == 202, used
    status, replay = d.api("POST", "/approvals", {"ok": 6}, caller=stranger, headers=token)
    assert status == 409, replay  # single use
    assert d.run(run_id) == "SUCCEEDED", d.h.engine.get_run(run_id).error


def path_operator_cancels(d: Deployment) -> None:
    run_id = d.start("iam-approval", "operator cancels")
    assert d.run(run_id) == "WAITING"
    status, _ = d.api("POST", f"/runs/{run_id}/cancel", caller=OPERATOR)
    assert status == 200
    d._drop_stopped_waits()
    assert d.run(run_id) == "CANCELLED"


def path_chain(d: Deployment) -> None:
    """ctx.once, ctx.each with continuations, a map, a sleep, ctx.output_of."""
    run_id = d.start("iam-chain", 5)
    assert d.run(run_id) == "SUCCEEDED", d.h.engine.get_run(run_id).error
    assert d.h.output(run_id)["n"] == 5
    assert [i.outcome for i in d.h.invocations if i.key == "c_gather"].count("CONTINUE") >= 2  # (one run)


def path_event_delivered_and_buffered(d: Deployment) -> None:
    waiting = d.start("iam-approval", "a")
    assert d.run(waiting) == "WAITING"
    assert d.event(waiting, "a_go", {"ok": 1}) == "delivered"
    assert d.run(waiting) == "SUCCEEDED"
    early = d.start("iam-approval", "b")
    assert d.event(early, "a_go", {"ok": 2}) == "buffered"
    assert d.run(early) == "SUCCEEDED"
    status, page = d.api("GET", "/runs", query={"workflow": "iam-approval", "limit": "1"})
    assert status == 200 and page["next_cursor"], page  # a signed cursor: the key from Secrets Manager
    status, page = d.api("GET", "/runs", query={"workflow": "iam-approval", "cursor": page["next_cursor"]})
    assert status == 200 and page["runs"], page


def path_event_timeout(d: Deployment) -> None:
    run_id = d.start("iam-approval", "late")
    assert d.run(run_id) == "WAITING"
    d.h.advance(3601)
    assert d.run(run_id) == "FAILED"


def path_cancel(d: Deployment) -> None:
    run_id = d.start("iam-approval", "cancel me")
    assert d.run(run_id) == "WAITING"
    d.cancel(run_id)
    assert d.run(run_id) == "CANCELLED"


def path_retry_failure_and_redrive(d: Deployment) -> None:
    BOX.update(flaky=1, broken=True)
    run_id = d.start("iam-failing", 1)
    assert d.run(run_id) == "FAILED"
    BOX["broken"] = False
    d.redrive(run_id, {"input": 2})
    assert d.run(run_id) == "SUCCEEDED"
    assert d.h.output(run_id)["x"] == 2


def path_sweeper_repairs(d: Deployment) -> None:
    """API calls that died between their durable write and their handoff, finished by the sweeper."""
    d.crashing_api("api_start", lambda: d.start("iam-approval", "swept"), node="a_ask")
    [run_id] = [r for r in d.h.runs() if r not in d.h.run_ids]
    d.h.run_ids.append(run_id)
    assert d.sweep_later() == 1
    assert d.run(run_id) == "WAITING"
    d.crashing_api("api_event", lambda: d.event(run_id, "a_go", {"ok": 3}), node="a_wait")
    assert d.sweep_later() >= 1
    assert d.run(run_id) == "SUCCEEDED", d.h.engine.get_run(run_id).error
    other = d.start("iam-approval", "cancel, swept")
    assert d.run(other) == "WAITING"
    d.crashing_api("api_cancel", lambda: d.cancel(other))
    assert d.sweep_later() >= 1
    assert d.run(other) == "CANCELLED"


def path_worker_crashes(d: Deployment) -> None:
    """Workers that died after a claim (taken over after its lease) and before a handoff (redelivered)."""
    d.h.crash_at("after_claim", node="a_ask")
    d.h.crash_at("before_handoff", node="a_wait")
    d.h.crash_at("after_claim", node="a_wait")  # the control function dies too
    before = len(d.h.probe.crashes)
    run_id = d.start("iam-approval", "crashy")
    assert d.run(run_id) == "WAITING"
    assert len(d.h.probe.crashes) == before + 3
    assert d.event(run_id, "a_go", {"ok": 4}) == "delivered"
    assert d.run(run_id) == "SUCCEEDED"


def path_state_machine_gives_up(d: Deployment) -> None:
    """Invocations failing outside the engine exhaust the task's Retry; the Catch path's ``fail`` task
    (ControlFunction) marks the node and the run FAILED; the run is redriven."""
    store, real_claim = d.h.engine.store, d.h.engine.store.claim
    broken = {"f_risky"}

    def broken_claim(run_id: str, key: str, **kw: Any) -> Any:
        if key in broken:
            raise RuntimeError("store unavailable")
        return real_claim(run_id, key, **kw)

    run_id = d.start("iam-failing", 3)
    with mock.patch.object(store, "claim", side_effect=broken_claim):
        assert d.run(run_id) == "FAILED"
    assert [i.outcome for i in d.h.invocations if i.action == "fail"][-1:] == ["FAILED"]
    d.redrive(run_id)
    assert d.run(run_id) == "SUCCEEDED"
    # a child run's state machine gives up the same way: its fail task ends the child, which fails the parent
    broken.add("locate")
    with mock.patch.object(store, "claim", side_effect=broken_claim):
        parent = d.start("tool-agent", {"question": TOOL_QUESTION})
        assert d.run(parent) == "FAILED"
    [child] = [r for r in d.h.runs() if r not in d.h.run_ids]
    d.h.run_ids.append(child)
    assert d.h.status(child) == "FAILED" and "delegate" in str(d.h.engine.get_run(parent).error)


@dataclass(frozen=True)
class CodePath:
    name: str
    drive: Callable[[Deployment], None]
    transports: tuple[str, ...] = ("sqs", "sfn")


PATHS = (
    CodePath("research_agent", path_research_agent),
    CodePath("tool_agent", path_tool_agent),
    CodePath("cancel_while_starting_a_child", path_cancel_while_starting_a_child),
    CodePath("listing_by_owner", path_listing_by_owner),
    CodePath("operator_cancels", path_operator_cancels),
    CodePath("chain", path_chain),
    CodePath("event_delivered_and_buffered", path_event_delivered_and_buffered),
    CodePath("event_timeout", path_event_timeout),
    CodePath("cancel", path_cancel),
    CodePath("retry_failure_and_redrive", path_retry_failure_and_redrive),
    CodePath("sweeper_repairs", path_sweeper_repairs),
    CodePath("worker_crashes", path_worker_crashes),
    CodePath("state_machine_gives_up", path_state_machine_gives_up, transports=("sfn",)),
)


@contextmanager
def deployed(transport: str) -> Iterator[Deployment]:
    """One transport's deployment; the paths run one after the other in it (each ends its runs)."""
    with ExitStack() as stack:
        yield Deployment(transport, stack)
