"""template.yaml follows the names and numbers fixed for the project (functions, queues, env, layer, logs)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from tests.template.samshell import ALL_FUNCTIONS, RESEARCH_FUNCTIONS, ROOT, STEP_FUNCTIONS, TOOL_FUNCTIONS
from tools.local_invoke import Resolver

from stepchain.define.load import load_workflow
from stepchain.engine.queue_routes import node_queues
from stepchain.settings import Settings

# logical id -> (Handler, Timeout, MemorySize)
FUNCTIONS = {
    "PlanFunction": ("app.step_handler", 30, 256),
    "FetchFunction": ("app.step_handler", 60, 512),
    "SummarizeFunction": ("app.step_handler", 120, 1024),
    "CrossrefFunction": ("app.step_handler", 120, 512),
    "DraftFunction": ("app.step_handler", 300, 1024),
    "ToolAgentFunction": ("app.step_handler", 60, 512),
    "ToolLookupFunction": ("app.step_handler", 20, 512),
    "ControlFunction": ("app.step_handler", 30, 256),
    "ApiFunction": ("app.api_handler", 29, 512),
    "SweeperFunction": ("app.sweeper_handler", 120, 256),
}
QUEUE_OF = {fn: fn.replace("Function", "Queue") for fn in (*STEP_FUNCTIONS, "ControlFunction")}
GLOBAL_ENV = {
    "POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE", "POWERTOOLS_LOG_LEVEL", "STEPCHAIN_TABLE",
    "STEPCHAIN_BUCKET", "STEPCHAIN_TRANSPORT", "STEPCHAIN_STATE_MACHINE_PREFIX", "STEPCHAIN_QUEUES",
    "STEPCHAIN_RETENTION_DAYS", "STEPCHAIN_LLM", "STEPCHAIN_BEDROCK_MODEL_ID", "STEPCHAIN_MAX_MAP_ITEMS",
    "STEPCHAIN_MAX_INPUT_BYTES", "STEPCHAIN_SQS_VISIBILITY_S", "STEPCHAIN_HEARTBEAT_S",
}  # fmt: skip
#: environment values a function has on top of the global ones
OWN_ENV = {
    "SweeperFunction": {"STEPCHAIN_SWEEP_GRACE_S": "300"},
    "ApiFunction": {
        "STEPCHAIN_OUTPUT_URL_TTL_S": {"Ref": "OutputUrlTtlSeconds"},
        "STEPCHAIN_CURSOR_KEY_SECRET_ARN": {"Ref": "CursorKeySecret"},
        "STEPCHAIN_APPROVAL_KEY_SECRET_ARN": {"Ref": "ApprovalKeySecret"},
        "STEPCHAIN_OWNERSHIP": {"Ref": "RunOwnership"},
        "STEPCHAIN_OPERATORS": {"Ref": "OperatorPrincipals"},
        "STEPCHAIN_ASSUMED_ROLE_CALLER": {"Ref": "AssumedRoleCallers"},
    },
}


def test_functions_share_the_code_dir_and_have_their_own_handler_timeout_memory(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    functions = {lid for lid, r in resources.items() if r["Type"] == "AWS::Serverless::Function"}
    assert functions == set(FUNCTIONS)
    glob = template["Globals"]["Function"]
    assert glob["CodeUri"] == "functions/" and glob["Runtime"] == "python3.12"  # functions/app.py: both agents
    assert glob["Tracing"] == "Active" and glob["Layers"] == [{"Ref": "StepchainLayer"}]
    for lid, (handler, timeout, memory) in FUNCTIONS.items():
        props = resources[lid]["Properties"]
        assert "CodeUri" not in props and "Runtime" not in props, lid
        assert (props["Handler"], props["Timeout"], props["MemorySize"]) == (handler, timeout, memory), lid
        assert props["Environment"]["Variables"] == {"STEPCHAIN_FUNCTION": lid, **OWN_ENV.get(lid, {})}


def test_global_environment(template: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert set(env) == GLOBAL_ENV
    assert env["POWERTOOLS_SERVICE_NAME"] == env["POWERTOOLS_METRICS_NAMESPACE"] == "stepchain"
    r = Resolver(template, {}, "eu-west-1", "demo")
    # the ARNs are built from the fixed names (a Ref would be circular) and must equal the real ones
    prefix = r.resolve(env["STEPCHAIN_STATE_MACHINE_PREFIX"])
    machines = Settings(table="t", bucket="b", state_machine_prefix=prefix).state_machines_of(
        ["research-agent", "tool-agent", "tool-lookup"]
    )
    assert machines == {
        "research-agent": r.resolve({"Ref": "ResearchAgentStateMachine"}),
        "tool-agent": r.resolve({"Ref": "ToolAgentStateMachine"}),
        "tool-lookup": r.resolve({"Ref": "ToolLookupStateMachine"}),
    }
    queues = json.loads(r.resolve(env["STEPCHAIN_QUEUES"]))
    # one entry per worker function, none per node (Lambda's 4 KB environment), and the runtime routes
    # every node of the app to the queue of the function that serves it
    assert sorted(queues.values()) == sorted(r.resolve({"Ref": q}) for q in QUEUE_OF.values())
    for path in ("functions/research_agent", "functions/tool_agent"):
        monkeypatch.syspath_prepend(str(ROOT / path))
    specs = ("research_agent.workflow:wf", "tool_agent.workflow:wf", "tool_agent.workflow:lookup")
    assert node_queues([load_workflow(spec) for spec in specs], queues) == {
        node: r.resolve({"Ref": queue})
        for node, queue in [("plan", "PlanQueue"), ("fetch", "FetchQueue"), ("summarize", "SummarizeQueue"),
                            ("crossref", "CrossrefQueue"), ("draft", "DraftQueue"), ("understand", "ToolAgentQueue"),
                            ("think", "ToolAgentQueue"), ("act", "ToolAgentQueue"), ("send", "ToolAgentQueue"),
                            ("locate", "ToolLookupQueue"), ("extract", "ToolLookupQueue"), ("*", "ControlQueue")]
    }  # fmt: skip


def test_kill_to_resume_is_bounded_by_the_message_visibility_not_the_function_timeout(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    """Issue 10.1: with the deployed defaults, a killed worker's step resumes <= 30 s later on every function
    (ARCHITECTURE.md, *Resuming after a kill*: message back <= V after the kill, a poll ~1 s, a cold start
    ~1 s), although every queue's own visibility timeout is >= its function's timeout, as AWS requires."""
    from stepchain.engine.heartbeat import HeartbeatPolicy

    params = template["Parameters"]
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert env["STEPCHAIN_SQS_VISIBILITY_S"] == {"Ref": "MessageVisibilitySeconds"}
    assert env["STEPCHAIN_HEARTBEAT_S"] == {"Ref": "HeartbeatSeconds"}
    v, h = params["MessageVisibilitySeconds"]["Default"], params["HeartbeatSeconds"]["Default"]
    policy = HeartbeatPolicy.from_env({"STEPCHAIN_SQS_VISIBILITY_S": str(v), "STEPCHAIN_HEARTBEAT_S": str(h)})
    assert policy == HeartbeatPolicy(v, h)  # valid as deployed: no fallback
    poll_s, cold_start_s = 1, 1
    assert v + poll_s + cold_start_s <= 30
    from stepchain.engine.short_queues import ENV_QUEUE_VISIBILITY, queue_visibility_s, sqs_policy_from_env

    for fn, queue in QUEUE_OF.items():
        timeout = resources[fn]["Properties"]["Timeout"]
        q = resources[queue]["Properties"]["VisibilityTimeout"]
        assert q >= timeout  # AWS refuses the mapping otherwise
        assert q == queue_visibility_s(timeout)  # the rule: timeout + 5 s if that is <= V, else 6 x timeout
        own = {k: str(x) for k, x in resources[fn]["Properties"]["Environment"]["Variables"].items()}
        deployed = {"STEPCHAIN_SQS_VISIBILITY_S": str(v), "STEPCHAIN_HEARTBEAT_S": str(h), **own}
        if sqs_policy_from_env(deployed) is None:  # no heartbeat: the queue's own visibility bounds it
            assert own[ENV_QUEUE_VISIBILITY] == str(q) and q >= timeout + 2 + 3 and q + poll_s + cold_start_s <= 30
        else:  # the heartbeat: <= V after the kill
            assert ENV_QUEUE_VISIBILITY not in own and q > v


@pytest.mark.parametrize("fn", list(QUEUE_OF))
def test_each_step_function_consumes_its_own_queue(resources: dict[str, Any], fn: str) -> None:
    queue = QUEUE_OF[fn]
    mappings = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::Lambda::EventSourceMapping"]
    [esm] = [m for m in mappings if m["FunctionName"] == {"Ref": fn}]
    assert esm["EventSourceArn"] == {"Fn::GetAtt": [queue, "Arn"]}
    assert esm["BatchSize"] == (10 if fn == "ControlFunction" else 1)
    assert esm["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert esm["Enabled"] == {"Fn::If": ["UseSqs", True, False]}
    props = resources[queue]["Properties"]
    assert props["VisibilityTimeout"] == 6 * FUNCTIONS[fn][1]  # no function here has timeout + 5 s <= V = 20 s
    assert props["RedrivePolicy"] == {"deadLetterTargetArn": {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]},
                                      "maxReceiveCount": 5}  # fmt: skip
    polls = [s for p in resources[fn]["Properties"]["Policies"] if "Statement" in p for s in p["Statement"]
             if s["Sid"] == "PollOwnQueue"]  # fmt: skip
    assert polls == [{"Sid": "PollOwnQueue", "Effect": "Allow", "Resource": {"Fn::GetAtt": [queue, "Arn"]},
                      "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes",
                                 "sqs:ChangeMessageVisibility"]}]  # fmt: skip
    assert "Events" not in resources[fn]["Properties"]  # SAM's SQS events would attach a '*' managed policy


def test_sweeper_runs_every_minute_one_at_a_time_on_the_active_index(resources: dict[str, Any]) -> None:
    props = resources["SweeperFunction"]["Properties"]
    assert props["Events"] == {
        "EveryMinute": {"Type": "Schedule", "Properties": {"Schedule": "rate(1 minute)",
                                                            "Description": "stepchain recovery sweep"}}
    }  # fmt: skip
    assert props["ReservedConcurrentExecutions"] == 1  # sweeps never overlap
    stmts = [s for p in props["Policies"] if "Statement" in p for s in p["Statement"]]
    [index] = [s for s in stmts if s["Sid"] == "ActiveRunsIndex"]
    assert index["Action"] == "dynamodb:Query"
    assert index["Resource"] == {"Fn::Sub": "${CheckpointTable.Arn}/index/active"}
    indexes = {i["IndexName"]: i for i in resources["CheckpointTable"]["Properties"]["GlobalSecondaryIndexes"]}
    assert [k["AttributeName"] for k in indexes["active"]["KeySchema"]] == ["active_pk", "active_sk"]


def test_dead_letter_queue_keeps_messages_14_days(resources: dict[str, Any]) -> None:
    assert resources["DeadLetterQueue"]["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600


def test_every_function_has_a_log_group_with_retention(resources: dict[str, Any]) -> None:
    groups = {r["Properties"]["LogGroupName"]["Fn::Sub"]: r["Properties"] for r in resources.values()
              if r["Type"] == "AWS::Logs::LogGroup"}  # fmt: skip
    for fn in ALL_FUNCTIONS:
        assert groups[f"/aws/lambda/${{{fn}}}"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}, fn


def test_state_machine_substitutes_every_function_arn_the_definition_uses(resources: dict[str, Any]) -> None:
    props = resources["ResearchAgentStateMachine"]["Properties"]
    assert props["Name"] == {"Fn::Sub": "${AWS::StackName}-research-agent"} and props["Type"] == "STANDARD"
    subs = props["DefinitionSubstitutions"]
    assert subs == {f"{fn}Arn": {"Fn::GetAtt": [fn, "Arn"]} for fn in (*RESEARCH_FUNCTIONS, "ControlFunction")}
    used = set(re.findall(r"\$\{(\w+)\}", (ROOT / props["DefinitionUri"]).read_text()))
    assert used <= set(subs), f"placeholders without substitution: {used - set(subs)}"
    [invoke] = [s for p in props["Policies"] if "Statement" in p for s in p["Statement"]
                if s["Sid"] == "InvokeStepFunctions"]  # fmt: skip
    assert invoke["Action"] == "lambda:InvokeFunction"
    invokable = {r["Fn::GetAtt"][0] for r in invoke["Resource"] if r["Fn::GetAtt"][1] == "Arn"}
    assert invokable == {*RESEARCH_FUNCTIONS, "ControlFunction"}  # not the tool agent's functions
    assert len(invoke["Resource"]) == len(invokable)  # exact function ARNs, no `<name>*`


def test_layer_architecture_matches_functions_and_layer_makefile(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    arch = template["Globals"]["Function"]["Architectures"]
    layer = resources["StepchainLayer"]
    assert layer["Properties"]["CompatibleArchitectures"] == arch
    assert layer["Properties"]["CompatibleRuntimes"] == ["python3.12"]
    assert layer["Metadata"]["BuildMethod"] == "makefile"
    assert [layer["Metadata"]["BuildArchitecture"]] == arch
    makefile = (ROOT / layer["Properties"]["ContentUri"] / "Makefile").read_text()
    assert re.search(r"^LAMBDA_ARCH \?= (\S+)$", makefile, re.M).group(1) == arch[0]  # type: ignore[union-attr]
    assert (ROOT / layer["Metadata"]["LocalInvokePythonPath"] / "stepchain" / "__init__.py").is_file()


def test_parameters_and_outputs(template: dict[str, Any]) -> None:
    params = template["Parameters"]
    assert params["Transport"]["AllowedValues"] == ["stepfunctions", "sqs"]
    assert params["Transport"]["Default"] == "stepfunctions"
    assert (params["LlmProvider"]["AllowedValues"], params["LlmProvider"]["Default"]) == (
        ["offline", "bedrock"],
        "offline",
    )
    assert (params["ApiAuth"]["AllowedValues"], params["ApiAuth"]["Default"]) == (["iam", "apikey"], "iam")
    assert params["RetentionDays"]["Default"] == 30 and params["LogRetentionDays"]["Default"] == 14
    assert {"BedrockModelId", "LogLevel", "StageName"} <= set(params)
    queues = [f"{q}Url" for q in QUEUE_OF.values()]
    machines = ["ResearchAgentStateMachineArn", "ToolAgentStateMachineArn", "ToolLookupStateMachineArn"]
    expected = {"ApiUrl", "ApiId", "TableName", "BucketName", *machines, "DeadLetterQueueUrl", *queues}
    assert expected <= set(template["Outputs"])
    assert template["Outputs"]["ApiUrl"]["Value"] == {
        "Fn::Sub": "https://${StepchainApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/${StageName}"
    }


@pytest.mark.parametrize(("machine", "worker"), [("ToolAgentStateMachine", "ToolAgentFunction"),
                                                 ("ToolLookupStateMachine", "ToolLookupFunction")])  # fmt: skip
def test_the_tool_agent_machines_substitute_only_their_own_functions(
    resources: dict[str, Any], machine: str, worker: str
) -> None:
    assert worker in TOOL_FUNCTIONS
    props = resources[machine]["Properties"]
    subs = props["DefinitionSubstitutions"]
    assert subs == {f"{fn}Arn": {"Fn::GetAtt": [fn, "Arn"]} for fn in (worker, "ControlFunction")}
    used = set(re.findall(r"\$\{(\w+)\}", (ROOT / props["DefinitionUri"]).read_text()))
    assert used <= set(subs), f"placeholders without substitution: {used - set(subs)}"
