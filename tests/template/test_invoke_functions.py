"""`make invoke` without Docker on the real functions of template.yaml, against an emulated AWS.

ApiFunction starts a run (POST /runs); PlanFunction then consumes the plan step's SQS message,
checkpoints its output in DynamoDB and hands off to fetch. Both run in fresh processes exactly as
the template declares them (handler, environment, layer code, timeout).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from stepchain.runtimes.local import EmbeddedAws, LocalStack

ROOT = Path(__file__).resolve().parents[2]
QUESTION = "How much do grid-scale battery packs cost and how efficient are they?"


@pytest.fixture(scope="module")
def aws() -> Iterator[tuple[EmbeddedAws, LocalStack]]:
    with EmbeddedAws() as emulator:
        yield emulator, emulator.provision(visibility_timeout_s=5)


def invoke(fn: str, event: dict, env_vars: Path, endpoint: str, tmp: Path) -> tuple[dict, str]:
    event_file = tmp / f"{fn}.json"
    event_file.write_text(json.dumps(event))
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_LOG_LEVEL": "ERROR",
    }
    env.pop("DOCKER_HOST", None)
    proc = subprocess.run(
        ["make", "-s", "--no-print-directory", "invoke", f"FN={fn}", f"EVENT={event_file}", f"ENV_VARS={env_vars}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "REPORT RequestId" in proc.stderr  # it ran as a Lambda invocation
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def test_api_then_plan_function_make_progress_on_a_run(aws: tuple[EmbeddedAws, LocalStack], tmp_path: Path) -> None:
    emulator, stack = aws
    settings = {
        "STEPCHAIN_TABLE": stack.table,
        "STEPCHAIN_BUCKET": stack.bucket,
        "STEPCHAIN_TRANSPORT": "sqs",
        "STEPCHAIN_QUEUES": json.dumps({"*": stack.queue_url}),
    }
    env_vars = tmp_path / "env.json"
    env_vars.write_text(json.dumps({"ApiFunction": settings, "PlanFunction": settings}))

    start = json.loads((ROOT / "events" / "api-start-run.json").read_text())
    start["body"] = json.dumps({"workflow": "research-agent", "input": {"question": QUESTION}})
    start["headers"].pop("Idempotency-Key", None)
    response, _ = invoke("ApiFunction", start, env_vars, emulator.endpoint, tmp_path)
    assert response["statusCode"] == 202, response
    run_id = json.loads(response["body"])["run_id"]

    sqs = emulator.client("sqs")
    msgs = sqs.receive_message(QueueUrl=stack.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)["Messages"]
    assert [json.loads(m["Body"])["node"] for m in msgs] == ["plan"]
    sqs_event = json.loads((ROOT / "events" / "sqs-plan-message.json").read_text())
    sqs_event["Records"][0].update(
        messageId=msgs[0]["MessageId"], receiptHandle=msgs[0]["ReceiptHandle"], body=msgs[0]["Body"]
    )
    result, logs = invoke("PlanFunction", sqs_event, env_vars, emulator.endpoint, tmp_path)
    assert result == {"batchItemFailures": []}
    # as the event source mapping does with a record that succeeded (else it comes back after the queue's 5 s)
    sqs.delete_message(QueueUrl=stack.queue_url, ReceiptHandle=msgs[0]["ReceiptHandle"])
    emf = [json.loads(line) for line in logs.splitlines() if line.startswith("{") and "_aws" in line]
    assert [m["StepsExecuted"] for m in emf] == [[1.0]], logs  # one CloudWatch metric (EMF) per invocation

    ddb = emulator.client("dynamodb")
    plan = ddb.get_item(TableName=stack.table, Key={"pk": {"S": f"RUN#{run_id}"}, "sk": {"S": "N#plan"}})["Item"]
    assert plan["status"]["S"] == "SUCCEEDED"
    handed_off = sqs.receive_message(QueueUrl=stack.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
    assert [json.loads(m["Body"])["node"] for m in handed_off.get("Messages", [])] == ["fetch"]


def test_sample_events_match_the_workflow_version() -> None:
    """The Step Functions / SQS sample events name the deployed workflow version, or they would be refused."""
    from research_agent.workflow import wf

    for path in sorted((ROOT / "events").glob("s*-*.json")):
        doc = json.loads(path.read_text())
        activation = json.loads(doc["Records"][0]["body"]) if "Records" in doc else doc
        assert activation["version"] == wf.version, f"{path.name}: regenerate the sample events"
        assert wf.has_node(activation["node"])


def test_sweeper_function_reissues_the_activation_of_a_start_that_died(
    aws: tuple[EmbeddedAws, LocalStack], tmp_path: Path
) -> None:
    """The API dies between writing a run and sending its first message; the real SweeperFunction
    (as the schedule invokes it) sends that message."""
    from research_agent.workflow import wf
    from stepchain.runtimes.aws import AwsClients, build_engine
    from stepchain.settings import Settings
    from stepchain.testing import InjectedCrash
    from stepchain.testing.probe import HarnessProbe

    emulator, stack = aws
    settings = {
        "STEPCHAIN_TABLE": stack.table,
        "STEPCHAIN_BUCKET": stack.bucket,
        "STEPCHAIN_TRANSPORT": "sqs",
        "STEPCHAIN_QUEUES": json.dumps({"*": stack.queue_url}),
    }
    clients = AwsClients(dynamodb=emulator.client("dynamodb"), s3=emulator.client("s3"), sqs=emulator.client("sqs"))
    engine = build_engine([wf], Settings.from_env(settings), clients=clients)
    probe = HarnessProbe()
    probe.crash("api_start")
    engine.probe = engine.handoff.probe = probe
    with pytest.raises(InjectedCrash):
        engine.start(wf.name, {"question": QUESTION})
    [stuck] = [
        r
        for r in engine.store.list_active_runs().runs
        if engine.store.get_node(r.run_id, "plan").status.value == "PENDING"
    ]  # type: ignore[union-attr]
    env_vars = tmp_path / "env.json"
    env_vars.write_text(json.dumps({"SweeperFunction": {**settings, "STEPCHAIN_SWEEP_GRACE_S": "0"}}))
    event = json.loads((ROOT / "events" / "eventbridge-sweep.json").read_text())
    report, _ = invoke("SweeperFunction", event, env_vars, emulator.endpoint, tmp_path)
    assert report["acted"] >= 1 and not report["errors"], report
    sqs = emulator.client("sqs")
    got = sqs.receive_message(QueueUrl=stack.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
    assert {"run_id": stuck.run_id, "node": "plan"} in [
        {k: json.loads(m["Body"])[k] for k in ("run_id", "node")} for m in got
    ], got
    assert [c.kind for c in engine.store.list_crash_events(stuck.run_id)] == ["swept"]
