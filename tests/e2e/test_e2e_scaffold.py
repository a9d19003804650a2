"""Issue 9's acceptance: a project made by `stepchain new`, with nothing edited, passes its tests, `sam validate
--lint` and `sam build`, deploys to LocalStack (no Docker) and completes a run through API Gateway.

It follows README's "Deploy your own workflow" commands in a temporary directory: stepchain installed from
its wheel (the session's ``wheel_venv``: ``pip install --no-deps stepchain-<v>.whl`` into a venv whose other
dependencies come from this checkout's venv, to save the minute a full install takes; test_wheel_install.py
does the full one), ``stepchain new my-agent`` (no ``--wheel``: the project vendors a wheel rebuilt from that
install), ``make test`` (concurrently with the rest: it shares nothing with it), ``make validate``,
``make deploy-local`` (which runs ``sam build``), then the curl requests of the README as plain HTTP: start
a run, wait for its event wait, deliver the event, see SUCCEEDED; and the project's sample events, invoked on
the deployed API function. The starter workflow shares no code with the research agent. Durations are
printed (``-s``).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from tests.e2e.deployed import REPO, check_local, until

pytestmark = pytest.mark.e2e

STACK = "sc-e2e-new"


def readme_commands() -> list[str]:
    """The bash block of README's "Deploy your own workflow": the commands this test follows."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Deploy your own workflow") :]
    start = section.index("```bash\n") + len("```bash\n")
    block = section[start : section.index("\n```", start)]
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def test_readme_deploy_your_own_workflow_is_five_commands() -> None:
    commands = readme_commands()
    assert len(commands) <= 5, commands
    assert re.fullmatch(r"pip install '\./stepchain-[0-9.]+-py3-none-any\.whl\[template\]'", commands[0])
    assert commands[1:4] == ["stepchain new my-agent", "cd my-agent && make test", "make deploy-local"]
    assert commands[4].startswith('curl -s -X POST "$(make -s api-url)/runs" ')


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "AWS_ENDPOINT_URL")}


def _run(cmd: list[str], cwd: Path, timings: dict[str, float], label: str, timeout: float = 600) -> str:
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout, check=False)
    timings[label] = time.monotonic() - started
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


def test_stepchain_new_project_tests_builds_deploys_and_runs(
    wheel_venv: Path, localstack_endpoint: str, aws: Callable[[str], Any], tmp_path: Path
) -> None:
    timings: dict[str, float] = {}
    subprocess.run(["make", "-s", "--no-print-directory", ".venv-sam/.installed"], cwd=REPO, check=True)
    commands = readme_commands()  # the README's commands, as checked above
    new = commands[1].split()
    _run([str(wheel_venv / "bin" / new[0]), *new[1:]], tmp_path, timings, "stepchain new")
    project = tmp_path / "my-agent"
    sources = [p.read_text() for p in project.rglob("*.py")]
    assert sources and not any("research_agent" in s or "research-agent" in s for s in sources)

    make = ["make", "--no-print-directory", f"VENV={wheel_venv}", f"SAM={REPO / '.venv-sam' / 'bin' / 'sam'}"]
    # the project's tests run while it is validated, built and deployed (they share nothing but the sources)
    tests_started = time.monotonic()
    tests_log = tmp_path / "make-test.log"
    with tests_log.open("w") as log:
        tests = subprocess.Popen(
            [*make, "test"], cwd=project, env=_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        body = json.loads(shlex.split(commands[4])[-1])  # curl ... -d '<body>'
        _deploy_and_run(make, project, localstack_endpoint, aws, timings, body)
        _iterate(make, project, localstack_endpoint, aws, timings, body)
        tests.wait(timeout=600)
    finally:
        if tests.poll() is None:  # a failure above: stop make and its pytest (their own process group)
            os.killpg(tests.pid, signal.SIGTERM)
            tests.wait(timeout=30)
    timings["make test (concurrently)"] = time.monotonic() - tests_started
    output = tests_log.read_text()
    assert tests.returncode == 0 and re.search(r"\b\d+ passed\b", output), output[-4000:]
    assert not re.search(r"\b\d+ (failed|error)", output), output[-4000:]
    print("\n[e2e scaffold] " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))


def _deploy_and_run(
    make: list[str],
    project: Path,
    localstack_endpoint: str,
    aws: Callable[[str], Any],
    timings: dict[str, float],
    body: dict[str, Any],
) -> None:
    _run([*make, "validate"], project, timings, "make validate (sam validate --lint)")
    _run(
        [*make, "deploy-local", f"ENDPOINT={localstack_endpoint}", f"STACK={STACK}"],
        project, timings, "make deploy-local (sam build + deploy)", timeout=900,
    )  # fmt: skip
    assert (project / ".aws-sam" / "build" / "StepchainLayer" / "python" / "stepchain" / "__init__.py").exists()
    api = _run([*make, "-s", "api-url"], project, timings, "make api-url").strip()
    check_local(api)

    started = time.monotonic()
    http = requests.Session()
    http.trust_env = False  # 127.0.0.1 only, never through a proxy

    def call(method: str, path: str, body: Any = None, expect: int = 200) -> dict[str, Any]:
        resp = http.request(method, f"{api}{path}", json=body, timeout=60)
        assert resp.status_code == expect, f"{method} {path}: {resp.status_code} {resp.text[:2000]}"
        return dict(resp.json())

    run_id = call("POST", "/runs", body, 202)["run_id"]  # the README's curl
    until(lambda: call("GET", f"/runs/{run_id}")["status"] == "WAITING", timeout_s=120, what="the review wait")
    delivered = call("POST", f"/runs/{run_id}/events/review", {"approved": True, "by": "e2e"}, 202)
    assert delivered["status"] == "delivered", delivered
    doc = until(
        lambda: (d := call("GET", f"/runs/{run_id}"))["status"] in ("SUCCEEDED", "FAILED") and d,
        timeout_s=120, what="the run's end",
    )  # fmt: skip
    timings["run through API Gateway"] = time.monotonic() - started
    assert doc["status"] == "SUCCEEDED", json.dumps(doc)[:3000]
    assert doc["output"]["published"] is True and doc["output"]["sections"] == 3
    assert [n["key"] for n in doc["nodes"]] == ["outline", "draft", "review", "publish"]

    # the project's sample events (for `sam local invoke`) work with the deployed API function
    t0 = time.monotonic()
    function = aws("cloudformation").describe_stack_resource(StackName=STACK, LogicalResourceId="ApiFunction")
    name = function["StackResourceDetail"]["PhysicalResourceId"]

    def invoke(event_file: str, run: str = "") -> dict[str, Any]:
        event = (project / "events" / event_file).read_text().replace("RUN_ID", run)
        return dict(json.loads(aws("lambda").invoke(FunctionName=name, Payload=event.encode())["Payload"].read()))

    reply = invoke("api-start-run.json")
    assert reply.get("statusCode") == 202, str(reply)[:2000]
    sample = json.loads(reply["body"])["run_id"]
    assert invoke("api-get-run.json", sample).get("statusCode") == 200

    def sample_status() -> str:  # as the sample events' caller (their identity owns the run)
        return str(json.loads(invoke("api-get-run.json", sample)["body"])["status"])

    # LocalStack puts no caller identity in an IAM request, and ownership refuses such requests (401), so
    # `make deploy-local` deploys an ApiAuth=iam stack with RunOwnership=off: the HTTP caller sees the run
    call("GET", f"/runs/{sample}", expect=200)
    until(lambda: sample_status() == "WAITING", timeout_s=120, what="the sample's wait")
    assert invoke("api-send-event.json", sample).get("statusCode") == 202
    until(lambda: sample_status() == "SUCCEEDED", timeout_s=120, what="the sample's end")
    timings["sample events"] = time.monotonic() - t0


def _iterate(
    make: list[str],
    project: Path,
    localstack_endpoint: str,
    aws: Callable[[str], Any],
    timings: dict[str, float],
    body: dict[str, Any],
) -> None:
    """Issue 17: iterating on LocalStack. A redeploy with nothing changed, then with another transport, keeps a
    working API and its outputs (it used to roll back the API stage and say "deployed" with no outputs);
    `make destroy-local` removes the stack and its log groups, and a deploy after it works."""
    deploy = [*make, "deploy-local", f"ENDPOINT={localstack_endpoint}", f"STACK={STACK}"]
    http = requests.Session()
    http.trust_env = False

    def starts_a_run(label: str) -> None:
        api = _run([*make, "-s", "api-url"], project, timings, f"api-url after {label}").strip()
        resp = http.post(f"{api}/runs", json=body, timeout=60)
        assert resp.status_code == 202, f"after {label}: {resp.status_code} {resp.text[:2000]}"
        run_id = resp.json()["run_id"]
        until(lambda: http.get(f"{api}/runs/{run_id}", timeout=60).json()["status"] == "WAITING",
              timeout_s=120, what=f"a run's wait after {label}")  # fmt: skip

    _run(deploy, project, timings, "make deploy-local (warm, unchanged)", timeout=900)
    starts_a_run("an unchanged redeploy")
    out = _run([*deploy, "PARAMS=Transport=sqs"], project, timings, "make deploy-local PARAMS=Transport=sqs (update)")
    assert '"ApiUrl"' in out and '"ControlQueueUrl"' in out, out[-3000:]
    env = aws("lambda").get_function_configuration(FunctionName=_physical(aws, "ApiFunction"))["Environment"]
    assert env["Variables"]["STEPCHAIN_TRANSPORT"] == "sqs", env
    starts_a_run("a transport change")

    groups = [g for g in _log_groups(aws) if STACK in g]
    assert groups, "the deployed functions wrote no log groups"
    _run([*make, "destroy-local", f"ENDPOINT={localstack_endpoint}", f"STACK={STACK}"], project, timings,
         "make destroy-local")  # fmt: skip
    assert [g for g in _log_groups(aws) if STACK in g] == []
    _run(deploy, project, timings, "make deploy-local (after destroy)", timeout=900)
    starts_a_run("destroy and deploy")

    # the sample events through `make invoke` (no Docker): run locally against the deployed stack
    invoke = [*make, "-s", "invoke", "FN=ApiFunction", f"ENDPOINT={localstack_endpoint}", f"STACK={STACK}"]
    started = json.loads(_run([*invoke, "EVENT=events/api-start-run.json"], project, timings, "make invoke"))
    assert started["statusCode"] in (200, 202), started
    run_id = json.loads(started["body"])["run_id"]
    got = json.loads(_run([*invoke, "EVENT=events/api-get-run.json", f"RUN_ID={run_id}"], project, timings, "invoke"))
    assert got["statusCode"] == 200, got


def _physical(aws: Callable[[str], Any], logical: str) -> str:
    res = aws("cloudformation").describe_stack_resource(StackName=STACK, LogicalResourceId=logical)
    return str(res["StackResourceDetail"]["PhysicalResourceId"])


def _log_groups(aws: Callable[[str], Any]) -> list[str]:
    pages = aws("logs").get_paginator("describe_log_groups").paginate()
    return [g["logGroupName"] for page in pages for g in page["logGroups"]]
