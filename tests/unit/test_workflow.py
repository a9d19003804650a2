"""Workflow definitions, RetryPolicy and the Registry (no I/O)."""

from __future__ import annotations

from typing import Any

import pytest

from stepchain import (
    Registry,
    RetryPolicy,
    StepContext,
    ValidationError,
    VersionMismatch,
    VersionNotRegistered,
    Workflow,
    WorkflowNotFound,
)
from stepchain.define.workflow import NodeKind
from stepchain.exceptions import EventNotFound


def noop(ctx: StepContext, value: Any) -> Any:
    return value


def build(*, sleep_s: int = 60, concurrency: int = 2, event: str = "approve", version: str | None = None) -> Workflow:
    wf = Workflow("agent", version=version)

    @wf.step()
    def plan(ctx: StepContext, q: Any) -> Any:
        return q

    @wf.map(max_concurrency=concurrency)
    def summarize(ctx: StepContext, item: Any) -> Any:
        return item

    wf.sleep(sleep_s)
    wf.wait_for_event(event, timeout_s=3600)

    @wf.step(name="final_draft", timeout_s=900)
    def draft(ctx: StepContext, x: Any) -> Any:
        return x

    return wf


# ---------------------------------------------------------------------------------- definition
def test_nodes_are_registered_in_order_with_stable_ids() -> None:
    wf = build()
    assert [n.id for n in wf.nodes] == ["plan", "summarize", "sleep_2", "approve", "final_draft"]
    assert [n.kind for n in wf.nodes] == [NodeKind.STEP, NodeKind.MAP, NodeKind.SLEEP, NodeKind.WAIT, NodeKind.STEP]
    summarize = wf.node("summarize")
    assert summarize.max_concurrency == 2 and summarize.fn is not None
    sleep = wf.node("sleep_2")
    assert (sleep.seconds, sleep.fn, sleep.runs_user_code) == (60, None, False)
    wait = wf.node("approve")
    assert (wait.event, wait.seconds, wait.runs_user_code) == ("approve", 3600, False)
    assert wf.node("final_draft").timeout_s == 900
    assert wf.node("plan").timeout_s == 60  # the default
    assert wf.node("plan").retry == RetryPolicy()


def test_decorators_return_the_function_unchanged() -> None:
    wf = Workflow("wf")
    assert wf.step()(noop) is noop
    assert wf.map(name="m")(noop) is noop


def test_event_names_with_dashes_give_underscore_node_ids() -> None:
    wf = Workflow("wf")
    wf.wait_for_event("human-approval")
    wf.wait_for_event("other", name="custom_wait")
    assert [n.id for n in wf.nodes] == ["human_approval", "custom_wait"]
    assert wf.wait_node("human-approval").id == "human_approval"
    assert wf.node("human_approval").seconds == 86400  # default timeout: one day


def test_chain_navigation() -> None:
    wf = build()
    assert wf.first().id == "plan"
    assert wf.next_of("plan") is not None and wf.next_of("plan").id == "summarize"  # type: ignore[union-attr]
    assert wf.next_of("final_draft") is None
    assert wf.prev_of("plan") is None
    assert wf.prev_of("approve").id == "sleep_2"  # type: ignore[union-attr]
    assert wf.has_node("approve") and not wf.has_node("nope")
    with pytest.raises(ValidationError):
        wf.node("nope")
    with pytest.raises(EventNotFound):
        wf.wait_node("not-awaited")
    with pytest.raises(ValidationError, match="no steps"):
        Workflow("empty").first()


@pytest.mark.parametrize("name", ["Fetch", "1st", "with-dash", "a" * 49, "_x", "sp ace"])
def test_invalid_node_ids_are_rejected(name: str) -> None:
    wf = Workflow("wf")
    with pytest.raises(ValidationError):
        wf.step(name=name)(noop)
    assert wf.nodes == ()


def test_longest_node_id_is_accepted() -> None:
    wf = Workflow("wf")
    wf.step(name="a" * 48)(noop)
    assert wf.first().id == "a" * 48


def test_duplicate_node_ids_are_rejected() -> None:
    wf = Workflow("wf")
    wf.step(name="fetch")(noop)
    with pytest.raises(ValidationError, match="already has a node 'fetch'"):
        wf.map(name="fetch")(noop)
    wf.sleep(5, name="nap")
    with pytest.raises(ValidationError):
        wf.wait_for_event("nap")  # the wait's id comes from the event name
    assert [n.id for n in wf.nodes] == ["fetch", "nap"]


@pytest.mark.parametrize(("timeout", "ok"), [(0, False), (1, True), (900, True), (901, False)])
def test_step_timeout_is_bounded_by_the_lambda_limit(timeout: int, ok: bool) -> None:
    wf = Workflow("wf")
    if ok:
        wf.step(timeout_s=timeout)(noop)
        assert wf.first().timeout_s == timeout
    else:
        with pytest.raises(ValidationError, match="timeout_s"):
            wf.step(timeout_s=timeout)(noop)


@pytest.mark.parametrize("name", ["Agent", "1agent", "agent_x", "a" * 64, ""])
def test_invalid_workflow_names_are_rejected(name: str) -> None:
    with pytest.raises(ValidationError):
        Workflow(name)


def test_valid_workflow_names() -> None:
    assert Workflow("research-agent-2").name == "research-agent-2"
    assert Workflow("a" * 63).name == "a" * 63


def test_parameter_validation() -> None:
    wf = Workflow("wf")
    with pytest.raises(ValidationError):
        wf.map(max_concurrency=-1)
    with pytest.raises(ValidationError):
        wf.sleep(0)
    with pytest.raises(ValidationError):
        wf.wait_for_event("ok", timeout_s=0)
    for bad in ("Upper", "has space", "-lead", "x" * 64):
        with pytest.raises(ValidationError):
            wf.wait_for_event(bad)
    assert wf.nodes == ()


def test_function_names() -> None:
    wf = Workflow("wf")
    wf.step(name="fetch_pages")(noop)
    wf.map(name="summarize", function="SharedWorker")(noop)
    wf.sleep(10, name="nap")
    wf.wait_for_event("approve")
    assert [n.function_name for n in wf.nodes] == [
        "FetchPagesFunction",
        "SharedWorker",
        "ControlFunction",
        "ControlFunction",
    ]
    assert wf.node("fetch_pages").memory_mb == 512


# ---------------------------------------------------------------------------------- version
def test_version_is_a_stable_hash_of_the_shape() -> None:
    v = build().version
    assert len(v) == 12 and int(v, 16) >= 0
    assert build().version == v  # same shape, same version, in another process too (no id() or hash())
    assert build(sleep_s=61).version != v
    assert build(concurrency=3).version != v
    assert build(event="approved").version != v
    extended = build()
    extended.step(name="extra")(noop)
    assert extended.version != v
    assert "version=" in repr(extended) and "'extra'" in repr(extended)


def test_version_ignores_function_bodies_and_honours_an_explicit_version() -> None:
    a, b = Workflow("wf"), Workflow("wf")
    a.step(name="s")(noop)
    b.step(name="s")(lambda ctx, x: x + 1)
    assert a.version == b.version
    renamed = Workflow("wf2")
    renamed.step(name="s")(noop)
    assert renamed.version != a.version  # the workflow name is part of the hash
    assert build(version="2024-06-01").version == "2024-06-01"


# ---------------------------------------------------------------------------------- retry policy
def test_retry_policy_delays_grow_and_are_capped() -> None:
    p = RetryPolicy(max_attempts=6, backoff_s=2.0, backoff_rate=3.0, max_backoff_s=50.0)
    assert [p.delay_s(n) for n in (1, 2, 3, 4, 5)] == [2.0, 6.0, 18.0, 50.0, 50.0]
    assert RetryPolicy().delay_s(1) == 1.0 and RetryPolicy().delay_s(3) == 4.0
    assert RetryPolicy(backoff_s=0).delay_s(4) == 0.0
    assert RetryPolicy(backoff_s=5, backoff_rate=1).delay_s(9) == 5.0


@pytest.mark.parametrize(
    "kwargs", [{"max_attempts": 0}, {"backoff_s": -1.0}, {"backoff_rate": 0.5}, {"max_attempts": -3}]
)
def test_retry_policy_validation(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        RetryPolicy(**kwargs)


def test_retry_policy_is_attached_to_the_node() -> None:
    wf = Workflow("wf")
    policy = RetryPolicy(max_attempts=1)
    wf.step(retry=policy)(noop)
    assert wf.first().retry is policy


# ---------------------------------------------------------------------------------- registry
def test_registry_lookup_by_name_and_version() -> None:
    old, new = build(version="1"), build(version="2")
    other = Workflow("other")
    other.step()(noop)
    reg = Registry([old, new, other])
    assert reg.get("agent") is new  # latest registered
    assert reg.get("agent", "1") is old and reg.get("agent", "2") is new
    assert reg.names() == ["agent", "other"]
    assert set(reg) == {new, other}
    with pytest.raises(VersionMismatch, match="'3'"):
        reg.get("agent", "3")
    with pytest.raises(WorkflowNotFound):
        reg.get("missing")
    assert VersionMismatch.http_status == 409 and WorkflowNotFound.http_status == 404


def test_registry_register_later() -> None:
    reg = Registry()
    assert reg.names() == []
    wf = build()
    reg.register(wf)
    assert reg.get("agent", wf.version) is wf


def test_registry_unregister_and_find() -> None:
    old, new = build(version="1"), build(version="2")
    reg = Registry([old, new])
    assert reg.find("agent", "1") is old and reg.find("agent", "3") is None and reg.find("nope", "1") is None
    reg.unregister("agent", "2")
    assert reg.get("agent") is old and reg.find("agent", "2") is None
    with pytest.raises(VersionNotRegistered, match="version '2'") as info:
        reg.get("agent", "2")
    assert isinstance(info.value, VersionMismatch) and info.value.code == "version_not_registered"
    reg.unregister("agent", "1")
    assert reg.names() == []
    with pytest.raises(VersionNotRegistered):  # a run of a workflow removed altogether
        reg.get("agent", "1")
    with pytest.raises(WorkflowNotFound):
        reg.get("agent")
