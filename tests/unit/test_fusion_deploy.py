"""What fusion changes in the generated artifacts (stepchain.engine.fusion): the ASL's ``.fused``
Choice (where a task that fused the steps after it leaves to), the template's function timeout and
cap, all from the definition (``Workflow(fuse=...)``); nothing at all with fusion off. And the
predicate's static part."""

from __future__ import annotations

from typing import Any

import pytest

from stepchain import END, Workflow
from stepchain.deploy.asl import to_asl
from stepchain.deploy.samgen import build
from stepchain.engine import fusion
from stepchain.exceptions import ValidationError


def step(ctx: Any, x: Any) -> Any:
    return x


def app(fuse: bool | int = True) -> Workflow:
    wf = Workflow("fz", fuse=fuse)
    wf.step(name="a")(step)
    wf.step(name="b")(step)
    wf.step(name="c", fuse=False)(step)  # opts out: a chain from a stops before it
    wf.step(name="d", routes=("a", END))(step)
    wf.sleep(5, name="nap")
    wf.step(name="e", memory_mb=1024)(step)  # another function
    wf.step(name="f", memory_mb=1024)(step)
    return wf


def test_the_exits_of_each_step() -> None:
    wf = app()
    assert fusion.exits(wf, wf.node("a")) == ["b", "c"]
    assert fusion.exits(wf, wf.node("b")) == []  # its successor opts out: it never fuses
    # c opted out of being fused INTO; after it, d fuses; d's loop back to a fuses a and b again
    assert fusion.exits(wf, wf.node("c")) == [END, "a", "b", "c", "d", "nap"]
    assert fusion.exits(wf, wf.node("d")) == ["a", "b", "c"]
    assert fusion.exits(wf, wf.node("e")) == [END, "f"]
    assert fusion.exits(wf, wf.node("nap")) == []  # not a step


def test_a_routing_step_fuses_to_its_routes() -> None:
    wf = Workflow("fz-loop", max_iterations=3, fuse=True)
    wf.step(name="a")(step)
    wf.step(name="b", routes=("a", END))(step)
    wf.step(name="c")(step)
    assert fusion.exits(wf, wf.node("b")) == [END, "a", "b", "c"]
    asl = to_asl(wf)["States"]
    assert {c["StringEquals"] for c in asl["b.goto"]["Choices"]} == {END, "a", "b", "c"}
    assert asl["b"]["Next"] == "b.goto" and asl["a"]["Next"] == "a.fused"


def test_the_asl_has_fused_choices_only_with_fusion_on() -> None:
    plain, fused = to_asl(app(fuse=False))["States"], to_asl(app())["States"]
    assert not [s for s in plain if s.endswith(".fused")]
    assert sorted(s for s in fused if s.endswith(".fused")) == ["a.fused", "c.fused", "e.fused"]
    assert fused["a.fused"]["Default"] == "b" and fused["a"]["Next"] == "a.fused"
    assert {c["Next"] for c in fused["a.fused"]["Choices"]} == {"b", "c"}
    # a task may run as long as its fusing function: twice the step's timeout (+ the margin)
    assert (plain["a"]["TimeoutSeconds"], fused["a"]["TimeoutSeconds"]) == (60 + 30, 120 + 30)


def test_the_template_sets_the_cap_and_the_longer_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(fusion.ENV_MAX_STEPS, "7")  # the generator reads the definitions, never the env var
    off = build([app(fuse=False)], code_uri="x")["Resources"]
    on = build([app(fuse=40)], code_uri="x")["Resources"]
    fn = "AFunction"
    assert (off[fn]["Properties"]["Timeout"], on[fn]["Properties"]["Timeout"]) == (60, 120)
    assert fusion.ENV_MAX_STEPS not in off[fn]["Properties"]["Environment"]["Variables"]
    assert on[fn]["Properties"]["Environment"]["Variables"][fusion.ENV_MAX_STEPS] == "40"
    assert on["ControlFunction"]["Properties"]["Timeout"] == off["ControlFunction"]["Properties"]["Timeout"]
    assert on["AQueue"]["Properties"]["VisibilityTimeout"] >= 120


def test_a_function_serving_a_fused_and_an_unfused_workflow_gets_the_fused_ones_cap() -> None:
    plain = Workflow("fz-plain")
    plain.step(name="p")(step)  # the same settings as a: the same function
    res = build([app(fuse=12), plain], code_uri="x")["Resources"]
    assert res["AFunction"]["Properties"]["Environment"]["Variables"][fusion.ENV_MAX_STEPS] == "12"
    assert fusion.max_steps(plain, 12) == 1 and fusion.max_steps(app(fuse=12), 5) == 5  # the env var only lowers


def test_the_operators_cap_must_be_a_positive_number() -> None:
    assert fusion.max_steps_from_env({}) is None and fusion.max_steps_from_env({fusion.ENV_MAX_STEPS: "7"}) == 7
    for bad in ("0", "-3", "many"):
        with pytest.raises(ValidationError):
            fusion.max_steps_from_env({fusion.ENV_MAX_STEPS: bad})


def test_fuse_on_the_workflow_is_off_by_default_true_or_a_cap() -> None:
    assert Workflow("fz-a").fuse_max_steps == 1 and Workflow("fz-b", fuse=False).fuse_max_steps == 1
    assert Workflow("fz-c", fuse=True).fuse_max_steps == fusion.DEFAULT_MAX_STEPS == 50
    assert Workflow("fz-d", fuse=3).fuse_max_steps == 3
    # not part of the chain's shape: turning fusion on keeps the version (node keys and records are the same)
    assert app(fuse=False).version == app(fuse=True).version
    for bad in (0, 1, -2, 2.5, "yes", None):
        with pytest.raises(ValidationError, match="fuse must be"):
            Workflow("fz-e", fuse=bad)  # type: ignore[arg-type]


def test_one_function_means_the_same_generated_settings() -> None:
    wf = app()
    n = wf.node
    assert fusion.same_function(n("a"), n("b")) and not fusion.same_function(n("d"), n("e"))
    assert fusion.static_fusable(n("e"), n("f")) and not fusion.static_fusable(n("b"), n("c"))
