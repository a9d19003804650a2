"""``stepchain template`` and ``stepchain asl`` for apps with child workflows (``wf.call``,
``wf.parallel``): the child workflows are part of the app (their own state machines, their steps'
functions), and the functions get the permissions child runs need."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from stepchain.exceptions import ValidationError
from stepchain.workflow import Workflow


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
    tpl: dict[str, Any], functions: list[str], machines: list[Any], executions: list[Any]
) -> None:
    """Call/parallel nodes: the control function starts child runs (their executions) and joins
    them (child outputs: payloads); the function ending a child run joins its parent node (task
    token, cancels the other branches). Every worker function gets this policy."""
    statements = [
        {"Sid": "StartChildRuns", "Effect": "Allow", "Action": "states:StartExecution",
         "Resource": copy.deepcopy(machines[0] if len(machines) == 1 else machines)},
        {"Sid": "StopChildRuns", "Effect": "Allow", "Action": "states:StopExecution",
         "Resource": copy.deepcopy(executions[0] if len(executions) == 1 else executions)},
        # Step Functions task-token callbacks have no resource-level permissions: '*' is the only form.
        {"Sid": "CompleteParentTokens", "Effect": "Allow", "Action": "states:SendTaskSuccess", "Resource": "*"},
        {"Sid": "ChildPayloads", "Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"],
         "Resource": {"Fn::Sub": "${PayloadBucket.Arn}/payloads/*"}},
    ]  # fmt: skip
    tpl["Resources"]["ChildRunsPolicy"] = {
        "Type": "AWS::IAM::ManagedPolicy",
        "Properties": {
            "Description": "stepchain - start, join and cancel child runs (call / parallel nodes)",
            "PolicyDocument": {"Version": "2012-10-17", "Statement": statements},
        },
    }
    for fn in functions:
        tpl["Resources"][fn]["Properties"]["Policies"].append({"Ref": "ChildRunsPolicy"})
