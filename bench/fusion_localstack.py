"""Step fusion on LocalStack (issue 20): p50 step-to-step latency, fused vs unfused, in ONE deployment.

bench/fusion_app/ holds two chains of 8 trivial steps, ``chain-fused`` (``Workflow(fuse=True)``) and
``chain-plain`` (no fusion), served by one worker function. This script:

1. generates their state machines and template with ``stepchain asl`` / ``stepchain template`` (into
   ``.localstack/fusion-bench/``, nothing committed: the definition is the only source), points the
   layer at this checkout (``layers/stepchain``: a wheel of ``src/``) and runs ``sam build``;
2. starts a Docker-free LocalStack on 127.0.0.1 (its own state dir, a free port; stopped by PID at the
   end, always) and deploys the build as one stack with ``stepchain.deploy.deploy_local.deploy``
   (one stack per transport: ``Transport=sqs`` and ``Transport=stepfunctions``, ``--transport`` to pick);
3. starts ``--runs`` runs of each chain through API Gateway (``POST /runs``, one chain after the
   other, each run waited for), reads each run's view (``GET /runs/{id}``) and takes, per pair of
   consecutive steps, the gap between one step's end and the next one's start (node timestamps);
4. prints p50/p90 of the gaps per chain and replaces the "Step fusion on LocalStack" section of
   bench/RESULTS.md.

    .venv/bin/python bench/fusion_localstack.py [--runs 5] [--transport sqs stepfunctions] [--results bench/RESULTS.md]

Needs .venv-localstack (``make .venv-localstack/.installed``), .venv-sam (``make sam``) and python3.12.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from itertools import pairwise
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "bench" / "fusion_app"
WORK = ROOT / ".localstack" / "fusion-bench"
STACK = "fusion-bench"
CHAINS = {"fused": "chain-fused", "plain": "chain-plain"}
SECTION = "## Step fusion on LocalStack"
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.e2e.localstack_fixture import load_ctl  # noqa: E402

from stepchain.deploy.deploy_local import deploy  # noqa: E402
from stepchain.deploy.samgen_base import dump_template, load_cfn  # noqa: E402


def sh(cmd: list[str], **kw: Any) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def python312() -> str:
    """The python3.12 interpreter (pyenv's, as the Makefile's PY312, else PATH's): sam build runs with it."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    found = sorted(pyenv.glob("versions/3.12*/bin/python3.12")) or [Path(p) for p in [shutil.which("python3.12")] if p]
    if not found:
        raise SystemExit("python3.12 not found: sam build needs it on PATH")
    return str(found[0])


def generate_and_build() -> Path:
    """``stepchain asl`` + ``stepchain template`` from bench/fusion_app, then ``sam build``: the build dir."""
    src, build = WORK / "src", WORK / "build"
    shutil.rmtree(src, ignore_errors=True)
    (src / "statemachine").mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop("STEPCHAIN_FUSE_MAX_STEPS", None)  # the definitions decide
    cli = [sys.executable, "-m", "stepchain.cli"]
    for wf in ("chains:fused", "chains:plain"):
        sh([*cli, "asl", wf, "--pythonpath", str(APP), "--out", str(src / "statemachine")], env=env)
    sh(
        [*cli, "template", "chains:fused", "chains:plain", "--pythonpath", str(APP), "--code-uri", f"{APP}/",
         "--asl-dir", str(src / "statemachine"), "--out", str(src / "template.yaml")],
        env=env,
    )  # fmt: skip
    tpl = load_cfn((src / "template.yaml").read_text())
    tpl["Resources"]["StepchainLayer"]["Properties"]["ContentUri"] = f"{ROOT / 'layers' / 'stepchain'}/"
    (src / "template.yaml").write_text(dump_template(tpl))
    sam = ROOT / ".venv-sam" / "bin" / "sam"
    path = f"{Path(python312()).parent}:{os.environ['PATH']}"
    started = time.monotonic()
    sh([str(sam), "build", "--template-file", str(src / "template.yaml"), "--build-dir", str(build)],
       env={**os.environ, "PATH": path, "SAM_CLI_TELEMETRY": "0"}, cwd=src)  # fmt: skip
    print(f"sam build: {time.monotonic() - started:.0f} s", flush=True)
    return build


def request(method: str, url: str, key: str | None, body: Any = None) -> dict[str, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    if key:
        req.add_header("x-api-key", key)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 only, never a proxy
    with opener.open(req, timeout=60) as resp:
        return dict(json.loads(resp.read()))


def run_once(api: str, key: str | None, workflow: str, timeout_s: float = 300) -> dict[str, Any]:
    rid = request("POST", f"{api}/runs", key, {"workflow": workflow, "input": {"n": 0}})["run_id"]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        doc = request("GET", f"{api}/runs/{rid}", key)
        if doc["status"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
            if doc["status"] != "SUCCEEDED":
                raise SystemExit(f"{workflow} run {rid} {doc['status']}: {json.dumps(doc)[:2000]}")
            return doc
        time.sleep(0.5)
    raise SystemExit(f"{workflow} run {rid} did not finish in {timeout_s:.0f} s")


def gaps_ms(doc: dict[str, Any]) -> list[int]:
    """Step-to-step gaps of a run view: each node's start minus its predecessor's end."""
    nodes = sorted(doc["nodes"], key=lambda n: n["started_ms"])
    return [b["started_ms"] - a["ended_ms"] for a, b in pairwise(nodes)]


def pct(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


def measure(api: str, key: str | None, runs: int) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for label, workflow in CHAINS.items():
        gaps: list[int] = []
        fused = 0
        walls: list[int] = []
        for _ in range(runs):
            doc = run_once(api, key, workflow)
            gaps += gaps_ms(doc)
            fused += sum(1 for n in doc["nodes"] if n.get("fused"))
            walls.append(int(doc["totals"]["wall_ms"]))
        steps = len(doc["nodes"])
        out[label] = {
            "gaps": len(gaps), "p50": statistics.median(gaps), "p90": pct(gaps, 0.9), "fused": fused / runs,
            "invocations": steps - fused / runs, "wall_ms": statistics.median(walls),
        }  # fmt: skip
        print(f"{workflow}: {out[label]}", flush=True)
    return out


def section(results: dict[str, dict[str, dict[str, Any]]], runs: int) -> str:
    rows, summary = [], []
    for transport, figures in results.items():
        f, p = figures["fused"], figures["plain"]
        for name, v in (("`chain-fused` (`fuse=True`)", f), ("`chain-plain`", p)):
            rows.append(
                f"| {transport} | {name} | {v['p50']:.0f} | {v['p90']:.0f} | {v['invocations']:.0f} | "
                f"{v['fused']:.0f} | {v['wall_ms'] / 1000:.2f} |"
            )
        ratio = p["p50"] / f["p50"] if f["p50"] > 0 else float("inf")
        summary.append(f"{transport}: fused p50 {f['p50']:.0f} ms vs unfused {p['p50']:.0f} ms ({ratio:.0f}x)")
    return "\n".join([
        SECTION,
        "",
        "One LocalStack deployment per transport (Docker-free, API Gateway, `ApiAuth=apikey`) of two chains of 8",
        "trivial steps served by one worker function: `chain-fused` defined with `Workflow(fuse=True)`,",
        f"`chain-plain` without. {runs} runs of each, started with `POST /runs`, one at a time; gap = a step's start",
        "minus its predecessor's end (the run view's node timestamps); invocations = steps not fused.",
        "`python bench/fusion_localstack.py` (`make bench-fusion-localstack`).",
        "",
        "| transport | chain | p50 step-to-step (ms) | p90 (ms) | step invocations / run | fused steps / run "
        "| run wall (s) |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        "; ".join(summary) + ".",
        "",
        "LocalStack runs each Lambda invocation as a host process on a shared 2-core machine: absolute figures",
        "are not AWS's; the unfused gap is LocalStack's handoff (its SQS event source polling or a Step Functions",
        "transition, plus an invocation).",
        "",
    ])  # fmt: skip


def write_results(path: Path, text: str) -> None:
    old = path.read_text() if path.exists() else ""
    if SECTION in old:
        start = old.index(SECTION)
        nxt = old.find("\n## ", start + len(SECTION))
        old = old[:start] + (old[nxt + 1 :] if nxt != -1 else "")
    path.write_text(old.rstrip("\n") + "\n\n" + text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--transport", nargs="+", choices=("sqs", "stepfunctions"), default=["sqs", "stepfunctions"])
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS.md")
    ap.add_argument("--no-results", action="store_true", help="print only")
    args = ap.parse_args()
    build = generate_and_build()
    ctl = load_ctl()
    handle = ctl.start(WORK / "localstack", port=0)  # 127.0.0.1, a free port
    results: dict[str, dict[str, dict[str, Any]]] = {}
    try:
        for transport in args.transport:
            started, stack = time.monotonic(), f"{STACK}-{transport[:3]}"
            dep = deploy(stack, {"Transport": transport, "ApiAuth": "apikey"}, endpoint=handle.endpoint,
                         build_dir=build, timeout_s=900)  # fmt: skip
            print(f"deployed {stack} ({dep.status}) in {time.monotonic() - started:.0f} s: {dep.outputs['ApiUrl']}")
            results[transport] = measure(dep.outputs["ApiUrl"], dep.outputs.get("ApiKeyValue"), args.runs)
    finally:
        ctl.stop(handle)
    text = section(results, args.runs)
    print(text)
    if not args.no_results:
        write_results(args.results, text)


if __name__ == "__main__":
    main()
