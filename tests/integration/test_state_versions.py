"""A workflow's state model changes between deployments (issue 18, durable run state).

* The model is part of the workflow's version (its JSON schema and reducers): a changed model is
  a new version, so a run started on v1 keeps v1's model when both versions are deployed (an
  event, a redrive), and fails with ``VersionNotRegistered`` when only v2 is (as any retired version).
* Under a fixed ``Workflow(version=...)`` the model can change without a new version: a stored state
  that does not fit the new model fails the run with the typed, terminal ``StateModelMismatch``
  (naming the model and the field) instead of retrying; deploying the old model again and
  redriving finishes the run.
"""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from pydantic import BaseModel

from stepchain import Registry, StateUpdate, VersionNotRegistered, Workflow
from stepchain.define.state import add
from stepchain.testing import Harness


class V1State(BaseModel):
    count: Annotated[int, add] = 0


class V2State(BaseModel):  # incompatible: a stored {"count": 1} does not fit
    count: str = ""


def build(model: type[BaseModel], version: str | None = None) -> Workflow:
    wf = Workflow("counter", state=model, version=version)

    @wf.step()
    def first(ctx: Any, x: int) -> Any:
        return StateUpdate(x, count=1 if model is V1State else "one")

    wf.wait_for_event("go", timeout_s=3600)

    @wf.step()
    def last(ctx: Any, _: Any) -> Any:
        return {"count": ctx.state.count, "model": model.__name__}

    return wf


def redeploy(h: Harness, *wfs: Workflow) -> None:
    h.registry = h.engine.registry = Registry(list(wfs))


def test_a_changed_state_model_is_a_new_version() -> None:
    assert build(V1State).version == build(V1State).version
    assert build(V1State).version != build(V2State).version
    assert Workflow("counter", state=V1State).version != Workflow("counter").version


@pytest.mark.parametrize("backend", ["memory", "moto"])
def test_a_run_keeps_its_versions_model_when_both_are_deployed(backend: str) -> None:
    v1, v2 = build(V1State), build(V2State)
    with Harness(v1, backend=backend) as h:
        rid = h.start("counter", 0)
        assert h.run(rid) == "WAITING"
        redeploy(h, v1, v2)  # the next deployment registers both versions (v2 the latest)
        h.send_event(rid, "go", {})
        assert h.run(rid) == "SUCCEEDED"
        assert h.output(rid) == {"count": 1, "model": "V1State"}
        new = h.start("counter", 0)  # a new run takes the latest registered (v2)
        h.run(new)
        h.send_event(new, "go", {})
        assert h.run(new) == "SUCCEEDED" and h.output(new) == {"count": "one", "model": "V2State"}


def test_only_the_new_model_deployed_fails_the_run_with_the_version_named() -> None:
    with Harness(build(V1State)) as h:
        rid = h.start("counter", 0)
        h.run(rid)
        redeploy(h, build(V2State))
        with pytest.raises(VersionNotRegistered):
            h.send_event(rid, "go", {})
        assert h.status(rid) == "FAILED"


@pytest.mark.parametrize("backend", ["memory", "moto"])
def test_a_model_changed_under_a_fixed_version_fails_the_run_with_a_typed_error(backend: str) -> None:
    with Harness(build(V1State, version="1"), backend=backend) as h:
        rid = h.start("counter", 0)
        assert h.run(rid) == "WAITING"
        redeploy(h, build(V2State, version="1"))  # same version string, incompatible model
        h.send_event(rid, "go", {})
        assert h.run(rid) == "FAILED"
        err = h.engine.get_run(rid).error
        assert err is not None and err["type"] == "StateModelMismatch", err
        assert "V2State" in err["message"] and "count" in err["message"]
        last = next(n for n in h.view(rid).nodes if n.key == "last")
        assert last.attempts == 1  # terminal: not retried
        redeploy(h, build(V1State, version="1"))  # the old model deployed again
        h.engine.redrive(rid)
        assert h.run(rid) == "SUCCEEDED" and h.output(rid) == {"count": 1, "model": "V1State"}
