"""``stepchain deploy-local``: deploy ``sam build``'s output to LocalStack (or any CloudFormation endpoint).

The one deploy tool: what a project made by ``stepchain new`` runs for ``make deploy-local``, and what this
repository's ``tools/deploy_local.py`` runs with its own build directory. Offline, no ``samlocal``, no
``sam deploy``:

1. read ``<build dir>/template.yaml`` (local ``CodeUri``/``ContentUri``/``DefinitionUri`` paths);
2. zip every function and layer directory and upload the zips and the state machine definitions to an
   artifacts bucket (``stepchain-artifacts-<account>-<region>``, created if missing) under content-hashed
   keys: an unchanged artifact is not uploaded again, a changed one changes the key (so the function updates);
3. apply ``--set Resource.Property=VALUE`` overrides (tests), run the SAM transform here (``samtranslator``;
   LocalStack's CloudFormation rejects SAM's generated references such as ``StepchainApi.Stage`` before it
   transforms) and give the API deployment a stable name (stepchain.deploy.deploy_stack says why);
4. create the stack, or update it ("No updates are to be performed" is success; a stack left in
   ROLLBACK_COMPLETE by a failed create is deleted and created again; an update that failed or rolled back
   anything is an error; after an update each API stage gets a fresh deployment); wait, bounded by
   ``--timeout``. ``--delete`` removes the stack, its buckets' objects and its log groups;
5. print the outputs as JSON (``--outputs FILE`` also writes them), ``ApiUrl`` in the form LocalStack serves
   (``{endpoint}/_aws/execute-api/{api_id}/{stage}``; the AWS form stays in ``ApiUrlAws``) and, with
   ``ApiAuth=apikey``, ``ApiKeyValue``: the deployment's own key ``<stack>-local`` (:func:`local_api_key`).

``ApiAuth=iam`` on LocalStack: ``RunOwnership=off`` unless given (:func:`local_parameters`).

Credentials: the environment's, else the dummy ``test``/``test`` pair LocalStack accepts. Needs the ``deploy``
extra (``pip install 'stepchain[deploy]'``: aws-sam-translator, PyYAML).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import io
import json
import os
import shlex
import sys
import time
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stepchain.deploy import deploy_stack
from stepchain.exceptions import DeployError

DEFAULT_ENDPOINT = "http://127.0.0.1:4566"
MAX_TEMPLATE_BODY = 51_200  # larger templates go through S3 (TemplateURL)


@dataclass
class Deployment:
    """What :func:`deploy` did: the stack's outputs (``ApiUrl`` in LocalStack's form) and whether it changed."""

    stack: str
    endpoint: str
    status: str
    outputs: dict[str, str]
    parameters: dict[str, str]
    seconds: float
    changed: bool


def default_endpoint() -> str:
    """``AWS_ENDPOINT_URL``, else the port ``make localstack-up`` wrote (``.localstack/localstack.port``), else 4566."""
    if url := os.environ.get("AWS_ENDPOINT_URL"):
        return url.rstrip("/")
    try:
        return f"http://127.0.0.1:{int(Path('.localstack/localstack.port').read_text())}"
    except (OSError, ValueError):
        return DEFAULT_ENDPOINT


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


def apply_sets(template: dict[str, Any], specs: Iterable[str]) -> None:
    """``--set Resource.Property[.Sub...]=VALUE``: set a property of a resource in the deployed template (not in
    template.yaml), e.g. ``FetchFunction.Timeout=10``; integers stay integers except under ``Variables``."""
    resources = template.get("Resources", {})
    for spec in specs:
        path_text, sep, raw = spec.partition("=")
        path = [p for p in path_text.split(".") if p]
        if not sep or len(path) < 2:
            raise DeployError(f"--set {spec!r} is not Resource.Property[.Sub...]=VALUE")
        if path[0] not in resources:
            raise DeployError(f"--set: no resource {path[0]!r} in the template")
        node = resources[path[0]].setdefault("Properties", {})
        for part in path[1:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise DeployError(f"--set: {path_text} goes through a non-mapping")
        as_text = "Variables" in path[:-1] or not raw.lstrip("-").isdigit()
        node[path[-1]] = raw if as_text else int(raw)


def _create_or_update(
    cfn: Any, apigw: Any, stack: str, args: dict[str, Any], template: dict[str, Any], timeout_s: float
) -> tuple[dict[str, Any], bool]:
    """(final stack, changed). See stepchain.deploy.deploy_stack for why an update is checked event by event."""
    existing = deploy_stack.find_stack(cfn, stack)
    if existing is not None and existing["StackStatus"] in deploy_stack.RECREATE:
        print(
            f"deploy-local: stack {stack} is {existing['StackStatus']} (a failed create): deleting it", file=sys.stderr
        )
        cfn.delete_stack(StackName=stack)
        deploy_stack.wait_stack(cfn, stack, timeout_s, deleted=True)
        existing = None
    if existing is not None and existing["StackStatus"].endswith("_IN_PROGRESS"):
        existing = deploy_stack.wait_stack(cfn, stack, timeout_s)  # another deploy is running: let it finish
    if existing is None:
        cfn.create_stack(**args)
        created = deploy_stack.wait_stack(cfn, stack, timeout_s)
        assert created is not None
        return created, True
    since = deploy_stack.last_event_id(cfn, stack)
    try:
        cfn.update_stack(**args)
    except Exception as exc:
        if "No updates are to be performed" not in str(exc):
            raise
        return existing, False
    updated = deploy_stack.wait_stack(cfn, stack, timeout_s)
    assert updated is not None
    deploy_stack.check_update(cfn, stack, since)
    deploy_stack.redeploy_apis(cfn, apigw, stack, template)
    return updated, True


def local_parameters(params: Mapping[str, str], declared: Mapping[str, Any]) -> dict[str, str]:
    """``params`` for a LocalStack stack: LocalStack (community) does not authenticate SigV4 and never puts a
    caller in ``requestContext.identity`` (its API Gateway leaves ``userArn`` None), so under ``ApiAuth=iam``
    ownership (which refuses a request without an identity, 401) could serve nobody: such a stack gets
    ``RunOwnership=off`` unless the parameters name it. A deployment to AWS keeps the template's ``on``."""
    out = dict(params)
    if "RunOwnership" in declared and "RunOwnership" not in out and out.get("ApiAuth", "iam") == "iam":
        out["RunOwnership"] = "off"
        print("deploy-local: ApiAuth=iam on LocalStack carries no caller identity: RunOwnership=off", file=sys.stderr)
    return out


def local_api_key(apigateway: Any, stack: str, plan_id: str) -> str:
    """The value of this local deployment's own API key ``<stack>-local`` in the stack's usage plan (created
    once, then reused): the template ships no shared key; other callers get theirs with ``make api-key``."""
    name = f"{stack}-local"
    found = [k for k in apigateway.get_api_keys(nameQuery=name, includeValues=True)["items"] if k["name"] == name]
    if found:
        return str(found[0]["value"])
    key = apigateway.create_api_key(name=name, enabled=True)
    apigateway.create_usage_plan_key(usagePlanId=plan_id, keyId=key["id"], keyType="API_KEY")
    return str(key["value"])


def deploy(
    stack: str,
    params: Mapping[str, str] | str = "",
    *,
    endpoint: str | None = None,
    build_dir: Path = Path(".aws-sam/build"),
    region: str | None = None,
    sets: Sequence[str] = (),
    timeout_s: float = 600.0,
) -> Deployment:
    """Deploy ``build_dir/template.yaml`` as ``stack`` (see the module docstring)."""
    from stepchain.deploy.samgen_base import load_cfn

    started = time.monotonic()
    endpoint = (endpoint or default_endpoint()).rstrip("/")
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    params = parse_params(params) if isinstance(params, str) else dict(params)
    built = build_dir / "template.yaml"
    if not built.is_file():
        raise DeployError(f"{built} not found: run `make build` first")
    template = load_cfn(built.read_text())
    declared = template.get("Parameters", {})
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise DeployError(f"unknown template parameters: {', '.join(unknown)} (known: {', '.join(declared)})")
    params = local_parameters(params, declared)
    aws = functools.partial(deploy_stack.client, endpoint=endpoint, region=region)
    cfn, apigw = aws("cloudformation"), aws("apigateway")
    artifacts = Artifacts(aws("s3"), f"stepchain-artifacts-{aws('sts').get_caller_identity()['Account']}-{region}")
    artifacts.ensure_bucket(region)
    package(template, build_dir, artifacts)
    apply_sets(template, sets)
    transformed = sam_transform(template, params, region)
    deploy_stack.stable_api_deployments(transformed)
    body = json.dumps(transformed, separators=(",", ":"))
    args: dict[str, Any] = {"TemplateBody": body}
    if len(body) > MAX_TEMPLATE_BODY:
        loc = artifacts.put(f"stepchain/template-{hashlib.sha256(body.encode()).hexdigest()[:20]}.json", body.encode())
        args = {"TemplateURL": f"{endpoint}/{loc['Bucket']}/{loc['Key']}"}
    args.update(
        StackName=stack,
        Capabilities=deploy_stack.CAPABILITIES,
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()],
    )
    if deploy_stack.find_stack(cfn, stack) is None:
        for name in deploy_stack.clear_orphan_log_groups(aws("logs"), transformed, stack):
            print(f"deploy-local: deleted the log group {name} left by an earlier {stack}", file=sys.stderr)
    final, changed = _create_or_update(cfn, apigw, stack, args, transformed, timeout_s)
    outputs = {o["OutputKey"]: o["OutputValue"] for o in final.get("Outputs", [])}
    if "ApiId" in outputs:
        stage = params.get("StageName") or str(declared.get("StageName", {}).get("Default", "v1"))
        if "ApiUrl" in outputs:
            outputs["ApiUrlAws"] = outputs["ApiUrl"]
        outputs["ApiUrl"] = f"{endpoint}/_aws/execute-api/{outputs['ApiId']}/{stage}"
    elif "ApiId" in transformed.get("Outputs", {}):
        raise DeployError(f"stack {stack} is {final['StackStatus']} but has no outputs: destroy it and deploy again")
    if "ApiUsagePlanId" in outputs:  # the template ships no shared key: this deployment's own one
        outputs["ApiKeyValue"] = local_api_key(apigw, stack, outputs["ApiUsagePlanId"])
    seconds = time.monotonic() - started
    return Deployment(stack, endpoint, final["StackStatus"], outputs, params, seconds, changed)


def _run(args: argparse.Namespace) -> int:
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    endpoint = (args.endpoint or default_endpoint()).rstrip("/")
    try:
        if args.delete:
            for name in deploy_stack.delete_stack(endpoint, region, args.stack, args.timeout):
                print(f"deploy-local: deleted the log group {name}", file=sys.stderr)
            print(f"deploy-local: deleted {args.stack}", file=sys.stderr)
            return 0
        sets = [*args.sets, *shlex.split(os.environ.get("SETS", ""))]
        result = deploy(
            args.stack, args.params, endpoint=endpoint, build_dir=args.build_dir, sets=sets, timeout_s=args.timeout
        )
    except (DeployError, ImportError) as exc:
        print(f"deploy-local: {exc}", file=sys.stderr)
        return 1
    if args.outputs:
        args.outputs.parent.mkdir(parents=True, exist_ok=True)
        args.outputs.write_text(json.dumps(result.outputs, indent=2, sort_keys=True) + "\n")
    state = "deployed" if result.changed else "unchanged"
    print(f"deploy-local: {args.stack} {result.status} ({state}) in {result.seconds:.1f}s", file=sys.stderr)
    print(f"deploy-local: API {result.outputs.get('ApiUrl', '-')}", file=sys.stderr)
    print(json.dumps(result.outputs, indent=2, sort_keys=True))
    return 0


def configure(p: argparse.ArgumentParser, *, build_dir: Path = Path(".aws-sam/build")) -> None:
    """The options of ``stepchain deploy-local`` (the repository's ``python -m tools.deploy_local`` too)."""
    p.add_argument("--stack", required=True)
    p.add_argument("--endpoint", default=None, help="default: AWS_ENDPOINT_URL, else make localstack-up's port")
    p.add_argument("--params", default="", help="template parameters: 'Key=Value Key2=Value2'")
    p.add_argument("--set", action="append", default=[], dest="sets", metavar="RES.PROP=VALUE",
                   help="a resource property in the deployed template only (tests; also SETS='...')")  # fmt: skip
    p.add_argument("--build-dir", type=Path, default=build_dir)
    p.add_argument("--outputs", type=Path, help="also write the outputs (JSON) to this file")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the stack")
    p.add_argument("--delete", action="store_true", help="delete the stack, its buckets' objects and its log groups")
    p.set_defaults(func=_run)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "deploy-local",
        help="deploy `sam build`'s output to LocalStack through CloudFormation",
        description=(__doc__ or "").split("\n\n")[0],
    )
    configure(p)
