"""tools/local_invoke.py runs a function as its template declares it, in a fresh process, like Lambda would."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from tests.template.samshell import ALL_FUNCTIONS, LOCAL_INVOKE, ROOT, STEP_FUNCTIONS
from tools.local_invoke import load_template

HANDLERS = """
import json, os, sys, time
import mylib

def ok(event, context):
    print("handler log line")
    return {"event": event, "greeting": os.environ["GREETING"], "queues": json.loads(os.environ["QUEUES"]),
            "lib": mylib.SOURCE, "name": context.function_name, "memory": context.memory_limit_in_mb,
            "remaining": context.get_remaining_time_in_millis(), "request_id": context.aws_request_id,
            "arn": context.invoked_function_arn, "sys_path": sys.path[:2], "cwd": os.getcwd()}

def boom(event, context):
    raise ValueError("bad input: " + event["why"])

def slow(event, context):
    with open(os.environ["PID_FILE"], "w") as f:
        f.write(str(os.getpid()))
    time.sleep(60)
    return "too late"
"""
TEMPLATE = """
AWSTemplateFormatVersion: '2010-09-09'
Transform: AWS::Serverless-2016-10-31
Parameters:
  Mode: {Type: String, Default: plain, AllowedValues: [plain, fancy]}
Conditions:
  IsFancy: !Equals [!Ref Mode, fancy]
Globals:
  Function:
    Runtime: python3.12
    CodeUri: code/
    Timeout: 3
    Layers: [!Ref LibLayer]
    Environment:
      Variables:
        GREETING: !If [IsFancy, 'good day', !Sub 'hi from ${AWS::Region}']
        QUEUES: !Sub '{"q": "${WorkQueue}", "arn": "${WorkQueue.Arn}"}'
Resources:
  LibLayer:
    Type: AWS::Serverless::LayerVersion
    Properties: {ContentUri: layer/}
    Metadata: {LocalInvokePythonPath: layer/python}
  WorkQueue: {Type: AWS::SQS::Queue}
  OkFunction:
    Type: AWS::Serverless::Function
    Properties: {Handler: app.ok, MemorySize: 256}
  BoomFunction:
    Type: AWS::Serverless::Function
    Properties: {Handler: app.boom}
  SlowFunction:
    Type: AWS::Serverless::Function
    Properties:
      Handler: app.slow
      Timeout: 1
      Environment: {Variables: {PID_FILE: 'unset'}}
  MissingFunction:
    Type: AWS::Serverless::Function
    Properties: {Handler: nope.handler}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "app.py").write_text(HANDLERS)
    (tmp_path / "layer" / "python" / "mylib").mkdir(parents=True)
    (tmp_path / "layer" / "python" / "mylib" / "__init__.py").write_text('SOURCE = "layer source"\n')
    (tmp_path / "template.yaml").write_text(TEMPLATE)
    (tmp_path / "event.json").write_text('{"why": "testing"}')
    return tmp_path


def invoke(project: Path, fn: str, *args: str, aws: bool = False, drop: tuple[str, ...] = ()) -> tuple[int, Any, str]:
    event, template = str(project / "event.json"), str(project / "template.yaml")
    cmd = [sys.executable, str(LOCAL_INVOKE), fn, event, "--template", template, *([] if aws else ["--no-aws"])]
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_REGION", "AWS_DEFAULT_REGION", *drop)}
    result = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=60, env=env)
    output = json.loads(result.stdout) if result.stdout.strip() else None
    return result.returncode, output, result.stderr


def test_success_prints_the_result_and_a_report(project: Path) -> None:
    rc, out, err = invoke(project, "OkFunction")
    assert rc == 0, err
    assert out["event"] == {"why": "testing"} and out["greeting"] == "hi from us-east-1"
    assert out["queues"] == {
        "q": "https://sqs.us-east-1.amazonaws.com/123456789012/local-WorkQueue",
        "arn": "arn:aws:sqs:us-east-1:123456789012:local-WorkQueue",
    }
    assert out["lib"] == "layer source" and out["sys_path"] == [str(project / "code"), str(project / "layer/python")]
    assert (out["name"], out["memory"], out["cwd"]) == ("OkFunction", 256, str(project / "code"))
    assert 2000 < out["remaining"] <= 3000
    assert out["arn"] == "arn:aws:lambda:us-east-1:123456789012:function:OkFunction"
    assert "handler log line" in err  # the handler's stdout is the log stream, never the result
    report = re.search(r"REPORT RequestId: (\S+)\tDuration: [\d.]+ ms\tBilled Duration: \d+ ms\t"
                       r"Memory Size: 256 MB\tMax Memory Used: \d+ MB\tInit Duration: [\d.]+ ms", err)  # fmt: skip
    assert report and report.group(1) == out["request_id"]


def test_handler_error_is_reported_like_lambda(project: Path) -> None:
    rc, out, err = invoke(project, "BoomFunction")
    assert rc == 1
    assert (out["errorType"], out["errorMessage"]) == ("ValueError", "bad input: testing")
    assert any("in boom" in frame for frame in out["stackTrace"])
    assert "ValueError: bad input: testing" in err and "REPORT RequestId:" in err


def test_timeout_kills_the_handler_process(project: Path) -> None:
    pid_file = project / "slow.pid"
    env_vars = project / "env.json"
    env_vars.write_text(json.dumps({"SlowFunction": {"PID_FILE": str(pid_file)}}))
    started = time.monotonic()
    rc, out, err = invoke(project, "SlowFunction", "--env-vars", str(env_vars))
    elapsed = time.monotonic() - started
    assert rc == 1 and elapsed < 30.0, elapsed  # the handler sleeps 60 s: killed (margin for a loaded machine)
    assert out["errorType"] == "Sandbox.Timedout"
    assert out["errorMessage"].endswith("Task timed out after 1.00 seconds")
    assert re.search(r"\S+ Task timed out after 1\.00 seconds", err)
    assert "Duration: 1000.00 ms" in err
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)


def test_missing_handler_module_is_an_import_error(project: Path) -> None:
    rc, out, _ = invoke(project, "MissingFunction")
    assert rc == 1
    assert out["errorType"] == "Runtime.ImportModuleError"
    assert out["errorMessage"].startswith("Unable to import module 'nope'")


def test_parameter_overrides_and_env_vars(project: Path) -> None:
    (project / "env.json").write_text(json.dumps({"Parameters": {"QUEUES": '{"q": "local"}', "UNDECLARED": "x"}}))
    rc, out, err = invoke(
        project, "OkFunction", "--parameter-overrides", "Mode=fancy", "--env-vars", str(project / "env.json")
    )
    assert rc == 0, err
    assert (out["greeting"], out["queues"]) == ("good day", {"q": "local"})
    assert "UNDECLARED ignored" in err
    rc, _, err = invoke(project, "OkFunction", "--parameter-overrides", "Mode=odd")
    assert rc == 2 and "Mode='odd' is not one of" in err


def test_built_layer_is_preferred_when_built_for_this_machine(project: Path) -> None:
    built = project / ".aws-sam" / "build" / "LibLayer" / "python" / "mylib"
    built.mkdir(parents=True)
    (built / "__init__.py").write_text('SOURCE = "built layer"\n')
    rc, out, err = invoke(project, "OkFunction")
    assert rc == 0 and out["lib"] == "built layer" and "older than" not in err
    source = project / "layer" / "python" / "mylib" / "__init__.py"
    os.utime(source, (time.time() + 60, time.time() + 60))  # edited after the build: the sources win
    rc, out, err = invoke(project, "OkFunction")
    assert rc == 0 and out["lib"] == "layer source" and "is older than layer/python" in err
    template = (project / "template.yaml").read_text()
    other = "arm64" if os.uname().machine == "x86_64" else "x86_64"
    arch = f"Architectures: [{other}]\n    Runtime: python3.12"
    (project / "template.yaml").write_text(template.replace("Runtime: python3.12", arch))
    rc, out, err = invoke(project, "OkFunction")
    assert rc == 0 and out["lib"] == "layer source" and f"is for {other}" in err


def test_short_form_tags_load_as_long_form(project: Path) -> None:
    tpl = load_template(project / "template.yaml")
    assert tpl["Conditions"]["IsFancy"] == {"Fn::Equals": [{"Ref": "Mode"}, "fancy"]}
    assert tpl["Globals"]["Function"]["Environment"]["Variables"]["GREETING"]["Fn::If"][0] == "IsFancy"


@pytest.fixture(scope="module")
def real_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real template.yaml next to a stub app.py (the agent's handlers are not under test here)."""
    root = tmp_path_factory.mktemp("real")
    (root / "template.yaml").write_text((ROOT / "template.yaml").read_text())
    (root / "src").symlink_to(ROOT / "src")
    code = root / "functions"  # the CodeUri: functions/app.py serves every workflow
    code.mkdir(parents=True)
    (code / "app.py").write_text(
        "import os, stepchain\n"
        "def step_handler(event, context):\n"
        "    return {'env': dict(os.environ), 'stepchain': stepchain.__file__}\n"
        "api_handler = sweeper_handler = step_handler\n"
    )  # fmt: skip
    (root / "event.json").write_text("{}")
    return root


@pytest.mark.parametrize("fn", ALL_FUNCTIONS)
def test_every_real_function_resolves_and_runs(real_project: Path, fn: str) -> None:
    rc, out, err = invoke(real_project, fn, "--parameter-overrides", "Transport=sqs", "--stack-name", "demo")
    assert rc == 0, err
    env = out["env"]
    assert env["STEPCHAIN_FUNCTION"] == fn and env["STEPCHAIN_TRANSPORT"] == "sqs"
    assert env["STEPCHAIN_TABLE"] == "demo-CheckpointTable" and env["STEPCHAIN_BUCKET"] == "demo-payloadbucket"
    assert env["STEPCHAIN_STATE_MACHINE_PREFIX"].endswith(":stateMachine:demo-")  # + the workflow's name
    queues = json.loads(env["STEPCHAIN_QUEUES"])  # one per worker function (tests/template/test_sam_conventions.py)
    assert len(queues) == len(STEP_FUNCTIONS) + 1 and "*" in queues and "ToolAgentFunction" in queues
    assert env["POWERTOOLS_SERVICE_NAME"] == "stepchain" and env["AWS_SAM_LOCAL"] == "true"
    assert out["stepchain"] == str(real_project / "src" / "stepchain" / "__init__.py")


def test_a_function_that_uses_aws_resources_says_what_to_set_without_an_endpoint(project: Path) -> None:
    # issue 17: the API function answered 500 with a NoCredentialsError trace; now the command says what to set
    no_aws = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN")
    rc, out, err = invoke(project, "OkFunction", aws=True, drop=no_aws)
    assert (rc, out) == (2, None)
    assert "OkFunction uses WorkQueue" in err and "make deploy-local" in err and "--stack NAME" in err
    assert "Traceback" not in err


def test_run_id_in_an_event_must_be_given(project: Path) -> None:
    (project / "event.json").write_text('{"path": "/runs/RUN_ID"}')
    rc, _, err = invoke(project, "OkFunction")
    assert rc == 2 and "RUN_ID=<run_id>" in err and "Traceback" not in err
    rc, out, err = invoke(project, "OkFunction", "--run-id", "r-1")
    assert rc == 0 and out["event"] == {"path": "/runs/r-1"}, err
