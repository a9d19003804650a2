"""``stepchain deploy-local``: deploy ``sam build``'s output to LocalStack (or any CloudFormation endpoint).

What a project made by ``stepchain new`` runs for ``make deploy-local`` (this repository's own
``tools/deploy_local.py`` does the same for the research agent, with test-only extras). Offline, no
``samlocal``, no ``sam deploy``:

1. read ``<build dir>/template.yaml`` (local ``CodeUri``/``ContentUri``/``DefinitionUri`` paths);
2. zip every function and layer directory and upload the zips and the state machine definitions to an
   artifacts bucket (``stepchain-artifacts-<account>-<region>``, created if missing) under content-hashed
   keys: an unchanged artifact is not uploaded again, a changed one changes the key (so the function updates);
3. run the SAM transform here (``samtranslator``; LocalStack's CloudFormation rejects SAM's generated
   references such as ``StepchainApi.Stage`` before it transforms);
4. create the stack, or update it ("No updates are to be performed" is success; a stack left in
   ROLLBACK_COMPLETE by a failed create is deleted and created again); wait, bounded by ``--timeout``;
5. print the outputs as JSON (``--outputs FILE`` also writes them), ``ApiUrl`` in the form LocalStack serves
   (``{endpoint}/_aws/execute-api/{api_id}/{stage}``; the AWS form stays in ``ApiUrlAws``).

Credentials: the environment's, else the dummy ``test``/``test`` pair LocalStack accepts. Needs the ``deploy``
extra (``pip install 'stepchain[deploy]'``: aws-sam-translator, PyYAML).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shlex
import sys
import time
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stepchain.exceptions import DeployError

CAPABILITIES = ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"]
MAX_TEMPLATE_BODY = 51_200  # larger templates go through S3 (TemplateURL)
DONE_OK = {"CREATE_COMPLETE", "UPDATE_COMPLETE"}
RECREATE = {"ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "CREATE_FAILED"}


def _client(service: str, endpoint: str, region: str) -> Any:
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


def parse_params(spec: str) -> dict[str, str]:
    """``'Transport=sqs ApiAuth=apikey'`` -> ``{"Transport": "sqs", "ApiAuth": "apikey"}``."""
    out: dict[str, str] = {}
    for word in shlex.split(spec):
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise DeployError(f"parameter {word!r} is not KEY=VALUE")
        out[key] = value
    return out


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def zip_tree(directory: Path) -> tuple[str, bytes]:
    """(content digest, deterministic zip) of ``directory`` (fixed timestamps, sorted, modes kept)."""
    digest = hashlib.sha256()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for path in _files(directory):
            name, data = path.relative_to(directory).as_posix(), path.read_bytes()
            digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = (path.stat().st_mode & 0o777 | 0o100000) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return digest.hexdigest()[:20], buf.getvalue()


class Artifacts:
    """Uploads build artifacts under content-hashed keys (skipped when the key is already there)."""

    def __init__(self, s3: Any, bucket: str) -> None:
        self.s3, self.bucket = s3, bucket

    def ensure_bucket(self, region: str) -> None:
        try:
            self.s3.head_bucket(Bucket=self.bucket)
            return
        except Exception:  # botocore ClientError 404: create it
            pass
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        self.s3.create_bucket(**kwargs)

    def put(self, key: str, body: bytes) -> dict[str, str]:
        try:
            self.s3.head_object(Bucket=self.bucket, Key=key)
        except Exception:
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)
        return {"Bucket": self.bucket, "Key": key}

    def directory(self, directory: Path) -> dict[str, str]:
        if not directory.is_dir():
            raise DeployError(f"{directory} is not a directory: run `make build` first")
        digest, body = zip_tree(directory)
        return self.put(f"stepchain/{directory.name}-{digest}.zip", body)

    def file(self, path: Path) -> dict[str, str]:
        body = path.read_bytes()
        return self.put(f"stepchain/{path.stem}-{hashlib.sha256(body).hexdigest()[:20]}{path.suffix}", body)


def package(template: dict[str, Any], build_dir: Path, artifacts: Artifacts) -> None:
    """Replace the built template's local artifact paths with their S3 locations (in place)."""
    kinds = {
        "AWS::Serverless::Function": ("CodeUri", artifacts.directory),
        "AWS::Serverless::LayerVersion": ("ContentUri", artifacts.directory),
        "AWS::Serverless::StateMachine": ("DefinitionUri", artifacts.file),
    }
    for res in template.get("Resources", {}).values():
        prop, upload = kinds.get(res.get("Type"), ("", None))
        props = res.get("Properties", {})
        if upload is not None and isinstance(props.get(prop), str):
            props[prop] = upload((build_dir / props[prop]).resolve())
    glob = template.get("Globals", {}).get("Function", {})
    if isinstance(glob.get("CodeUri"), str):
        del glob["CodeUri"]  # sam build gives every function its own CodeUri


def sam_transform(template: dict[str, Any], params: Mapping[str, str], region: str) -> dict[str, Any]:
    from samtranslator.translator.transform import transform  # type: ignore[import-untyped]

    class NoManagedPolicies:  # the generated template names managed policies by ARN only
        def load(self) -> dict[str, str]:
            return {}

    previous = os.environ.get("AWS_DEFAULT_REGION")
    os.environ["AWS_DEFAULT_REGION"] = region  # samtranslator reads the region from the environment
    try:
        return dict(transform(template, dict(params), NoManagedPolicies()))
    finally:
        if previous is None:
            os.environ.pop("AWS_DEFAULT_REGION", None)
        else:
            os.environ["AWS_DEFAULT_REGION"] = previous


def _stack(cfn: Any, name: str) -> dict[str, Any] | None:
    try:
        stacks = cfn.describe_stacks(StackName=name)["Stacks"]
    except Exception as exc:
        if "does not exist" in str(exc) or "ValidationError" in str(exc):
            return None
        raise
    live = [s for s in stacks if s.get("StackStatus") != "DELETE_COMPLETE"]
    return dict(live[0]) if live else None


def _failures(cfn: Any, name: str) -> str:
    try:
        events = cfn.describe_stack_events(StackName=name)["StackEvents"]
    except Exception as exc:
        return f"(no events: {exc})"
    bad = [e for e in events if "FAILED" in str(e.get("ResourceStatus"))]
    return "\n".join(f"  {e.get('LogicalResourceId')}: {e.get('ResourceStatusReason')}" for e in bad[:15])


def wait_stack(cfn: Any, name: str, timeout_s: float, *, deleted: bool = False) -> dict[str, Any] | None:
    """Poll (bounded) until the stack is COMPLETE (or gone, with ``deleted``); DeployError otherwise."""
    deadline = time.monotonic() + timeout_s
    status = "?"
    while time.monotonic() < deadline:
        stack = _stack(cfn, name)
        status = stack["StackStatus"] if stack else "DELETE_COMPLETE"
        if deleted and stack is None:
            return None
        if not deleted and status in DONE_OK:
            return stack
        if not status.endswith("_IN_PROGRESS") and not (deleted and status in RECREATE):
            raise DeployError(f"stack {name} is {status}\n{_failures(cfn, name)}")
        time.sleep(1.0)
    raise DeployError(f"stack {name} still {status} after {timeout_s:.0f}s\n{_failures(cfn, name)}")


def deploy(
    stack: str, params: Mapping[str, str], *, endpoint: str, build_dir: Path, region: str, timeout_s: float = 600.0
) -> dict[str, str]:
    """Deploy ``build_dir/template.yaml`` as ``stack``; returns its outputs (see the module docstring)."""
    from stepchain.deploy.samgen_base import load_cfn

    built = build_dir / "template.yaml"
    if not built.is_file():
        raise DeployError(f"{built} not found: run `make build` first")
    template = load_cfn(built.read_text())
    unknown = sorted(set(params) - set(template.get("Parameters", {})))
    if unknown:
        raise DeployError(f"unknown template parameters: {', '.join(unknown)}")
    cfn = _client("cloudformation", endpoint, region)
    account = _client("sts", endpoint, region).get_caller_identity()["Account"]
    artifacts = Artifacts(_client("s3", endpoint, region), f"stepchain-artifacts-{account}-{region}")
    artifacts.ensure_bucket(region)
    package(template, build_dir, artifacts)
    body = json.dumps(sam_transform(template, params, region), separators=(",", ":"))
    args: dict[str, Any] = {"TemplateBody": body}
    if len(body) > MAX_TEMPLATE_BODY:
        loc = artifacts.put(f"stepchain/template-{hashlib.sha256(body.encode()).hexdigest()[:20]}.json", body.encode())
        args = {"TemplateURL": f"{endpoint}/{loc['Bucket']}/{loc['Key']}"}
    args.update(
        StackName=stack,
        Capabilities=CAPABILITIES,
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()],
    )
    existing = _stack(cfn, stack)
    if existing is not None and existing["StackStatus"] in RECREATE:
        cfn.delete_stack(StackName=stack)
        wait_stack(cfn, stack, timeout_s, deleted=True)
        existing = None
    if existing is None:
        cfn.create_stack(**args)
        final = wait_stack(cfn, stack, timeout_s)
    else:
        try:
            cfn.update_stack(**args)
            final = wait_stack(cfn, stack, timeout_s)
        except DeployError:
            raise
        except Exception as exc:
            if "No updates are to be performed" not in str(exc):
                raise
            final = existing
    assert final is not None
    outputs = {o["OutputKey"]: o["OutputValue"] for o in final.get("Outputs", [])}
    if "ApiId" in outputs:
        stage = params.get("StageName") or "v1"
        if "ApiUrl" in outputs:
            outputs["ApiUrlAws"] = outputs["ApiUrl"]
        outputs["ApiUrl"] = f"{endpoint.rstrip('/')}/_aws/execute-api/{outputs['ApiId']}/{stage}"
    if "ApiKeyId" in outputs:
        key = _client("apigateway", endpoint, region).get_api_key(apiKey=outputs["ApiKeyId"], includeValue=True)
        outputs["ApiKeyValue"] = key["value"]
    return outputs


def _run(args: argparse.Namespace) -> int:
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    endpoint = args.endpoint.rstrip("/")
    started = time.monotonic()
    try:
        if args.delete:
            cfn = _client("cloudformation", endpoint, region)
            cfn.delete_stack(StackName=args.stack)
            wait_stack(cfn, args.stack, args.timeout, deleted=True)
            print(f"deploy-local: deleted {args.stack}", file=sys.stderr)
            return 0
        outputs = deploy(
            args.stack,
            parse_params(args.params),
            endpoint=endpoint,
            build_dir=args.build_dir,
            region=region,
            timeout_s=args.timeout,
        )
    except (DeployError, ImportError) as exc:
        print(f"deploy-local: {exc}", file=sys.stderr)
        return 1
    if args.outputs:
        args.outputs.parent.mkdir(parents=True, exist_ok=True)
        args.outputs.write_text(json.dumps(outputs, indent=2, sort_keys=True) + "\n")
    print(f"deploy-local: {args.stack} deployed in {time.monotonic() - started:.1f}s", file=sys.stderr)
    print(f"deploy-local: API {outputs.get('ApiUrl', '-')}", file=sys.stderr)
    print(json.dumps(outputs, indent=2, sort_keys=True))
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "deploy-local",
        help="deploy `sam build`'s output to LocalStack through CloudFormation",
        description=(__doc__ or "").split("\n\n")[0],
    )
    p.add_argument("--stack", required=True)
    p.add_argument("--endpoint", default=os.environ.get("AWS_ENDPOINT_URL") or "http://127.0.0.1:4566")
    p.add_argument("--params", default="", help="template parameters: 'Key=Value Key2=Value2'")
    p.add_argument("--build-dir", type=Path, default=Path(".aws-sam/build"))
    p.add_argument("--outputs", type=Path, help="also write the outputs (JSON) to this file")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the stack")
    p.add_argument("--delete", action="store_true", help="delete the stack instead")
    p.set_defaults(func=_run)
