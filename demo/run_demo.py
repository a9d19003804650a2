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
    return subprocess.Popen(cmd, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd=ROOT)


def busy_worker(workers: list[subprocess.Popen[bytes]], audit: Path) -> subprocess.Popen[bytes]:
    """The live worker that audited the latest execution (the one in the middle of the step)."""
    live = {w.pid: w for w in workers if w.poll() is None}
    lines = audit.read_text().splitlines() if audit.exists() else []
    for line in reversed(lines):
        pid = json.loads(line).get("pid")
        if pid in live:
            return live[pid]
    return next(iter(live.values()))


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
        killed_at: list[float] = []  # when each kill happened (epoch s), until its resume is reported
        approved = False
        deadline = time.monotonic() + args.timeout
        view = describe(engine.store, engine.registry, engine.get_run(run.run_id))

        def kill_worker(why: str) -> None:
            nonlocal kills
            victim = busy_worker(workers, audit)
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait()
            kills += 1
            killed_at.append(time.time())
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
                if killed_at:  # the takeover (a crash event the resuming worker wrote) after the last kill
                    back = [e for e in engine.store.list_crash_events(run.run_id) if e.at_ms / 1000 >= killed_at[-1]]
                    if back:
                        progress.say(f"resumed {back[0].at_ms / 1000 - killed_at.pop():.1f} s after the kill")
                by_key = {n.key: n for n in view.nodes}
                fetch, summarize = by_key.get("fetch"), by_key.get("summarize")
                if kills == 0 and fetch is not None and fetch.items_checkpointed >= KILL_AFTER_PAGES:
                    kill_worker(f"in the middle of 'fetch' ({fetch.items_checkpointed} pages checkpointed)")
                done = sum(1 for i in summarize.items if i.status == "SUCCEEDED") if summarize else 0
                if kills == 1 and summarize is not None and KILL_AFTER_SUMMARIES <= done < len(summarize.items):
                    kill_worker(f"in the middle of 'summarize' ({done} of {len(summarize.items)} LLM summaries done)")
                if view.status == "WAITING" and not approved:
                    engine.deliver_event(run.run_id, "approval", {"approved": True, "reviewer": "demo"})
                    approved = True
                    progress.say(
                        "the run waits for a human: approving it (in production: POST /runs/{id}/events/approval)"
                    )
                if view.status in ("SUCCEEDED", "FAILED", "CANCELLED"):
                    break
                time.sleep(0.25)
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
        return report(engine, view, out, audit, kills)


def start_ui(engine: Any, port: int) -> UiServer:
    """The live view (stepchain ui) over the demo's engine, on ``port`` or, if taken, any free one."""
    backend = EngineBackend(engine, label="the demo's embedded runtime")
    try:
        return UiServer(backend, port=port).start()
    except OSError:
        return UiServer(backend, port=0).start()


def report(engine: Any, view: RunView, out: Path, audit_path: Path, kills: int) -> int:
    save_run(view, out)
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
    return verdict(kills >= 1 and not rerun and view.totals["crashes"] >= 1)


if __name__ == "__main__":
    sys.exit(main())
