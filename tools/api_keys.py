"""Give a team or caller its own API key on a stack deployed with ``ApiAuth=apikey``.

    python -m tools.api_keys --stack stepchain --name team-a [--endpoint URL]     (make api-key NAME=team-a)

Creates an enabled API key named ``<stack>-<name>``, adds it to the stack's usage plan (output
``ApiUsagePlanId``: the plan's throttle and quota apply to each key), and prints ``{"name", "id", "value"}``.
Hand the value to the team as a secret. The template creates no key (a key shared by every consumer would
make them one caller): each consumer gets its own here. ``apikey:<the key's id>`` is the owner of every run
that key starts (README "Security model"); to make a key an operator, add ``apikey:<id>`` to the stack's
``OperatorPrincipals``.
Without ``--endpoint`` the client talks to AWS (the default credential chain); with one, to that endpoint
(LocalStack). Revoke a key with ``aws apigateway update-api-key --api-key <id> --patch-operations
op=replace,path=/enabled,value=false`` (its runs stay its own).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def usage_plan_id(cloudformation: Any, stack: str) -> str:
    [desc] = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in desc.get("Outputs", [])}
    if "ApiUsagePlanId" not in outputs:
        raise SystemExit(f"stack {stack!r} has no ApiUsagePlanId output: is it deployed with ApiAuth=apikey?")
    return str(outputs["ApiUsagePlanId"])


def add_api_key(apigateway: Any, plan_id: str, name: str) -> dict[str, str]:
    """Create the key ``name`` and put it in usage plan ``plan_id``; its name, id and value."""
    key = apigateway.create_api_key(name=name, enabled=True)
    apigateway.create_usage_plan_key(usagePlanId=plan_id, keyId=key["id"], keyType="API_KEY")
    return {"name": name, "id": key["id"], "value": key["value"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", required=True)
    parser.add_argument("--name", required=True, help="the team or caller (the key is named <stack>-<name>)")
    parser.add_argument("--endpoint", default=None)
    args = parser.parse_args(argv)
    import boto3

    def client(service: str) -> Any:
        return boto3.client(service, endpoint_url=args.endpoint) if args.endpoint else boto3.client(service)

    plan = usage_plan_id(client("cloudformation"), args.stack)
    sys.stdout.write(json.dumps(add_api_key(client("apigateway"), plan, f"{args.stack}-{args.name}")) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
