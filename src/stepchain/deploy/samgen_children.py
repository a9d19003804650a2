"""``stepchain template`` and ``stepchain asl`` for apps with child workflows (``wf.call``,
``wf.parallel``): the child workflows are part of the app (their own state machines, their steps'
functions), and the functions whose code starts, joins or cancels child runs get those permissions."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from stepchain.define.workflow import Workflow
from stepchain.deploy.asl import CONTROL_FUNCTION
from stepchain.engine.nodes import handler_for
from stepchain.exceptions import ValidationError


def with_children(workflows: Sequence[Workflow]) -> list[Workflow]:
    """``workflows`` and, after them, the child workflows their call/parallel nodes were given as
    objects (recursively): a child runs as its own state machine in the same app. A child named by
    a string must be one of the listed workflows (or a child of one)."""
    out: dict[str, Workflow] = {}
    todo = list(workflows)
    while todo:
        wf = todo.pop(0)
        if wf.name not in out:
            out[wf.name] = wf
            todo.extend(wf.children.values())
    for wf in list(out.values()):
        for node in wf.nodes:
            missing = [name for _, name in node.branches if name not in out]
            if missing:
                raise ValidationError(
                    f"{wf.name}.{node.id} runs workflow {missing[0]!r} as a child: list it too (or pass the Workflow)"
                )
    return list(out.values())


def add_child_runs_policy(
    tpl: dict[str, Any],
    workflows: Sequence[Workflow],
    served_by: Mapping[tuple[str, str], str],
    states_arn: Callable[[str, Workflow], Any],
) -> None:
    """The permissions of call/parallel nodes, for the functions whose code makes the calls (measured
    by tests/template/test_iam_measured.py):

    * the control function serves call/parallel nodes: it starts the child runs (StartExecution on the
      child workflows' state machines only) and, when the parent run was cancelled while it started
      them, cancels them (StopExecution on their executions; a Query on the table lists the child's
      nodes to tombstone them) (``ChildRunsPolicy``);
    * a function that ends a child run (the worker of its last step or of a step that fails it; the
      control function for a child's waits, sleeps and failures) joins the parent node there on Step
      Functions and completes the parent task's token (SendTaskSuccess: the control function has it
      already) (``EndChildRunsPolicy``, on the workers that serve a child workflow's steps only);
    * only a parallel node's join reads the children's outputs and writes the combined one
      (payloads, which the workers have already: the control function gets them) and, when a branch
      failed, stops the other branches (StopExecution: the workers ending a child get it); the sweeper,
      which re-joins a parent node whose notification was lost, gets the payloads too.

    ``served_by``: (workflow, node function name) -> the function that serves it (the app's plan).
    """
    children = {name for wf in workflows for node in wf.nodes for _, name in node.branches}
    parallel = any(handler_for(node).reads_child_outputs for wf in workflows for node in wf.nodes)
    kids = [wf for wf in workflows if wf.name in children]
    machines, executions = [states_arn("stateMachine", wf) for wf in kids], [states_arn("execution", wf) for wf in kids]
    stop = {"Sid": "StopChildRuns", "Effect": "Allow", "Action": "states:StopExecution", "Resource": _one(executions)}
    control = [
        {"Sid": "StartChildRuns", "Effect": "Allow", "Action": "states:StartExecution", "Resource": _one(machines)},
        stop,
        # cancelling a child lists its nodes (a Query on the table) to tombstone them
        {"Sid": "CancelChildNodes", "Effect": "Allow", "Action": "dynamodb:Query",
         "Resource": {"Fn::GetAtt": ["CheckpointTable", "Arn"]}},
    ]  # fmt: skip
    payloads = {"Sid": "ChildPayloads", "Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"],
                "Resource": {"Fn::Sub": "${PayloadBucket.Arn}/payloads/*"}}  # fmt: skip
    if parallel:
        control.append(payloads)
    # Step Functions task-token callbacks have no resource-level permissions: '*' is the only form.
    ending = [{"Sid": "CompleteParentTokens", "Effect": "Allow", "Action": "states:SendTaskSuccess", "Resource": "*"}]
    if parallel:
        ending.append(copy.deepcopy(stop))
    res = tpl["Resources"]
    res["ChildRunsPolicy"] = _policy("stepchain - start and cancel child runs (call / parallel nodes)", control)
    res[CONTROL_FUNCTION]["Properties"]["Policies"].append({"Ref": "ChildRunsPolicy"})
    if parallel:
        res["SweeperFunction"]["Properties"]["Policies"].append({"Statement": [copy.deepcopy(payloads)]})
    enders = sorted({served_by[(wf.name, node.function_name)] for wf in kids for node in wf.nodes} - {CONTROL_FUNCTION})
    if enders:
        res["EndChildRunsPolicy"] = _policy("stepchain - a child run that ends joins its parent node", ending)
        for fn in enders:
            res[fn]["Properties"]["Policies"].append({"Ref": "EndChildRunsPolicy"})


def _one(resources: list[Any]) -> Any:
    return copy.deepcopy(resources[0] if len(resources) == 1 else resources)


def _policy(description: str, statements: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "Type": "AWS::IAM::ManagedPolicy",
        "Properties": {
            "Description": description,
            "PolicyDocument": {"Version": "2012-10-17", "Statement": statements},
        },
    }
