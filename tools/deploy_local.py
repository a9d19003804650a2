"""Deploy template.yaml to LocalStack (or any AWS endpoint) through CloudFormation with the SAM transform.

Usage (the make target builds first and then runs this module)::

    make deploy-local [STACK=stepchain] [PARAMS='Transport=sqs ApiAuth=apikey'] [ENDPOINT=http://127.0.0.1:4566]
    python -m tools.deploy_local --stack NAME [--params 'K=V ...'] [--set Res.Prop.Path=VALUE ...]
                                 [--endpoint URL] [--build-dir .aws-sam/build] [--timeout 600]

What it does, offline (no ``samlocal``, no ``sam deploy``):

1. reads ``sam build``'s output (``.aws-sam/build/template.yaml``, whose ``CodeUri``/``ContentUri``/
   ``DefinitionUri`` are local paths);
2. zips every function and layer directory and uploads the zips and the state machine definition to an
   artifacts bucket (``stepchain-artifacts-<account>-<region>``, created if missing) under content-hashed
   keys, so an unchanged artifact is neither zipped nor uploaded again and a changed one changes the key
   (which is what makes CloudFormation update the function);
3. rewrites those properties to ``{Bucket, Key}`` and applies any ``--set`` overrides (below);
4. creates the stack, or updates it when it exists ("No updates are to be performed" is success; a stack
   left in ROLLBACK_COMPLETE by a failed first create is deleted and created again), with
   CAPABILITY_IAM + CAPABILITY_AUTO_EXPAND: CloudFormation runs the ``AWS::Serverless-2016-10-31``
   transform itself;
5. waits (bounded: ``--timeout`` seconds) for CREATE_COMPLETE / UPDATE_COMPLETE, printing the failed
   resource events otherwise, and prints the outputs as JSON, with ``ApiUrl`` in the form LocalStack
   serves (``{endpoint}/_aws/execute-api/{api_id}/{stage}``; the AWS form stays in ``ApiUrlAws``) and,
   with ``ApiAuth=apikey``, ``ApiKeyValue``: the deployment's own key ``<stack>-local``, created once in the
   usage plan (the template ships no shared key; ``make api-key NAME=...`` adds one per further caller).
   ``ApiAuth=iam`` on LocalStack deploys ``RunOwnership=off`` unless ``PARAMS`` names it: LocalStack puts no
   caller identity in the request, and ownership refuses requests without one (401).

Endpoint: ``--endpoint``, else ``AWS_ENDPOINT_URL``, else the port of ``make localstack-up``
(``.localstack/localstack.port``), else ``http://127.0.0.1:4566``. Without credentials in the environment the
dummy ``test``/``test`` pair is used (LocalStack accepts any; account 000000000000). Application code needs no
change between LocalStack and AWS: boto3 reads ``AWS_ENDPOINT_URL`` itself, and inside the deployed functions
LocalStack sets it.

Stock LocalStack (Docker) instead of the Docker-free one of ``infra/localstack``: start the image (see
infra/localstack/README.md), then run the same command against it, e.g.
``make deploy-local ENDPOINT=http://127.0.0.1:4566 PARAMS='Transport=sqs'``. Nothing here depends on the
host-mode plugins.

API authentication: ``ApiAuth=iam`` (the default) makes API Gateway require SigV4-signed requests on AWS.
LocalStack does not enforce IAM by default, but the e2e tests sign anyway (botocore's ``SigV4Auth``,
service ``execute-api``, dummy credentials), so the same client code works unchanged against AWS.
``ApiAuth=apikey`` needs the ``x-api-key`` header (the local key's value is printed as ``ApiKeyValue``).

``--set`` (tests only; template.yaml is not changed): ``Resource.Property.Sub.Path=VALUE`` sets a property of a
resource in the deployed template, e.g. ``--set FetchFunction.Timeout=10`` or
``--set FetchFunction.Environment.Variables.RESEARCH_FETCH_LATENCY_MS=1500``. A value is an integer when it
looks like one, except under ``Environment.Variables`` (always strings). ``SETS='...'`` in the make target.
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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stepchain.deploy_local import local_api_key, local_parameters

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BUILD_DIR = REPO / ".aws-sam" / "build"
DEFAULT_ENDPOINT = "http://127.0.0.1:4566"
CAPABILITIES = ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"]
#: CloudFormation takes a TemplateBody up to this size; a larger template goes through S3 (TemplateURL)
MAX_TEMPLATE_BODY = 51_200
DONE_OK = {"CREATE_COMPLETE", "UPDATE_COMPLETE"}
DONE_FAILED = {
    "CREATE_FAILED",
    "ROLLBACK_COMPLETE",
    "ROLLBACK_FAILED",
    "UPDATE_ROLLBACK_COMPLETE",
    "UPDATE_ROLLBACK_FAILED",
    "UPDATE_FAILED",
    "DELETE_COMPLETE",
    "DELETE_FAILED",
}


class DeployError(Exception):
    """The stack did not reach CREATE_COMPLETE / UPDATE_COMPLETE (the message says why)."""


@dataclass
class Deployment:
    stack: str
    endpoint: str
    status: str
    outputs: dict[str, str]
    parameters: dict[str, str]
    seconds: float
    changed: bool
    artifacts: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "endpoint": self.endpoint,
            "status": self.status,
            "changed": self.changed,
            "seconds": round(self.seconds, 1),
            "parameters": self.parameters,
            "outputs": self.outputs,
        }


# --------------------------------------------------------------------------------------- arguments
def default_endpoint() -> str:
    if url := os.environ.get("AWS_ENDPOINT_URL"):
        return url.rstrip("/")
    port_file = REPO / ".localstack" / "localstack.port"
    try:
        return f"http://127.0.0.1:{int(port_file.read_text())}"
    except (OSError, ValueError):
        return DEFAULT_ENDPOINT


def parse_params(spec: str | Sequence[str] | Mapping[str, str] | None) -> dict[str, str]:
    """``'Transport=sqs ApiAuth=apikey'`` (also ``Key="value"`` and ``ParameterKey=K,ParameterValue=V``)."""
    if spec is None:
        return {}
    if isinstance(spec, Mapping):
        return {str(k): str(v) for k, v in spec.items()}
    words = shlex.split(spec) if isinstance(spec, str) else [w for s in spec for w in shlex.split(s)]
    out: dict[str, str] = {}
    for word in words:
        if word.startswith("ParameterKey="):
            parts = dict(p.split("=", 1) for p in word.split(",", 1))
            out[parts["ParameterKey"]] = parts.get("ParameterValue", "")
            continue
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise DeployError(f"parameter {word!r} is not KEY=VALUE")
        out[key] = value
    return out


def parse_sets(specs: Iterable[str]) -> list[tuple[list[str], str]]:
    out = []
    for spec in specs:
        path, sep, value = spec.partition("=")
        parts = [p for p in path.split(".") if p]
        if not sep or len(parts) < 2:
            raise DeployError(f"--set {spec!r} is not Resource.Property[.Sub...]=VALUE")
        out.append((parts, value))
    return out


def apply_sets(template: dict[str, Any], sets: Sequence[tuple[Sequence[str], str]]) -> None:
    """Set ``Resources[path[0]].Properties[path[1]][...] = value`` (test overrides; see the module doc)."""
    resources = template.get("Resources", {})
    for path, raw in sets:
        res = resources.get(path[0])
        if res is None:
            raise DeployError(f"--set: no resource {path[0]!r} in the template")
        node = res.setdefault("Properties", {})
        for part in path[1:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise DeployError(f"--set: {'.'.join(path)} goes through a non-mapping")
        as_string = "Variables" in path[:-1]
        value: Any = raw if as_string or not raw.lstrip("-").isdigit() else int(raw)
        node[path[-1]] = value


# ---------------------------------------------------------------------------------------- artifacts
def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def tree_digest(directory: Path) -> str:
    h = hashlib.sha256()
    for path in _files(directory):
        h.update(path.relative_to(directory).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:20]


def zip_tree(directory: Path) -> bytes:
    """A deterministic zip (fixed timestamps, sorted entries, permissions kept) of ``directory``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for path in _files(directory):
            info = zipfile.ZipInfo(path.relative_to(directory).as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = (path.stat().st_mode & 0o777 | 0o100000) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())
    return buf.getvalue()


class Artifacts:
    """Uploads build artifacts under content-hashed keys (skipped when the key is already there)."""

    def __init__(self, s3: Any, bucket: str, prefix: str = "stepchain") -> None:
        self.s3 = s3
        self.bucket = bucket
        self.prefix = prefix
        self.uploaded: dict[str, str] = {}

    def ensure_bucket(self, region: str) -> None:
        try:
            self.s3.head_bucket(Bucket=self.bucket)
            return
        except Exception as exc:  # botocore ClientError 404/403: create it
            if "404" not in str(exc) and "NoSuchBucket" not in str(exc) and "Not Found" not in str(exc):
                raise
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        self.s3.create_bucket(**kwargs)

    def _exists(self, key: str) -> bool:
        try:
            self.s3.head_object(Bucket=self.bucket, Key=key)
            return True
        except Exception:
            return False

    def put(self, key: str, make_body: Callable[[], bytes]) -> dict[str, str]:
        if not self._exists(key):
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=make_body())
            self.uploaded[key] = "uploaded"
        else:
            self.uploaded[key] = "cached"
        return {"Bucket": self.bucket, "Key": key}

    def directory(self, directory: Path) -> dict[str, str]:
        if not directory.is_dir():
            raise DeployError(f"{directory} is not a directory: run `make build` first")
        key = f"{self.prefix}/{directory.name}-{tree_digest(directory)}.zip"
        return self.put(key, lambda: zip_tree(directory))

    def file(self, path: Path) -> dict[str, str]:
        if not path.is_file():
            raise DeployError(f"{path} not found")
        body = path.read_bytes()
        key = f"{self.prefix}/{path.stem}-{hashlib.sha256(body).hexdigest()[:20]}{path.suffix}"
        return self.put(key, lambda: body)


def sam_transform(template: dict[str, Any], params: Mapping[str, str], region: str) -> dict[str, Any]:
    """Run the SAM transform here (``samtranslator``, the library CloudFormation's transform is built on).

    Why not let CloudFormation do it: LocalStack's CloudFormation checks references *before* transforming,
    so SAM's generated-resource references (``!Ref StepchainApi.Stage`` in ApiUsagePlan) are rejected with
    "Unresolved resource dependencies" -- and the rejected create leaves a stack stuck in
    CREATE_IN_PROGRESS. The output is plain CloudFormation with the same resources, conditions and outputs.
    """
    from samtranslator.translator.transform import transform  # type: ignore[import-untyped]

    class NoManagedPolicies:  # template.yaml names managed policies by ARN only: no IAM lookup needed
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


def package(template: dict[str, Any], build_dir: Path, artifacts: Artifacts) -> dict[str, Any]:
    """Replace the local artifact paths of the built template with S3 locations (in place; returned)."""
    resources = template.get("Resources", {})
    functions = [r for r in resources.values() if r.get("Type") == "AWS::Serverless::Function"]
    for res in resources.values():
        props = res.get("Properties", {})
        kind = res.get("Type")
        if kind == "AWS::Serverless::Function" and isinstance(props.get("CodeUri"), str):
            props["CodeUri"] = artifacts.directory((build_dir / props["CodeUri"]).resolve())
        elif kind == "AWS::Serverless::LayerVersion" and isinstance(props.get("ContentUri"), str):
            props["ContentUri"] = artifacts.directory((build_dir / props["ContentUri"]).resolve())
        elif kind == "AWS::Serverless::StateMachine" and isinstance(props.get("DefinitionUri"), str):
            props["DefinitionUri"] = artifacts.file((build_dir / props["DefinitionUri"]).resolve())
    glob = template.get("Globals", {}).get("Function", {})
    if isinstance(glob.get("CodeUri"), str):
        # sam build gives every function its own CodeUri; the global local path would be unresolvable
        if all("CodeUri" in r.get("Properties", {}) for r in functions):
            del glob["CodeUri"]
        else:
            glob["CodeUri"] = artifacts.directory((build_dir / glob["CodeUri"]).resolve())
    return template


# ------------------------------------------------------------------------------------- CloudFormation
def _client(service: str, endpoint: str, region: str) -> Any:
    """A client for the LocalStack at ``endpoint``, made by localstack-client (dummy credentials unless
    the environment has real ones)."""
    from urllib.parse import urlsplit

    from botocore.config import Config
    from localstack_client.session import Session

    creds: dict[str, str] = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        creds = {
            "aws_access_key_id": os.environ["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
        }
    session = Session(region_name=region, localstack_host=urlsplit(endpoint).netloc, **creds)
    config = Config(retries={"max_attempts": 3}, read_timeout=120, inject_host_prefix=False)
    return session.client(service, config=config)


def _stack(cfn: Any, name: str) -> dict[str, Any] | None:
    try:
        stacks = cfn.describe_stacks(StackName=name)["Stacks"]
    except Exception as exc:
        if "does not exist" in str(exc) or "ValidationError" in str(exc):
            return None
        raise
    live = [s for s in stacks if s.get("StackStatus") != "DELETE_COMPLETE"]
    return live[0] if live else None


def _failure_events(cfn: Any, name: str, limit: int = 15) -> str:
    try:
        events = cfn.describe_stack_events(StackName=name)["StackEvents"]
    except Exception as exc:
        return f"(no events: {exc})"
    lines = [
        f"  {e.get('LogicalResourceId')} {e.get('ResourceStatus')}: {e.get('ResourceStatusReason')}"
        for e in events
        if "FAILED" in str(e.get("ResourceStatus")) or "ROLLBACK" in str(e.get("ResourceStatus"))
    ]
    return "\n".join(lines[:limit]) or "(no failed resource events)"


def wait_stack(cfn: Any, name: str, timeout_s: float, poll_s: float = 1.0) -> dict[str, Any]:
    """Poll until the stack is COMPLETE (returned) or failed/timed out (DeployError); bounded in time."""
    deadline = time.monotonic() + timeout_s
    status = "?"
    while time.monotonic() < deadline:
        stack = _stack(cfn, name)
        status = stack["StackStatus"] if stack else "DELETE_COMPLETE"
        if stack is not None and status in DONE_OK:
            return stack
        if status in DONE_FAILED:
            reason = stack.get("StackStatusReason", "") if stack else ""
            raise DeployError(f"stack {name} is {status} {reason}\n{_failure_events(cfn, name)}")
        time.sleep(poll_s)
    raise DeployError(f"stack {name} still {status} after {timeout_s:.0f}s\n{_failure_events(cfn, name)}")


def _wait_deleted(cfn: Any, name: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stack = _stack(cfn, name)
        if stack is None:
            return
        if stack["StackStatus"] == "DELETE_FAILED":
            raise DeployError(f"could not delete the failed stack {name}: {_failure_events(cfn, name)}")
        time.sleep(1.0)
    raise DeployError(f"stack {name} not deleted after {timeout_s:.0f}s")


def _template_args(template: dict[str, Any], artifacts: Artifacts, endpoint: str) -> dict[str, str]:
    body = json.dumps(template, separators=(",", ":"))
    if len(body) <= MAX_TEMPLATE_BODY:
        return {"TemplateBody": body}
    loc = artifacts.put(
        f"{artifacts.prefix}/template-{hashlib.sha256(body.encode()).hexdigest()[:20]}.json", body.encode
    )
    return {"TemplateURL": f"{endpoint}/{loc['Bucket']}/{loc['Key']}"}


def create_or_update(
    cfn: Any, name: str, template_args: Mapping[str, str], params: Mapping[str, str], timeout_s: float
) -> tuple[dict[str, Any], bool]:
    """Returns (stack, changed)."""
    parameters = [{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()]
    existing = _stack(cfn, name)
    if existing is not None and existing["StackStatus"] in ("ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "CREATE_FAILED"):
        print(
            f"deploy-local: stack {name} is {existing['StackStatus']} (a failed create): deleting it", file=sys.stderr
        )
        cfn.delete_stack(StackName=name)
        _wait_deleted(cfn, name, timeout_s)
        existing = None
    if existing is not None and existing["StackStatus"].endswith("_IN_PROGRESS"):
        existing = wait_stack(cfn, name, timeout_s)  # another deploy is running: let it finish first
    if existing is None:
        cfn.create_stack(StackName=name, Parameters=parameters, Capabilities=CAPABILITIES, **template_args)
        return wait_stack(cfn, name, timeout_s), True
    try:
        cfn.update_stack(StackName=name, Parameters=parameters, Capabilities=CAPABILITIES, **template_args)
    except Exception as exc:
        if "No updates are to be performed" in str(exc):
            return existing, False
        raise
    return wait_stack(cfn, name, timeout_s), True


def stack_outputs(stack: Mapping[str, Any]) -> dict[str, str]:
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def local_api_url(endpoint: str, api_id: str, stage: str) -> str:
    return f"{endpoint.rstrip('/')}/_aws/execute-api/{api_id}/{stage}"


def _is_local(endpoint: str) -> bool:
    return any(h in endpoint for h in ("://127.0.0.1", "://localhost", "://[::1]", "localstack"))


def deploy(
    stack: str,
    params: Mapping[str, str] | str | None = None,
    *,
    endpoint: str | None = None,
    region: str | None = None,
    build_dir: Path = DEFAULT_BUILD_DIR,
    sets: Sequence[str] = (),
    timeout_s: float = 600.0,
    bucket: str | None = None,
    transform: str = "client",
) -> Deployment:
    """Deploy ``build_dir/template.yaml`` as ``stack`` and return its outputs (see the module doc)."""
    from tools.local_invoke import load_template

    started = time.monotonic()
    endpoint = (endpoint or default_endpoint()).rstrip("/")
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    parameters = parse_params(params)
    built = build_dir / "template.yaml"
    if not built.is_file():
        raise DeployError(f"{built} not found: run `make build` first")
    template = load_template(built)
    declared = template.get("Parameters", {})
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise DeployError(f"unknown template parameters: {', '.join(unknown)} (known: {', '.join(declared)})")
    parameters = local_parameters(parameters, declared)

    s3 = _client("s3", endpoint, region)
    cfn = _client("cloudformation", endpoint, region)
    if bucket is None:
        account = _client("sts", endpoint, region).get_caller_identity()["Account"]
        bucket = f"stepchain-artifacts-{account}-{region}"
    artifacts = Artifacts(s3, bucket)
    artifacts.ensure_bucket(region)
    package(template, build_dir, artifacts)
    apply_sets(template, parse_sets(sets))
    if transform == "client":
        template = sam_transform(template, parameters, region)
    final, changed = create_or_update(cfn, stack, _template_args(template, artifacts, endpoint), parameters, timeout_s)
    outputs = stack_outputs(final)
    if "ApiId" in outputs:
        stage = parameters.get("StageName") or str(declared.get("StageName", {}).get("Default", "v1"))
        if "ApiUrl" in outputs:
            outputs["ApiUrlAws"] = outputs["ApiUrl"]
        outputs["ApiUrl"] = (
            local_api_url(endpoint, outputs["ApiId"], stage) if _is_local(endpoint) else outputs["ApiUrl"]
        )
    if "ApiUsagePlanId" in outputs:  # the template ships no shared key: this deployment's own one
        outputs["ApiKeyValue"] = local_api_key(
            _client("apigateway", endpoint, region), stack, outputs["ApiUsagePlanId"]
        )
    return Deployment(
        stack=stack,
        endpoint=endpoint,
        status=final["StackStatus"],
        outputs=outputs,
        parameters=parameters,
        seconds=time.monotonic() - started,
        changed=changed,
        artifacts=artifacts.uploaded,
    )


def delete(stack: str, *, endpoint: str | None = None, region: str | None = None, timeout_s: float = 300.0) -> int:
    endpoint = (endpoint or default_endpoint()).rstrip("/")
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    cfn = _client("cloudformation", endpoint, region)
    if _stack(cfn, stack) is None:
        print(f"deploy-local: no stack {stack} at {endpoint}", file=sys.stderr)
        return 0
    cfn.delete_stack(StackName=stack)
    try:
        _wait_deleted(cfn, stack, timeout_s)
    except DeployError as exc:
        print(f"deploy-local: {exc}", file=sys.stderr)
        return 1
    print(f"deploy-local: deleted {stack}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--stack", default=os.environ.get("STACK") or "stepchain")
    parser.add_argument("--params", default=os.environ.get("PARAMS", ""), help="'Key=Value Key2=Value2'")
    parser.add_argument("--set", action="append", default=[], dest="sets", help="Resource.Prop.Path=VALUE (tests)")
    parser.add_argument("--endpoint", default=None, help="default: AWS_ENDPOINT_URL, else make localstack-up's port")
    parser.add_argument("--region", default=None)
    parser.add_argument("--build-dir", type=Path, default=DEFAULT_BUILD_DIR)
    parser.add_argument("--bucket", default=None, help="artifacts bucket (default stepchain-artifacts-<acct>-<region>)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the stack")
    parser.add_argument(
        "--transform",
        choices=["client", "server"],
        default=os.environ.get("SAM_TRANSFORM", "client"),
        help="client: samtranslator here (default; see sam_transform); server: CloudFormation runs it",
    )
    parser.add_argument("--delete", action="store_true", help="delete the stack instead (bounded wait)")
    args = parser.parse_args(argv)
    if args.delete:
        return delete(args.stack, endpoint=args.endpoint, region=args.region, timeout_s=args.timeout)
    sets = list(args.sets) + shlex.split(os.environ.get("SETS", ""))
    try:
        result = deploy(
            args.stack,
            args.params,
            endpoint=args.endpoint,
            region=args.region,
            build_dir=args.build_dir,
            sets=sets,
            timeout_s=args.timeout,
            bucket=args.bucket,
            transform=args.transform,
        )
    except DeployError as exc:
        print(f"deploy-local: {exc}", file=sys.stderr)
        return 1
    state = "deployed" if result.changed else "no changes"
    print(f"deploy-local: {result.stack} {result.status} ({state}) in {result.seconds:.1f}s", file=sys.stderr)
    print(f"deploy-local: API {result.outputs.get('ApiUrl', '-')}", file=sys.stderr)
    print(json.dumps(result.to_dict(), indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
