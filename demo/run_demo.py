"""`make demo`: the research agent survives a killed worker, on an embedded AWS (no account, no Docker).

1. moto's server starts in this process on 127.0.0.1: DynamoDB, S3 and SQS, as in the deployed app.
2. Two worker processes (`python -m stepchain.runtimes.local worker`) run the steps like Lambda would, with a
   4-second budget per invocation, so the fetch step has to continue across invocations.
3. While it fetches, the demo kills the worker running the step with SIGKILL (no goodbye, no cleanup).
4. The step's message reappears about a second later (its own 1 s visibility, which the dead
   worker's heartbeat no longer extends) and the other worker resumes the run at its last checkpoint:
   finished steps and pages are never done again. A fresh worker is started in the killed one's place.
5. The run waits for a human approval; the demo approves it, and the report is drafted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "functions" / "research_agent"))

from story import print_files, print_ledger, save_run, verdict  # noqa: E402

from research_agent.workflow import wf  # noqa: E402
from stepchain.observe.ledger import RunView, describe  # noqa: E402
from stepchain.runtimes.aws import AwsClients, build_engine  # noqa: E402
from stepchain.runtimes.local import LOCAL_VISIBILITY_S, EmbeddedAws, visibility_timeout_for  # noqa: E402
from stepchain.settings import Settings  # noqa: E402
from stepchain.ui import EngineBackend, UiServer  # noqa: E402

QUESTION = (
    "What is the global installed capacity of grid-scale battery storage, how much do battery packs cost, "
    "and how efficient are batteries in practice?"
)
BUDGET_MS = 4000
FETCH_LATENCY_MS = 700
LLM_LATENCY_MS = 1200
KILL_AFTER_PAGES = 3
KILL_AFTER_SUMMARIES = 2
KILLS = 2  # one in 'fetch', one in 'summarize'


def spawn_worker(env: dict[str, str], audit: Path, log: Path) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable,
        "-m",
        "stepchain.runtimes.local",
        "worker",
        "--workflow",
        "research_agent.workflow:wf",
        "--budget-ms",
        str(BUDGET_MS),
        "--audit",
        str(audit),
    ]
    with log.open("ab") as out:  # the worker has its own copy of the descriptor
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)


def worker_mid_work(
    workers: list[subprocess.Popen[bytes]], audit: Path, event: str, key_prefix: str, within_s: float
) -> subprocess.Popen[bytes] | None:
    """A live worker whose latest audited boundary is ``event`` on a node ``key_prefix``*, less than
    ``within_s`` ago: it is inside an invocation, holding the node's lease, in the middle of the work
    that follows (a page fetch, an LLM call). Killing it then always leaves a lease to take over; a
    kill between invocations would leave nothing to recover (and the demo would show one crash less)."""
    live = {w.pid: w for w in workers if w.poll() is None}
    latest: dict[int, dict[str, Any]] = {}
    for line in audit.read_text().splitlines() if audit.exists() else []:
        e = json.loads(line)
        if e.get("pid") in live:
            latest[e["pid"]] = e
    now = time.time()
    for pid, e in latest.items():
        if e["event"] == event and e["key"].startswith(key_prefix) and now - e["at"] < within_s:
            return live[pid]
    return None


@dataclass
class Resumes:
    """Matches each kill to the first takeover after it, one line per takeover (crash event)."""

    pending: list[float]  # kill times (epoch s) whose takeover is not reported yet, oldest first
    seen: set[tuple[int, str]]  # crash events already reported

    def reported(self, events: list[Any]) -> list[str]:
        lines = []
        for e in sorted(events, key=lambda e: e.at_ms):
            if not self.pending or (e.at_ms, e.node) in self.seen or e.at_ms / 1000 < self.pending[0]:
                continue
            self.seen.add((e.at_ms, e.node))
            lines.append(f"resumed {e.at_ms / 1000 - self.pending.pop(0):.1f} s after the kill")
        return lines


class Progress:
    """A live view: redrawn in place on a terminal, one line per change otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stdout.isatty()
        self.drawn = 0
        self.last: dict[str, str] = {}

    def show(self, view: RunView) -> None:
        lines = []
        for n in view.nodes:
            extra = ""
            if n.items:
                done = sum(1 for i in n.items if i.status == "SUCCEEDED")
                extra = f"{done}/{len(n.items)} items"
            elif n.items_checkpointed:
                extra = f"{n.items_checkpointed} pages checkpointed"
            if n.crashes:
                extra += f", resumed after {n.crashes} crash(es)"
            lines.append(f"  {n.key:<10} {n.status:<10} inv={n.invocations:<2} {extra}")
        if self.tty:
            sys.stdout.write(f"\x1b[{self.drawn}F" if self.drawn else "")
            sys.stdout.write("".join(f"\x1b[2K{line}\n" for line in lines))
            self.drawn = len(lines)
        else:
            for n, line in zip(view.nodes, lines, strict=True):
                if self.last.get(n.key) != line:
                    print(line)
                    self.last[n.key] = line
        sys.stdout.flush()

    def say(self, text: str) -> None:
        print(f"\n>>> {text}\n" if self.tty else f">>> {text}")
        self.drawn = 0


@dataclass
class Audit:
    """What the workers really executed, from their audit file (stepchain.runtimes.local.AuditProbe)."""

    executed: Counter[str]  # unit ("step:<key>", "item:<key>/<loop>:<i>", "once:<key>/<name>") -> executions
    after_checkpoint: Counter[str]  # executions that happened after the unit's checkpoint: must stay 0

    @property
    def lost_to_kills(self) -> int:
        """Executions repeated because a worker died between the work and its checkpoint."""
        return sum(n - 1 for n in self.executed.values() if n > 1) - sum(self.after_checkpoint.values())

    def units(self, kind: str) -> list[str]:
        return [u for u in self.executed if u.startswith(kind + ":")]


def read_audit(audit: Path) -> Audit:
    kinds = {
        "step_executed": ("step", False),
        "after_checkpoint": ("step", True),
        "item_executed": ("item", False),
        "item_checkpointed": ("item", True),
        "once_executed": ("once", False),
        "once_checkpointed": ("once", True),
    }
    executed: Counter[str] = Counter()
    late: Counter[str] = Counter()
    checkpointed: set[str] = set()
    events = [json.loads(line) for line in audit.read_text().splitlines()] if audit.exists() else []
    for e in sorted(events, key=lambda e: e["at"]):
        if e["event"] not in kinds:  # where a worker is (after_claim, mid_item): not an execution
            continue
        kind, is_checkpoint = kinds[e["event"]]
        unit = f"{kind}:{e['key']}" + (f"/{e['detail']}" if e["detail"] else "")
        if is_checkpoint:
            checkpointed.add(unit)
            continue
        executed[unit] += 1
        if unit in checkpointed:
            late[unit] += 1
    return Audit(executed, late)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / ".demo"), help="where the report and timeline go")
    parser.add_argument("--timeout", type=float, default=180, help="give up after this many seconds")
    parser.add_argument("--ui-port", type=int, default=8765, help="port of the live view on 127.0.0.1 (0: any)")
    parser.add_argument("--no-ui", action="store_true", help="do not start the live view (stepchain ui)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    audit, log = out / "executions.jsonl", out / "workers.log"
    for f in (audit, log):
        f.unlink(missing_ok=True)

    print(__doc__)
    workers: list[subprocess.Popen[bytes]] = []
    with EmbeddedAws() as aws:
        stack = aws.provision(visibility_timeout_s=visibility_timeout_for(BUDGET_MS))
        env = {
            **os.environ,
            **stack.env(
                RESEARCH_FETCH_LATENCY_MS=str(FETCH_LATENCY_MS),
                RESEARCH_LLM_LATENCY_MS=str(LLM_LATENCY_MS),  # a hosted model answers in about a second
                RESEARCH_LLM_PRICED_AS="anthropic.claude-3-5-haiku-20241022-v1:0",
                POWERTOOLS_LOG_LEVEL="WARNING",
                PYTHONPATH=os.pathsep.join([str(ROOT / "functions" / "research_agent"), str(ROOT / "src")]),
            ),
        }
        clients = AwsClients(dynamodb=aws.client("dynamodb"), s3=aws.client("s3"), sqs=aws.client("sqs"))
        engine = build_engine([wf], Settings.from_env(env), clients=clients)
        run, _ = engine.start("research-agent", {"question": QUESTION, "max_sources": 8})
        print(f"emulated AWS at {aws.endpoint}; run {run.run_id} started\n")
        ui = None if args.no_ui else start_ui(engine, args.ui_port)
        if ui is not None:
            print(f"live view (open it in a browser while the demo runs): {ui.run_url(run.run_id)}\n")
        progress = Progress()
        workers.extend(spawn_worker(env, audit, log) for _ in range(2))
        progress.say(f"workers 1 and 2 started (pids {workers[0].pid}, {workers[1].pid})")
        kills = 0
        resumes = Resumes([], set())
        approved = False
        deadline = time.monotonic() + args.timeout
        view = describe(engine.store, engine.registry, engine.get_run(run.run_id))

        def kill_worker(victim: subprocess.Popen[bytes], why: str) -> None:
            nonlocal kills
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait()
            kills += 1
            resumes.pending.append(time.time())
            progress.say(f"SIGKILL worker pid {victim.pid} {why}. Its memory is gone.")
            workers.append(spawn_worker(env, audit, log))
            progress.say(
                f"worker {len(workers)} started (pid {workers[-1].pid}); the interrupted message comes back "
                f"within {LOCAL_VISIBILITY_S} s (no heartbeat extends it any more) and the other worker resumes it"
            )

        try:
            while time.monotonic() < deadline:
                view = describe(engine.store, engine.registry, engine.get_run(run.run_id))
                progress.show(view)
                if resumes.pending:  # the takeover (a crash event the resuming worker wrote) after a kill
                    for line in resumes.reported(engine.store.list_crash_events(run.run_id)):
                        progress.say(line)
                by_key = {n.key: n for n in view.nodes}
                fetch, summarize = by_key.get("fetch"), by_key.get("summarize")
                if kills == 0 and fetch is not None and fetch.items_checkpointed >= KILL_AFTER_PAGES:
                    victim = worker_mid_work(workers, audit, "mid_item", "fetch", FETCH_LATENCY_MS / 2000)
                    if victim is not None:
                        why = f"in the middle of 'fetch' ({fetch.items_checkpointed} pages checkpointed)"
                        kill_worker(victim, why)
                done = sum(1 for i in summarize.items if i.status == "SUCCEEDED") if summarize else 0
                if kills == 1 and summarize is not None and KILL_AFTER_SUMMARIES <= done < len(summarize.items):
                    victim = worker_mid_work(workers, audit, "after_claim", "summarize#", LLM_LATENCY_MS / 2000)
                    if victim is not None:
                        why = f"in the middle of 'summarize' ({done} of {len(summarize.items)} LLM summaries done)"
                        kill_worker(victim, why)
                if view.status == "WAITING" and not approved:
                    engine.deliver_event(run.run_id, "approval", {"approved": True, "reviewer": "demo"})
                    approved = True
                    progress.say(
                        "the run waits for a human: approving it (in production: POST /runs/{id}/events/approval)"
                    )
                if view.status in ("SUCCEEDED", "FAILED", "CANCELLED"):
                    break
                time.sleep(0.1 if kills < 2 else 0.25)  # finer while waiting for the moment to kill
        finally:
            if ui is not None:
                ui.stop()
            for w in workers:
                if w.poll() is None:
                    w.send_signal(signal.SIGTERM)
            for w in workers:
                try:
                    w.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    w.kill()
        return report(engine, view, out, audit, kills, resumes)


def start_ui(engine: Any, port: int) -> UiServer:
    """The live view (stepchain ui) over the demo's engine, on ``port`` or, if taken, any free one."""
    backend = EngineBackend(engine, label="the demo's embedded runtime")
    try:
        return UiServer(backend, port=port).start()
    except OSError:
        return UiServer(backend, port=0).start()


def report(engine: Any, view: RunView, out: Path, audit_path: Path, kills: int, resumes: Resumes) -> int:
    save_run(view, out)
    takeovers_logged = sum("lease lost" in line for line in (out / "workers.log").read_text().splitlines())
    summary = {
        "status": view.status,
        "kills": kills,
        "crashes_recovered": view.totals["crashes"],
        "resumed_lines": len(resumes.seen),
        "lease_lost_warnings": takeovers_logged,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))  # what tests/integration/test_demo.py reads
    if view.status != "SUCCEEDED":
        print(f"demo FAILED: run ended {view.status}: {view.error}")
        return 1
    output = engine.codec.decode(engine.get_run(view.run_id).output_ref)
    (out / "report.md").write_text(output["markdown"])
    audit = read_audit(audit_path)
    rerun = sorted(audit.after_checkpoint)
    steps, items, once = audit.units("step"), audit.units("item"), audit.units("once")
    resumed = [n.key for n in view.nodes if n.resumed or any(i.resumed for i in n.items)]
    print(f"steps run: {len(steps)}, pages fetched: {len(items)}, LLM calls: {len(once)}")
    print(f"completed work executed again after its checkpoint: {len(rerun)} {rerun if rerun else '(none)'}")
    if audit.lost_to_kills:
        print(
            f"work in flight when a worker was killed, done again: {audit.lost_to_kills} unit(s) "
            "(its result had not been checkpointed yet)"
        )
    print(f"steps resumed from checkpoints: {len(resumed)} ({', '.join(resumed) or 'none'})")
    print_ledger(view)
    print_files(out)
    # every kill lands inside an invocation (worker_mid_work), so each one is a crash the run recovers from
    return verdict(kills == KILLS and not rerun and view.totals["crashes"] == KILLS)


if __name__ == "__main__":
    sys.exit(main())
