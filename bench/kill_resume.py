"""Kill -> resume latency on the embedded runtime (`stepchain.runtimes.local`, the runtime of `make demo`).

Each trial starts a run of one long step (ctx.each items of 0.1 s), waits until a worker is in the
middle of it, SIGKILLs that worker at t_kill, and reads when the node was taken over (the takeover's
crash event, written by the worker that resumed it): latency = takeover - t_kill, and the moment the
first item after the kill ran. Then the run must finish with every item done exactly once after its
checkpoint (at-least-once only for the item in flight).

Modes:
* ``standby``: two workers poll the queue (as Lambda's event source mapping always has pollers);
  the survivor resumes the step.
* ``respawn``: one worker; right after the kill a fresh one is started (as `make demo` does), so
  the figure includes the new process's start-up.
* ``no-heartbeat``: ``standby`` with the heartbeat off and the demo's 4 s invocation budget: the
  message comes back after the queue's visibility timeout (budget + 2 s grace + 1 s), as before.

    .venv/bin/python bench/kill_resume.py [--trials 5] [--results bench/RESULTS.md]

Prints the figures and replaces the "Kill -> resume" section of bench/RESULTS.md (`make bench`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT / "src")]

from kill_resume_flow import wf  # noqa: E402

from stepchain.runtimes.aws import AwsClients, build_engine  # noqa: E402
from stepchain.runtimes.local import LOCAL_HEARTBEAT_S, LOCAL_VISIBILITY_S, EmbeddedAws, visibility_timeout_for  # noqa: E402
from stepchain.settings import Settings  # noqa: E402

BEGIN, END = "<!-- kill-resume:begin -->", "<!-- kill-resume:end -->"
ITEMS = 60  # 6 s of step time per run
KILL_AFTER_ITEMS = 8


def spawn(env: dict[str, str], audit: Path, log: Path, budget_ms: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "stepchain.runtimes.local", "worker", "--workflow", "kill_resume_flow:wf"]
    cmd += ["--budget-ms", str(budget_ms), "--audit", str(audit), "--sweep-every", "0"]
    return subprocess.Popen(cmd, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd=ROOT)


def audit_lines(path: Path, run_id: str) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line a killed worker left half-written
        if rec.get("run_id") == run_id:
            out.append(rec)
    return out


def trial(engine: Any, env: dict[str, str], mode: str, audit: Path, log: Path, budget_ms: int) -> dict[str, float]:
    workers = [spawn(env, audit, log, budget_ms) for _ in range(1 if mode == "respawn" else 2)]
    try:
        time.sleep(2.5)  # the workers' start-up (imports, first poll)
        run, _ = engine.start(wf.name, {"items": ITEMS})
        deadline = time.monotonic() + 60
        victim_pid = 0
        while time.monotonic() < deadline:
            lines = audit_lines(audit, run.run_id)
            if sum(1 for e in lines if e["event"] == "item_checkpointed") >= KILL_AFTER_ITEMS:
                victim_pid = int(lines[-1]["pid"])
                break
            time.sleep(0.02)
        victim = next(w for w in workers if w.pid == victim_pid)
        t_kill = time.time()
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        if mode == "respawn":
            workers.append(spawn(env, audit, log, budget_ms))
        takeover = None
        while time.monotonic() < deadline and takeover is None:
            events = [e for e in engine.store.list_crash_events(run.run_id) if e.kind == "takeover"]
            takeover = events[0].at_ms / 1000 if events else None
            time.sleep(0.02)
        while time.monotonic() < deadline and engine.get_run(run.run_id).status.value != "SUCCEEDED":
            time.sleep(0.1)
        assert takeover is not None, "no takeover within 60 s"
        view = engine.get_run(run.run_id)
        assert view.status.value == "SUCCEEDED", view
        lines = audit_lines(audit, run.run_id)
        after = [e["at"] for e in lines if e["event"] == "item_executed" and e["pid"] != victim_pid]
        checkpointed = [e["detail"] for e in lines if e["event"] == "item_checkpointed"]
        assert len(set(checkpointed)) == ITEMS and len(checkpointed) == ITEMS, "an item checkpointed twice"
        return {"takeover_s": takeover - t_kill, "first_item_s": min(a for a in after if a > t_kill) - t_kill}
    finally:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        for w in workers:
            try:
                w.wait(timeout=10)
            except subprocess.TimeoutExpired:
                w.kill()


def measure(mode: str, trials: int, out: Path) -> list[dict[str, float]]:
    budget_ms = 4000 if mode == "no-heartbeat" else 60_000
    audit, log = out / f"kill-resume-{mode}.jsonl", out / f"kill-resume-{mode}.log"
    for f in (audit, log):
        f.unlink(missing_ok=True)
    with EmbeddedAws() as aws:
        stack = aws.provision(visibility_timeout_s=visibility_timeout_for(budget_ms))
        extra = {"STEPCHAIN_SQS_VISIBILITY_S": "0"} if mode == "no-heartbeat" else {}
        env = {
            **os.environ,
            **stack.env(POWERTOOLS_LOG_LEVEL="ERROR", **extra),
            "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT / "src")]),
        }
        clients = AwsClients(dynamodb=aws.client("dynamodb"), s3=aws.client("s3"), sqs=aws.client("sqs"))
        engine = build_engine([wf], Settings.from_env(env), clients=clients)
        results = []
        for i in range(trials):
            r = trial(engine, env, mode, audit, log, budget_ms)
            print(f"  {mode} trial {i + 1}: takeover {r['takeover_s']:.2f} s, first item {r['first_item_s']:.2f} s")
            results.append(r)
        return results


def summary(rs: list[dict[str, float]], field: str) -> str:
    xs = sorted(r[field] for r in rs)
    return f"{statistics.median(xs):.2f} s (min {xs[0]:.2f}, max {xs[-1]:.2f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--modes", default="standby,respawn,no-heartbeat")
    parser.add_argument("--results", default=str(HERE / "RESULTS.md"), help="'' to leave it alone")
    parser.add_argument("--out", default=str(ROOT / ".bench"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for mode in args.modes.split(","):
        print(f"kill -> resume, {mode} ({args.trials} trials) ...", flush=True)
        rs = measure(mode, args.trials, out)
        rows.append(f"| {mode} | {len(rs)} | {summary(rs, 'takeover_s')} | {summary(rs, 'first_item_s')} |")
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    text = "\n".join(
        [
            BEGIN,
            "## Kill -> resume on the embedded runtime",
            "",
            f"Command: `.venv/bin/python bench/kill_resume.py --trials {args.trials}` (also run by `make bench`); "
            f"{stamp}; 2-core shared machine. SIGKILL of the worker in the middle of a 6 s step (ctx.each items "
            f"of 0.1 s); resumed = the takeover's claim (its crash event), first item = the first item the "
            f"resuming worker ran. Heartbeat: V = {LOCAL_VISIBILITY_S} s per message, H = {LOCAL_HEARTBEAT_S} s; "
            "the queue's own visibility timeout stays >= the invocation budget (as AWS requires).",
            "",
            "| mode | trials | kill -> resumed (median) | kill -> first item (median) |",
            "|---|---|---|---|",
            *rows,
            "",
            "standby: a second worker already polls (Lambda's event source mapping always polls); respawn: one "
            "worker, a fresh process started right after the kill (includes its start-up; `make demo` keeps a "
            "second worker polling instead); "
            "no-heartbeat: before this change (4 s budget, the queue's 7 s visibility timeout decides); this is also "
            "how a short-timeout function resumes on AWS, where the generator gives its queue timeout + 5 s and "
            "no heartbeat (stepchain.engine.short_queues; ARCHITECTURE.md, *Resuming after a kill*).",
            END,
        ]
    )
    print(text)
    if args.results:
        path = Path(args.results)
        old = path.read_text() if path.exists() else ""
        if BEGIN in old and END in old:
            new = old[: old.index(BEGIN)] + text + old[old.index(END) + len(END) :]
        else:
            new = old.rstrip("\n") + "\n\n" + text + "\n"
        path.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
