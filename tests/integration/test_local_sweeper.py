"""The embedded runtime (``stepchain.runtimes.local``, what ``make demo`` runs) sweeps like the deployed schedule:
a run whose start died before its handoff is moved on by a worker's periodic sweep."""

from __future__ import annotations

from typing import Any

import pytest

from stepchain import StepContext, Workflow
from stepchain.runtimes.aws import AwsClients, build_engine
from stepchain.runtimes.local import EmbeddedAws, client_env, run_worker
from stepchain.settings import Settings
from stepchain.testing import InjectedCrash
from stepchain.testing.probe import HarnessProbe

wf = Workflow("local-sweep")


@wf.step()
def plan(ctx: StepContext, n: int) -> list[int]:
    return list(range(n))


@wf.step()
def total(ctx: StepContext, xs: list[int]) -> int:
    return sum(xs)


def test_a_local_worker_sweeps_a_run_whose_start_died(monkeypatch: pytest.MonkeyPatch) -> None:
    with EmbeddedAws() as aws:
        stack = aws.provision(visibility_timeout_s=5)
        for k, v in client_env(aws.endpoint).items():
            monkeypatch.setenv(k, v)
        env = stack.env()
        clients = AwsClients(dynamodb=aws.client("dynamodb"), s3=aws.client("s3"), sqs=aws.client("sqs"))
        engine = build_engine([wf], Settings.from_env(env), clients=clients)
        probe = HarnessProbe()
        probe.crash("api_start")
        engine.probe = engine.handoff.probe = probe
        with pytest.raises(InjectedCrash):
            engine.start(wf.name, 5)
        [run] = engine.store.list_active_runs().runs
        executed: list[str] = []

        class Audit:
            def reached(self, boundary: str, run_id: str, key: str, detail: str = "") -> Any:
                if boundary == "step_executed":
                    executed.append(key)

        run_worker([wf], stack.queue_url, budget_ms=5_000, probe=Audit(), idle_exit_s=2.0, env=env,
                   sweep_every_s=0.3, sweep_grace_s=1.0)  # fmt: skip
        done = engine.get_run(run.run_id)
        assert done.status.value == "SUCCEEDED", done
        assert engine.codec.decode(done.output_ref) == 10
        assert executed == ["plan", "total"]  # a re-issue that came twice ran nothing twice
        kinds = [c.kind for c in engine.store.list_crash_events(done.run_id)]
        assert kinds and set(kinds) == {"swept"}, kinds
