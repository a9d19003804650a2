"""The CloudFormation half of ``stepchain deploy-local``: create or update a stack so that iterating works on
LocalStack, and delete everything a stack made.

Why updates need care on LocalStack (measured with 2026.3.0): SAM names the API's ``AWS::ApiGateway::Deployment``
``<Api>Deployment<hash of the API definition>``, so an update that changes the API (a route, an auth mode, a
parameter that reaches the definition) replaces the deployment and changes the stage's ``DeploymentId``.
LocalStack cannot update an ``AWS::ApiGateway::Stage`` (its provider raises NotImplementedError and the engine
falls back to CreateStage: "Stage already exists"); the rollback that follows deletes the stage and the old
deployment, and the stack still ends UPDATE_COMPLETE, without outputs and without an API stage. So:

- :func:`stable_api_deployments` gives each API deployment a fixed logical id and no hash-bearing description:
  the stage is never updated; after an update, :func:`redeploy_apis` points each stage at a fresh deployment of
  the current API (``CreateDeployment``), which is what the hash rename does on AWS;
- :func:`check_update` reads the update's own stack events and fails on any FAILED/ROLLBACK one, whatever the
  final stack status says (never "deployed" with a half-rolled-back stack);
- :func:`delete_stack` empties the stack's buckets first (a non-empty bucket fails the delete) and removes the
  log groups its functions, API and state machines wrote (Lambda re-creates ``/aws/lambda/<fn>`` after the
  stack's own LogGroup is gone); :func:`clear_orphan_log_groups` removes fixed-name log groups a deleted stack
  of the same name left behind before a create (else "LogGroup already exists").
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any

from stepchain.exceptions import DeployError

CAPABILITIES = ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"]
DONE_OK = {"CREATE_COMPLETE", "UPDATE_COMPLETE"}
RECREATE = {"ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "CREATE_FAILED"}
DEPLOYMENT = "AWS::ApiGateway::Deployment"


def client(service: str, endpoint: str, region: str) -> Any:
    """A boto3 client for ``endpoint``: the environment's credentials, else LocalStack's dummy ``test`` pair."""
    import boto3
    from botocore.config import Config

    key = os.environ.get("AWS_ACCESS_KEY_ID") or "test"
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY") or "test"
    config = Config(retries={"max_attempts": 3}, read_timeout=120, inject_host_prefix=False)
    make: Any = boto3.client  # the service name is a runtime value: no per-service overload applies
    return make(
        service,
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=config,
    )


def find_stack(cfn: Any, name: str) -> dict[str, Any] | None:
    try:
        stacks = cfn.describe_stacks(StackName=name)["Stacks"]
    except Exception as exc:
        if "does not exist" in str(exc) or "ValidationError" in str(exc):
            return None
        raise
    live = [s for s in stacks if s.get("StackStatus") != "DELETE_COMPLETE"]
    return dict(live[0]) if live else None


def _events(cfn: Any, name: str) -> list[dict[str, Any]]:
    try:
        return list(cfn.describe_stack_events(StackName=name)["StackEvents"])  # newest first
    except Exception:
        return []


def _describe(events: Iterable[Mapping[str, Any]]) -> str:
    bad = [e for e in events if "FAILED" in str(e.get("ResourceStatus"))]
    return "\n".join(f"  {e.get('LogicalResourceId')}: {e.get('ResourceStatusReason')}" for e in bad[:15])


def wait_stack(cfn: Any, name: str, timeout_s: float, *, deleted: bool = False) -> dict[str, Any] | None:
    """Poll (bounded) until the stack is COMPLETE (or gone, with ``deleted``); DeployError otherwise."""
    deadline = time.monotonic() + timeout_s
    status = "?"
    while time.monotonic() < deadline:
        stack = find_stack(cfn, name)
        status = stack["StackStatus"] if stack else "DELETE_COMPLETE"
        if deleted and stack is None:
            return None
        if not deleted and status in DONE_OK:
            return stack
        if not status.endswith("_IN_PROGRESS") and not (deleted and status in RECREATE):
            raise DeployError(f"stack {name} is {status}\n{_describe(_events(cfn, name))}")
        time.sleep(1.0)
    raise DeployError(f"stack {name} still {status} after {timeout_s:.0f}s\n{_describe(_events(cfn, name))}")


def _rename_refs(node: Any, old: str, new: str) -> Any:
    if isinstance(node, dict):
        out = {k: _rename_refs(v, old, new) for k, v in node.items()}
        if out.get("Ref") == old:
            out["Ref"] = new
        att = out.get("Fn::GetAtt")
        if isinstance(att, list) and att and att[0] == old:
            out["Fn::GetAtt"] = [new, *att[1:]]
        return out
    if isinstance(node, list):
        return [_rename_refs(v, old, new) for v in node]
    if node == old:  # a DependsOn entry
        return new
    if isinstance(node, str) and "${" + old in node:
        return node.replace("${" + old + "}", "${" + new + "}").replace("${" + old + ".", "${" + new + ".")
    return node


def stable_api_deployments(template: dict[str, Any]) -> dict[str, str]:
    """Rename each API deployment ``<Api>Deployment<hash>`` to ``<Api>Deployment`` in the transformed template
    (references follow) and drop its hash-bearing description; returns {new logical id: old logical id}."""
    resources: dict[str, Any] = template.get("Resources", {})
    renames: dict[str, str] = {}
    for logical, res in list(resources.items()):
        ref = res.get("Properties", {}).get("RestApiId", {})
        api = ref.get("Ref") if isinstance(ref, dict) else None
        if res.get("Type") != DEPLOYMENT or not isinstance(api, str) or logical == f"{api}Deployment":
            continue
        new = f"{api}Deployment"
        if new in resources:
            raise DeployError(f"cannot give {logical} a stable name: {new} exists in the template")
        res.get("Properties", {}).pop("Description", None)
        resources[new] = resources.pop(logical)
        renames[new] = logical
    for new, old in renames.items():
        template.update({k: _rename_refs(v, old, new) for k, v in template.items() if k != "Resources"})
        for key in list(resources):
            resources[key] = _rename_refs(resources[key], old, new)
    return renames


def redeploy_apis(cfn: Any, apigw: Any, stack: str, template: Mapping[str, Any]) -> list[str]:
    """Point every API stage of the stack at a new deployment of its API as it is now (after an update)."""
    physical = {
        r["LogicalResourceId"]: r["PhysicalResourceId"]
        for r in cfn.describe_stack_resources(StackName=stack)["StackResources"]
    }
    done = []
    for logical, res in template.get("Resources", {}).items():
        ref = res.get("Properties", {}).get("RestApiId", {})
        api = physical.get(ref.get("Ref", "")) if isinstance(ref, dict) else None
        stage = physical.get(logical)
        if res.get("Type") == "AWS::ApiGateway::Stage" and api and stage:
            apigw.create_deployment(restApiId=api, stageName=stage, description=f"stepchain deploy-local {stack}")
            done.append(f"{api}/{stage}")
    return done


def last_event_id(cfn: Any, name: str) -> str | None:
    events = _events(cfn, name)
    return str(events[0]["EventId"]) if events else None


def check_update(cfn: Any, name: str, since_event_id: str | None) -> None:
    """DeployError if the update (the events after ``since_event_id``) failed or rolled back anything."""
    update: list[dict[str, Any]] = []
    for event in _events(cfn, name):
        if since_event_id is not None and event.get("EventId") == since_event_id:
            break
        update.append(event)
    bad = [e for e in update if "FAILED" in str(e.get("ResourceStatus")) or "ROLLBACK" in str(e.get("ResourceStatus"))]
    if bad:
        raise DeployError(
            f"the update of stack {name} failed and was rolled back (the stack may have lost resources):\n"
            f"{_describe(bad) or '  (no reason given)'}\n"
            f"start again with `make destroy-local STACK={name}` and `make deploy-local STACK={name}`"
        )


def _fixed_log_group_names(template: Mapping[str, Any], stack: str) -> list[str]:
    names = []
    for res in template.get("Resources", {}).values():
        name = res.get("Properties", {}).get("LogGroupName") if res.get("Type") == "AWS::Logs::LogGroup" else None
        if isinstance(name, dict) and isinstance(name.get("Fn::Sub"), str):
            name = name["Fn::Sub"].replace("${AWS::StackName}", stack)
        if isinstance(name, str) and "${" not in name:
            names.append(name)
    return names


def _delete_log_groups(logs: Any, names: Iterable[str]) -> list[str]:
    gone = []
    for name in sorted(set(names)):
        try:
            logs.delete_log_group(logGroupName=name)
            gone.append(name)
        except Exception as exc:
            if "ResourceNotFound" not in str(exc):
                raise
    return gone


def clear_orphan_log_groups(logs: Any, template: Mapping[str, Any], stack: str) -> list[str]:
    """Before creating ``stack``: delete the fixed-name log groups a deleted stack of that name left behind."""
    return _delete_log_groups(logs, _fixed_log_group_names(template, stack))


def _empty_bucket(s3: Any, bucket: str) -> None:
    try:
        pages = s3.get_paginator("list_object_versions").paginate(Bucket=bucket)
        for page in pages:
            items = [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
            if items:
                objects = [{"Key": o["Key"], "VersionId": o["VersionId"]} for o in items]
                s3.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": True})
    except Exception as exc:
        if "NoSuchBucket" not in str(exc):
            raise


def delete_stack(endpoint: str, region: str, name: str, timeout_s: float) -> list[str]:
    """Delete ``name`` and what it made outside CloudFormation's reach; returns the log groups removed."""
    cfn, logs = client("cloudformation", endpoint, region), client("logs", endpoint, region)
    if find_stack(cfn, name) is None:
        print(f"deploy-local: no stack {name} at {endpoint}", file=sys.stderr)
        return []
    resources = cfn.describe_stack_resources(StackName=name)["StackResources"]
    by_type: dict[str, list[str]] = {}
    for r in resources:
        by_type.setdefault(r["ResourceType"], []).append(str(r.get("PhysicalResourceId") or ""))
    s3 = client("s3", endpoint, region)
    for bucket in by_type.get("AWS::S3::Bucket", []):
        _empty_bucket(s3, bucket)
    groups = by_type.get("AWS::Logs::LogGroup", []) + [
        f"/aws/lambda/{f}" for f in by_type.get("AWS::Lambda::Function", [])
    ]
    try:
        for attempt in (1, 2):  # a DELETE_FAILED stack can be deleted again (LocalStack: often then it goes)
            cfn.delete_stack(StackName=name)
            try:
                wait_stack(cfn, name, timeout_s, deleted=True)
                break
            except DeployError:
                if attempt == 2 or find_stack(cfn, name) is None:
                    raise
    finally:  # also after a failed delete: these names would block the next create
        removed = _delete_log_groups(logs, [g for g in groups if g])
    return removed
