"""The fixed part of the SAM template ``stepchain template`` writes (stepchain.deploy.samgen adds the rest).

What every stepchain application deploys whatever its workflows: the stack parameters, the framework layer,
the checkpoint table, the payload bucket, the dead-letter queue, the step workers' managed policy, the runs
API (function, REST API, access logs, usage plan, cursor secret) and the recovery sweeper. The comments
in ``sam_base.yaml`` explain the choices; the generated template carries the values only. ``STATE_MACHINES`` and
``EXECUTIONS`` are placeholders the generator replaces with the ARNs of every workflow's state machine.
"""

from __future__ import annotations

import copy
from importlib import resources
from typing import Any

import yaml


def ref(name: str) -> dict[str, str]:
    return {"Ref": name}


def arn(name: str) -> dict[str, list[str]]:
    return {"Fn::GetAtt": [name, "Arn"]}


class CfnLoader(yaml.SafeLoader):
    """YAML loader that reads CloudFormation's short-form intrinsic tags as their long form
    (``!GetAtt A.B`` -> ``{"Fn::GetAtt": ["A", "B"]}``, ``!Ref X`` -> ``{"Ref": "X"}``)."""


def _intrinsic(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = tag_suffix
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    else:  # pragma: no cover - the three node kinds are all YAML has
        raise TypeError(f"unexpected YAML node {node!r}")
    if name == "Ref" or name == "Condition":
        return {name: value}
    if name == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{name}": value}


CfnLoader.add_multi_constructor("!", _intrinsic)


def load_cfn(text: str) -> Any:
    """A CloudFormation YAML document (short-form tags allowed) as plain data in long form."""
    return yaml.load(text, Loader=CfnLoader)  # CfnLoader is a SafeLoader


def base_template() -> dict[str, Any]:
    """A fresh copy of the fixed part, ``sam_base.yaml`` next to this module (callers mutate it)."""
    doc = load_cfn(resources.files("stepchain.deploy").joinpath("sam_base.yaml").read_text())
    if not isinstance(doc, dict):
        raise TypeError("sam_base.yaml must hold a mapping")
    return doc


def merge(base: Any, override: Any) -> Any:
    """``override`` merged into ``base``: mappings key by key (recursively), anything else replaced; a key
    whose override value is null (``~``) is removed. Neither argument is changed."""
    if not isinstance(base, dict) or not isinstance(override, dict):
        return copy.deepcopy(override)
    out = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif key in out:
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class _Dumper(yaml.SafeDumper):
    """Block style, keys in insertion order, long strings unwrapped, lists indented under their key."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    """Short lists of scalars in flow style (``[a, b]``), anything else in block style."""
    flow = all(isinstance(v, str | int | float | bool) for v in data) and len(repr(data)) <= 100
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _list)


def dump_template(tpl: dict[str, Any]) -> str:
    """The template as YAML (intrinsics in long form: ``Fn::GetAtt: [A, Arn]``), deterministic; a blank line
    between sections and between resources."""
    text: str = yaml.dump(tpl, Dumper=_Dumper, sort_keys=False, width=10_000, default_flow_style=False)
    lines: list[str] = []
    section = ""
    for line in text.splitlines():
        if line[:1].isalpha():
            section = line
            if lines:
                lines.append("")
        elif section == "Resources:" and line[:2] == "  " and line[2:3].isalpha() and lines[-1] != section:
            lines.append("")
        lines.append(line)
    return "\n".join(lines) + "\n"


def handoff_policy(queues: list[str]) -> dict[str, Any]:
    """Handing work to the next step (SQS transport) or starting a run: send to the step queues only."""
    return {
        "Type": "AWS::IAM::ManagedPolicy",
        "Properties": {
            "Description": "stepchain - send handoff messages to the step queues",
            "PolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "SendToStepQueues",
                        "Effect": "Allow",
                        "Action": "sqs:SendMessage",
                        "Resource": [arn(q) for q in queues],
                    }
                ],
            },
        },
    }


def tls_policy(queues: list[str]) -> dict[str, Any]:
    """Every queue refuses requests that are not over TLS."""
    return {
        "Type": "AWS::SQS::QueuePolicy",
        "Properties": {
            "Queues": [ref(q) for q in queues] + [ref("DeadLetterQueue")],
            "PolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "DenyInsecureTransport",
                        "Effect": "Deny",
                        "Principal": "*",
                        "Action": "sqs:*",
                        "Resource": "*",
                        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                    }
                ],
            },
        },
    }
