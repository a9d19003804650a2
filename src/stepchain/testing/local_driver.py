"""``LocalHarness``: the embedded runtime (:mod:`stepchain.runtimes.local`) behind the harnesses' interface.

moto's server runs in this process on 127.0.0.1 (DynamoDB, S3, SQS); workers are separate
processes (``python -m stepchain.runtimes.local worker``) serving the step queue as Lambda would. Time is
REAL here: sleeps, event deadlines and visibility timeouts take their real length, so keep them
short. A crash is real too: the worker process exits at the boundary (``os._exit``), and the
harness starts a fresh worker, as Lambda starts a fresh environment.

from stepchain.testing import LocalHarness

with LocalHarness("my_pkg.flows:wf", budget_ms=3000, pythonpath=["src"]) as h:
    h.crash_at("after_checkpoint", node="fetch")
    run_id = h.start("my-flow", {"q": 1})
    assert h.run(run_id) == "SUCCEEDED"
    assert h.executions["fetch"] == 1

Workflows are named by ``module:attribute`` (the workers import them). ``executions`` is read from
the workers' audit file; ``invocations`` and ``clock`` do not exist here (no virtual time).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from stepchain.engine.events import waiting_for
from stepchain.engine.routing import event_key
from stepchain.probe import BOUNDARIES, CrashRule
from stepchain.runtimes.local import EmbeddedAws, visibility_timeout_for
from stepchain.runtimes.local_probes import CRASH_EXIT, DuplicatingSqsHandoff, locked, read_rules, write_rules
from stepchain.store.records import NodeStatus
from stepchain.testing.probe import HarnessProbe
from stepchain.testing.runs_api import RunsApi

#: default of ``LocalHarness(poll_timeout_s=)``: real seconds :meth:`LocalHarness.run` waits without progress
POLL_TIMEOUT_S = 60.0


class LocalHarness(RunsApi):
    """The embedded runtime with the harnesses' methods (real time, real worker processes).

    ``workflows``: ``module:attribute`` specs the test process and the workers import;
    ``pythonpath``: directories to make them importable; ``budget_ms``: each invocation's budget
    (the queue's visibility timeout follows it); ``duplicate_delivery``: every message is sent
    twice; ``workers``: worker processes; ``poll_timeout_s``: :meth:`run` raises TimeoutError
    after this many real seconds without progress; ``virtual_sleep``: only False (real time).
    """

    def __init__(
        self,
        *workflows: str,
        budget_ms: int = 10_000,
        duplicate_delivery: bool = False,
        workers: int = 1,
        pythonpath: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        poll_timeout_s: float = POLL_TIMEOUT_S,
        virtual_sleep: bool = False,
    ) -> None:
        if virtual_sleep:  # accepted like the other harnesses' option, but its workers are real processes
            raise ValueError("LocalHarness runs in real time (real worker processes): virtual_sleep must be False")
        from stepchain.define.load import load_workflow
        from stepchain.runtimes.aws import AwsClients, build_engine
        from stepchain.settings import Settings

        self.specs = list(workflows)
        self.budget_ms = budget_ms
        self.duplicate_delivery = duplicate_delivery
        self.poll_timeout_s = poll_timeout_s
        self.run_ids: list[str] = []
        self.probe = HarnessProbe()  # the API side (this process): api_* boundaries
        self.restarts = 0
        self._stack = ExitStack()
        self.workdir = tempfile.mkdtemp(prefix="stepchain-local-")
        self._stack.callback(shutil.rmtree, self.workdir, True)
        self.audit_path = os.path.join(self.workdir, "audit.jsonl")
        self.plan_path = os.path.join(self.workdir, "crashes.json")
        write_rules(self.plan_path, [])
        try:
            for p in reversed([str(Path(p).resolve()) for p in pythonpath]):
                if p not in sys.path:
                    sys.path.insert(0, p)
            self.aws = self._stack.enter_context(EmbeddedAws())
            stack = self.aws.provision(visibility_timeout_s=visibility_timeout_for(budget_ms))
            self.env = {
                **os.environ,
                **(env or {}),
                **stack.env(),
                "PYTHONPATH": os.pathsep.join(
                    [str(Path(p).resolve()) for p in pythonpath] + [x for x in [os.environ.get("PYTHONPATH")] if x]
                ),
            }
            clients = AwsClients(dynamodb=self.aws.client("dynamodb"), s3=self.aws.client("s3"))
            settings = Settings.from_env(self.env)
            handoff = DuplicatingSqsHandoff(settings.queues, self.aws.client("sqs"))
            handoff.duplicate = duplicate_delivery
            loaded = [load_workflow(s) for s in self.specs]
            self.engine = build_engine(loaded, settings, clients=clients, handoff=handoff)
            self.engine.probe = self.probe
            handoff.probe = self.probe
            self.store, self.codec, self.registry = self.engine.store, self.engine.codec, self.engine.registry
            self._workers = [self._spawn() for _ in range(workers)]
            self._stack.callback(self._stop_workers)
        except BaseException:
            self._stack.close()
            raise

    # -- workers -----------------------------------------------------------------------------------
    def _spawn(self) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "stepchain.runtimes.local", "worker", "--budget-ms", str(self.budget_ms)]
        for spec in self.specs:
            cmd += ["--workflow", spec]
        cmd += ["--audit", self.audit_path, "--crash-plan", self.plan_path]
        if self.duplicate_delivery:
            cmd.append("--duplicate-delivery")
        with open(os.path.join(self.workdir, "workers.log"), "ab") as log:
            return subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def _supervise(self) -> None:
        """Replace workers that died (a crash rule fired), as Lambda starts a fresh environment."""
        for i, w in enumerate(self._workers):
            code = w.poll()
            if code is None:
                continue
            if code != CRASH_EXIT:
                log = Path(self.workdir, "workers.log").read_text()[-2000:]
                raise RuntimeError(f"a worker exited with status {code} (not a planned crash):\n{log}")
            self._workers[i] = self._spawn()
            self.restarts += 1

    def _stop_workers(self) -> None:
        for w in self._workers:
            if w.poll() is None:
                w.terminate()
        for w in self._workers:
            try:
                w.wait(timeout=10)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait()

    # -- the harness interface ---------------------------------------------------------------------
    def crash_at(self, boundary: str, *, node: str | None = None, times: int = 1, skip: int = 0) -> None:
        """Kill the worker process (API side: raise :class:`InjectedCrash` in this process) at
        ``boundary``, as on every harness."""
        if boundary.startswith("api_"):
            self.probe.crash(boundary, node=node, times=times, skip=skip)
            return
        if boundary not in BOUNDARIES:
            raise ValueError(f"unknown boundary {boundary!r}; choose from {BOUNDARIES}")
        with locked(self.plan_path):
            write_rules(self.plan_path, [*read_rules(self.plan_path), CrashRule(boundary, node, times, skip)])

    def _audit(self) -> list[dict[str, Any]]:
        try:
            lines = Path(self.audit_path).read_text().splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines if line.strip()]

    @property
    def executions(self) -> Counter[str]:
        """Completed executions of each node's code, by node key, from the workers' audit."""
        return Counter(e["key"] for e in self._audit() if e["event"] == "step_executed")

    @property
    def crashes(self) -> list[tuple[str, str]]:
        """(boundary, node key) of every crash a rule caused, in order."""
        return [(e["detail"], e["key"]) for e in self._audit() if e["event"] == "crashed"]

    def run(self, run_id: str | None = None, *, timeout_s: float | None = None) -> str:
        """Wait (in real time) until the run ended or waits for an event (with no ``run_id``: every
        run the store holds), restarting dead workers. Returns the run's status, as every harness.
        Raises ``TimeoutError`` after ``timeout_s`` (default ``poll_timeout_s``) real seconds
        without progress (no status change, nothing audited, no worker restarted)."""
        limit_s = self.poll_timeout_s if timeout_s is None else timeout_s
        targets = [run_id] if run_id is not None else self.runs()
        started = last_change = time.monotonic()
        seen: tuple[Any, ...] = ()
        while True:
            self._supervise()
            statuses = tuple(self.status(r) for r in targets)
            if all(self._settled(r, s) for r, s in zip(targets, statuses, strict=True)):
                return self._status_after_run(run_id)
            progress = (statuses, os.path.getsize(self.audit_path) if os.path.exists(self.audit_path) else 0)
            now = time.monotonic()
            if progress != seen:
                seen, last_change = progress, now
            elif now - last_change > limit_s:
                raise TimeoutError(
                    f"runs {list(targets)} still {list(statuses)} after {now - started:.1f} s, "
                    f"the last {limit_s:g} s without progress (timeout_s)"
                )
            time.sleep(0.05)

    def _settled(self, run_id: str, status: str) -> bool:
        """Ended, or waiting for an event that has not come and whose deadline has not passed (once
        it has, the deadline's own message is on its way: the run still moves). A sleep, a wait whose
        event was just delivered (the run record still says WAITING until the next node starts), or
        one whose event came first (buffered: the wait takes it as it starts) is not settled: the
        run moves on its own."""
        if status in ("SUCCEEDED", "FAILED", "CANCELLED"):
            return True
        if status != "WAITING":
            return False
        run = self.engine.get_run(run_id)
        waiting = waiting_for(self.engine.registry.find(run.workflow, run.version), run)
        if waiting is None:
            return False
        if run.paused:  # held by its dollar budget: waits for an approval, not for time
            return True
        rec = self.store.get_node(run_id, run.current) if run.current else None
        if rec is None or rec.status is not NodeStatus.WAITING:
            return False  # its node not written yet, or the wait already completed: the run moves
        if self.store.get_event(run_id, event_key(waiting["event"], waiting["iteration"])) is not None:
            return False  # the event came before the wait: the wait is taking it now
        return rec.wake_at_ms is None or rec.wake_at_ms > time.time() * 1000

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass, in real time here (workers keep serving; dead ones are replaced)."""
        until = time.monotonic() + seconds
        while (left := until - time.monotonic()) > 0:
            self._supervise()
            time.sleep(min(0.05, left))

    # -- context management ------------------------------------------------------------------------
    def __enter__(self) -> LocalHarness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers and the emulator; remove the work directory."""
        self._stack.close()


__all__ = ["CRASH_EXIT", "POLL_TIMEOUT_S", "LocalHarness"]
