"""Record the AWS operations each Lambda function's code makes, and the IAM actions they need.

The recorder is a botocore handler on ``provide-client-params``, which botocore emits for every API call
(``BaseClient._make_api_call``) AND for every presigned URL (``generate_presigned_url``), before the
parameters are validated. It is put into ``botocore.handlers.BUILTIN_HANDLERS`` (as moto puts its own
stubber there), so every botocore session created while it is installed has it: the framework's lazily
built clients, the SigV4 twin that presigns output URLs, the Secrets Manager client of the cursor key.
moto's ``mock_aws`` resets boto3's default session when it starts, so install the recorder first.

Which function made a call is the ``acting_as`` context (a ContextVar, set per thread: moto's Step
Functions interpreter serves tasks in its own threads). Calls outside any function (a test harness
creating queues, reading records to decide when a run is done, emulating an event source mapping) are
not recorded.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from botocore.handlers import BUILTIN_HANDLERS

_function: contextvars.ContextVar[str | None] = contextvars.ContextVar("iam_function", default=None)


@dataclass(frozen=True)
class Call:
    """One operation as botocore was asked to make it."""

    function: str
    service: str  # the IAM prefix (the service's signing name): dynamodb, s3, sqs, states, ...
    operation: str  # the API operation: GetItem, TransactWriteItems, StartExecution, ...
    resource: str = ""  # what IAM scopes it to, where the test checks that: "index/<name>", an S3 key prefix
    presign: bool = False  # a presigned URL: no call now, the URL's user is authorized as this role later
    parts: tuple[str, ...] = ()  # TransactWriteItems: the kind of each item (Put, Update, Delete, ...)
    keys: tuple[str, ...] = ()  # DynamoDB: the partition keys it reads or writes (IAM's dynamodb:LeadingKeys)

    @property
    def actions(self) -> set[str]:
        """The IAM actions this call needs (the Service Authorization Reference's mapping)."""
        if self.service == "dynamodb" and self.operation == "TransactWriteItems":
            # no IAM action of its own: each item is authorized as its single-item action
            kinds = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem", "ConditionCheck":
                     "ConditionCheckItem"}  # fmt: skip
            return {f"dynamodb:{kinds[p]}" for p in self.parts}
        if self.service == "dynamodb" and self.operation == "TransactGetItems":
            return {"dynamodb:GetItem"}
        if self.service == "sqs" and self.operation.endswith("Batch"):
            return {f"sqs:{self.operation.removesuffix('Batch')}"}  # SendMessageBatch -> sqs:SendMessage
        return {f"{self.service}:{self.operation}"}


def leading_keys(params: dict[str, Any]) -> tuple[str, ...]:
    """The table partition keys (``pk``) a low-level DynamoDB request names: its Key / Item, each item of a
    transaction, or the ``pk = :v`` of a table Query (what ``dynamodb:LeadingKeys`` is evaluated on)."""
    import re

    bodies = [params, *(body for item in params.get("TransactItems", []) for body in item.values())]
    keys = [str(b[f]["pk"]["S"]) for b in bodies for f in ("Key", "Item") if "pk" in b.get(f, {})]
    match = re.search(r"\bpk\s*=\s*(:\w+)", str(params.get("KeyConditionExpression", "")))
    if match and not params.get("IndexName"):
        keys.append(str(params["ExpressionAttributeValues"][match.group(1)]["S"]))
    return tuple(keys)


class CallRecorder:
    def __init__(self) -> None:
        self.calls: list[Call] = []

    def __call__(self, params: dict[str, Any], model: Any, context: dict[str, Any] | None = None, **_: Any) -> None:
        function = _function.get()
        if function is None:
            return
        service = model.service_model.signing_name
        resource, parts = "", ()
        keys: tuple[str, ...] = ()
        if service == "dynamodb":
            resource = f"index/{params['IndexName']}" if params.get("IndexName") else "table"
            parts = tuple(kind for item in params.get("TransactItems", []) for kind in item)
            keys = leading_keys(params)
        elif service == "s3" and "Key" in params:
            resource = str(params["Key"]).split("/", 1)[0] + "/*"
        presign = bool((context or {}).get("is_presign_request"))
        self.calls.append(Call(function, service, model.name, resource, presign, parts, keys))

    def by_function(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for call in self.calls:
            out.setdefault(call.function, set()).update(call.actions)
        return out


@contextmanager
def recording() -> Iterator[CallRecorder]:
    """Record calls made in ``acting_as`` blocks of every botocore session created meanwhile."""
    recorder = CallRecorder()
    entry = ("provide-client-params", recorder)
    BUILTIN_HANDLERS.append(entry)
    try:
        yield recorder
    finally:
        BUILTIN_HANDLERS.remove(entry)


@contextmanager
def acting_as(function: str) -> Iterator[None]:
    """Calls made inside (in this thread) are ``function``'s."""
    token = _function.set(function)
    try:
        yield
    finally:
        _function.reset(token)


def transform(template: dict[str, Any]) -> dict[str, Any]:
    """The CloudFormation the SAM transform makes of ``template`` (local code/definition paths -> S3)."""
    import copy
    import os
    from unittest import mock

    from samtranslator.translator.transform import transform as sam_transform  # type: ignore[import-untyped]

    class NoManagedPolicyNames:  # the template names managed policies by ARN only
        def load(self) -> dict[str, str]:
            return {}

    tpl = copy.deepcopy(template)
    tpl["Globals"]["Function"]["CodeUri"] = "s3://artifacts/code.zip"
    for res in tpl["Resources"].values():
        props = res.get("Properties", {})
        for key in ("CodeUri", "ContentUri", "DefinitionUri"):
            if isinstance(props.get(key), str):
                props[key] = f"s3://artifacts/{key}.zip"
    with mock.patch.dict(os.environ, {"AWS_DEFAULT_REGION": "us-east-1"}):
        return dict(sam_transform(tpl, {}, NoManagedPolicyNames()))


def granted_by_function(transformed: dict[str, Any]) -> dict[str, set[str]]:
    """Function logical id -> every action its role allows (inline policies, both sides of a Fn::If, and
    this template's managed policies; AWS managed policies apart)."""
    from tests.template.test_sam_policies import as_list, role_statements

    out = {}
    for lid, res in transformed["Resources"].items():
        role = res["Properties"].get("Role") if res["Type"] == "AWS::Lambda::Function" else None
        if isinstance(role, dict):
            out[lid] = {a for s in role_statements(transformed, role["Fn::GetAtt"][0]) for a in as_list(s["Action"])}
    return out
