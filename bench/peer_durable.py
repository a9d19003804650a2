#!/usr/bin/env python3
"""Benchmark peer: AWS Lambda durable functions' local runner on N sequential trivial steps.

The same workflow shape stepchain is measured on: step i returns {"i": i, "acc": prev_acc + i}, so the
final acc must equal sum(range(N)). Each run gets a fresh `DurableFunctionTestRunner` (in-memory store,
in-process invoker); only `runner.run(...)` is timed. Needs its own venv (the SDK requires boto3 >= 1.43.114):
`make bench-peer` builds `.venv-bench-peer` from bench/requirements-peer.txt.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from importlib.metadata import version
from typing import Any

from aws_durable_execution_sdk_python import DurableContext, StepContext, durable_execution, durable_step
from aws_durable_execution_sdk_python.lambda_service import InvocationStatus
from aws_durable_execution_sdk_python_testing import DurableFunctionTestRunner

PEER = (
    f"aws-durable-execution-sdk-python {version('aws-durable-execution-sdk-python')}, "
    f"DurableFunctionTestRunner from -testing {version('aws-durable-execution-sdk-python-testing')}"
)
_invocations = [0]  # entries into the workflow body = Lambda invocations (each replays the history)
_marks: list[float] = []  # perf_counter after each step, to show how per-step cost grows with history


class WrongResult(Exception):
    pass


@durable_step
def add(_ctx: StepContext, i: int, acc: int) -> dict[str, int]:
    return {"i": i, "acc": acc + i}


@durable_execution
def chain(event: dict[str, Any], context: DurableContext) -> dict[str, int]:
    _invocations[0] += 1
    acc = 0
    for i in range(int(event["n"])):
        acc = context.step(add(i, acc), name=f"step-{i}")["acc"]
        _marks.append(time.perf_counter())
    return {"n": int(event["n"]), "acc": acc}


def run_once(n: int, max_seconds: int) -> tuple[float, int, int, list[float]]:
    """One timed execution; returns (seconds, operations in the result, invocations, step marks)."""
    _invocations[0] = 0
    _marks.clear()
    with DurableFunctionTestRunner(handler=chain) as runner:
        start = time.perf_counter()
        # execution_timeout bounds both the durable execution and run()'s real-time wait (TimeoutError).
        try:
            result = runner.run(input=json.dumps({"n": n}), execution_timeout=max_seconds)
        except TimeoutError:
            raise TimeoutError(f"one run did not finish within --max-seconds {max_seconds}") from None
        elapsed = time.perf_counter() - start
    if result.status is not InvocationStatus.SUCCEEDED:
        raise RuntimeError(f"status {result.status.value}: {result.error}")
    out = json.loads(result.result or "null")
    if out != {"n": n, "acc": sum(range(n))}:
        raise WrongResult(f"wrong result {out!r}, expected acc={sum(range(n))}")
    return elapsed, len(result.get_all_operations()), _invocations[0], list(_marks)


def measure(n: int, repeats: int, max_seconds: int, skip: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"n": n, "peer": PEER, "runs": [], "median_s": None, "ms_per_step": None}
    first: list[float] = []  # ms/step over the first and the last 100 steps of each run (growth)
    last: list[float] = []
    try:
        for _ in range(0 if skip else repeats):
            seconds, operations, invocations, marks = run_once(n, max_seconds)
            entry["runs"].append(round(seconds, 4))
            entry.update(operations=operations, invocations=invocations)
            if n >= 200 and invocations == 1:
                first.append((marks[99] - marks[0]) * 1000 / 99)
                last.append((marks[-1] - marks[-101]) * 1000 / 100)
    except WrongResult:
        raise
    except Exception as exc:  # recorded, not hidden: a timeout or a limit is a result too
        entry["error"] = f"{type(exc).__name__}: {exc}"[:500]
    if skip:
        entry["error"] = skip
    if entry["runs"]:
        median = statistics.median(entry["runs"])
        entry.update(median_s=round(median, 4), ms_per_step=round(median * 1000 / n, 3))
    if first:
        entry["first_100_ms_per_step"] = round(statistics.median(first), 3)
        entry["last_100_ms_per_step"] = round(statistics.median(last), 3)
    return entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000", help="comma-separated step counts")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-seconds", type=int, default=180, help="give up on a run after this long")
    parser.add_argument("--json", help="write results here")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]

    print(f"peer: {PEER}\n{'N':>7} {'median s':>10} {'ms/step':>9} {'ops':>7} {'inv':>4}  runs (s) / error")
    results: list[dict[str, Any]] = []
    for n in sizes:
        failed = results and results[-1]["median_s"] is None
        skip = f"skipped: N={results[-1]['n']} produced no completed run" if failed else None
        results.append(measure(n, args.repeats, args.max_seconds, skip))
        r = results[-1]
        median = "-" if r["median_s"] is None else f"{r['median_s']:.3f}"
        per_step = "-" if r["ms_per_step"] is None else f"{r['ms_per_step']:.3f}"
        print(
            f"{n:>7} {median:>10} {per_step:>9} {r.get('operations', '-'):>7} "
            f"{r.get('invocations', '-'):>4}  {r['runs']} {r.get('error', '')}",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
            fh.write("\n")
    return 0  # a timeout or a limit is recorded as a result; a wrong result raises WrongResult


if __name__ == "__main__":
    sys.exit(main())
