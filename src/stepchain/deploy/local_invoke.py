"""``stepchain invoke``: a Docker-free ``sam local invoke``: run one function of template.yaml the way the
template declares it (Runtime, Handler, Timeout, MemorySize, Environment, Layers), in a fresh process.

    stepchain invoke FunctionId event.json [--stack NAME --endpoint URL] [--run-id ID]
                     [--parameter-overrides K=V ...] [--env-vars env.json]

With ``--stack``, the template's resources resolve to that deployed stack's (``make deploy-local``) and the
handler talks to ``--endpoint``: the project's sample events work against LocalStack. Without it, resources
are local placeholders; a function that uses any of them needs an endpoint or credentials, and the command
says so instead of letting the handler fail (``--no-aws``: run anyway, for a handler that makes no AWS
call). ``RUN_ID`` in an event is replaced by ``--run-id``.
stdout: the handler's JSON result or a Lambda-style error; stderr: logs and START/END/REPORT lines.
Exit status: 0 success, 1 handler error or timeout, 2 bad usage, template or missing endpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stepchain.deploy.local_invoke_run import ACCOUNT, Function, run

NO_VALUE = object()
HOST_ARCH = {"amd64": "x86_64", "aarch64": "arm64"}.get(platform.machine().lower(), platform.machine().lower())
# resource type -> (explicit-name property, Ref format, Arn format) for readable local placeholders
KINDS: dict[str, tuple[str, str, str]] = {
    "AWS::SQS::Queue": ("QueueName", "https://sqs.{r}.amazonaws.com/{a}/{n}", "arn:aws:sqs:{r}:{a}:{n}"),
    "AWS::S3::Bucket": ("BucketName", "{n}", "arn:aws:s3:::{n}"),
    "AWS::DynamoDB::Table": ("TableName", "{n}", "arn:aws:dynamodb:{r}:{a}:table/{n}"),
    "AWS::Serverless::Function": ("FunctionName", "{n}", "arn:aws:lambda:{r}:{a}:function:{n}"),
    "AWS::Serverless::StateMachine": ("Name", "arn:aws:states:{r}:{a}:stateMachine:{n}", "{ref}"),
}


class UsageError(Exception):
    """Bad arguments, or a template this tool cannot run (exit status 2)."""


def load_template(path: Path) -> dict[str, Any]:
    """YAML with CloudFormation short-form tags (`!Ref X`, `!GetAtt A.B`, ...) read as their long form."""
    import yaml  # only the parent needs PyYAML, not the runtime interpreter

    class CfnLoader(yaml.SafeLoader):
        pass

    def construct(loader: Any, tag: str, node: Any) -> dict[str, Any]:
        kind = {yaml.ScalarNode: "scalar", yaml.SequenceNode: "sequence"}.get(type(node), "mapping")
        value = getattr(loader, f"construct_{kind}")(node, **({} if kind == "scalar" else {"deep": True}))
        if tag in ("Ref", "Condition"):
            return {tag: value}
        return {f"Fn::{tag}": value.split(".", 1) if tag == "GetAtt" and isinstance(value, str) else value}

    CfnLoader.add_multi_constructor("!", construct)
    doc = yaml.load(path.read_text(), Loader=CfnLoader)
    if not isinstance(doc, dict) or "Resources" not in doc:
        raise UsageError(f"{path}: not a CloudFormation template")
    return doc


class Resolver:
    """Evaluates intrinsics: parameters -> override or Default, resources -> local placeholders."""

    def __init__(
        self,
        template: dict[str, Any],
        overrides: dict[str, str],
        region: str,
        stack: str,
        deployed: dict[str, str] | None = None,
        account: str = ACCOUNT,
    ) -> None:
        self.t, self.region, declared = template, region, template.get("Parameters", {})
        self.deployed, self.account = deployed or {}, account  # logical id -> physical id (a deployed stack)
        self.used: set[str] = set()  # the resources the resolved values refer to
        if unknown := set(overrides) - set(declared):
            raise UsageError(f"unknown parameters: {sorted(unknown)}")
        known = {k: d for k, d in declared.items() if k in overrides or "Default" in d}
        self.params = {k: str(overrides.get(k, d.get("Default"))) for k, d in known.items()}
        for name, value in self.params.items():
            if value not in [str(v) for v in declared[name].get("AllowedValues", [value])]:
                raise UsageError(f"parameter {name}={value!r} is not one of {declared[name]['AllowedValues']}")
        self.pseudo: dict[str, Any] = {"AWS::Region": region, "AWS::AccountId": account, "AWS::StackName": stack}
        self.pseudo |= {"AWS::Partition": "aws", "AWS::URLSuffix": "amazonaws.com", "AWS::NoValue": NO_VALUE}

    def _placeholder(self, lid: str, fmt: int) -> str:
        res = self.t["Resources"].get(lid)
        if res is None:
            raise UsageError(f"reference to unknown resource or parameter {lid!r}")
        self.used.add(lid)
        kind = KINDS.get(res["Type"], ("", "{n}", "arn:aws:local:{r}:{a}:{n}"))
        r, a = self.region, self.account
        if lid in self.deployed:  # the physical id is what Ref gives; the name is its last part
            ref = self.deployed[lid]
            name = ref.rsplit("/", 1)[-1] if res["Type"] == "AWS::SQS::Queue" else ref.rsplit(":", 1)[-1]
            return name if fmt == 0 else ref if fmt == 1 else kind[2].format(r=r, a=a, n=name, ref=ref)
        explicit = res.get("Properties", {}).get(kind[0])
        name = str(self.resolve(explicit)) if explicit else f"{self.pseudo['AWS::StackName']}-{lid}"
        name = name.lower() if res["Type"] == "AWS::S3::Bucket" else name
        ref = kind[1].format(r=r, a=a, n=name)
        return name if fmt == 0 else ref if fmt == 1 else kind[2].format(r=r, a=a, n=name, ref=ref)

    def ref(self, name: str) -> Any:
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.t.get("Parameters", {}):
            if name not in self.params:
                raise UsageError(f"parameter {name} has no Default: pass --parameter-overrides {name}=...")
            return self.params[name]
        return self._placeholder(name, 1)

    def getatt(self, lid: str, attr: str) -> str:
        fmt = {"Arn": 2, "QueueUrl": 1, "QueueName": 0, "Name": 0}.get(attr)
        return self._placeholder(lid, fmt) if fmt is not None else f"{self._placeholder(lid, 0)}.{attr}"

    def condition(self, name: str) -> bool:
        return bool(self.resolve(self.t.get("Conditions", {})[name]))

    def sub(self, text: str, variables: dict[str, Any]) -> str:
        def one(match: re.Match[str]) -> str:
            key = match.group(1)
            if key.startswith("!"):
                return "${" + key[1:] + "}"
            if key in variables:
                return str(self.resolve(variables[key]))
            return self.getatt(*key.split(".", 1)) if "." in key and "::" not in key else str(self.ref(key))

        return re.sub(r"\$\{([^}]+)\}", one, text)

    def resolve(self, v: Any) -> Any:
        if isinstance(v, list):
            return [x for x in (self.resolve(i) for i in v) if x is not NO_VALUE]
        if not isinstance(v, dict):
            return v
        key: str = next(iter(v), "")
        if len(v) != 1 or not (key in ("Ref", "Condition") or key.startswith("Fn::")):
            return {k: r for k, r in ((k, self.resolve(x)) for k, x in v.items()) if r is not NO_VALUE}
        a: Any = v[key]
        intrinsics: dict[str, Callable[[], Any]] = {
            "Ref": lambda: self.ref(a),
            "Condition": lambda: self.condition(a),
            "Fn::GetAtt": lambda: self.getatt(*(a if isinstance(a, list) else str(a).split(".", 1))),
            "Fn::Sub": lambda: self.sub(a, {}) if isinstance(a, str) else self.sub(a[0], a[1]),
            "Fn::If": lambda: self.resolve(a[1] if self.condition(a[0]) else a[2]),
            "Fn::Equals": lambda: str(self.resolve(a[0])) == str(self.resolve(a[1])),
            "Fn::Not": lambda: not self.resolve(a[0]),
            "Fn::And": lambda: all(self.resolve(c) for c in a),
            "Fn::Or": lambda: any(self.resolve(c) for c in a),
            "Fn::Join": lambda: str(a[0]).join(str(x) for x in self.resolve(a[1])),
        }
        if key not in intrinsics:
            raise UsageError(f"{key} is not supported by local_invoke")
        return intrinsics[key]()


def merge_globals(glob: dict[str, Any], props: dict[str, Any]) -> dict[str, Any]:
    """SAM's Globals rules: maps merge (the resource wins), lists concatenate (globals first), scalars override."""
    out = dict(glob)
    for key, value in props.items():
        base = out.get(key)
        if isinstance(base, dict) and isinstance(value, dict) and not any(k.startswith("Fn::") for k in value):
            out[key] = merge_globals(base, value)
        else:
            out[key] = base + value if isinstance(base, list) and isinstance(value, list) else value
    return out


def layer_paths(layers: list[Any], t: dict[str, Any], root: Path, build_dir: Path, arch: str) -> list[str]:
    """Each layer's built python dir (if built for this machine's architecture), else its source dir."""
    paths = []
    for layer in layers:
        lid = str(layer.get("Ref")) if isinstance(layer, dict) else ""
        res = t["Resources"].get(lid, {})
        if not res.get("Type", "").endswith("::LayerVersion"):
            raise UsageError(f"layer {layer!r} is not a layer of this template")
        built, source = build_dir / lid / "python", res.get("Metadata", {}).get("LocalInvokePythonPath")
        if built.is_dir() and arch == HOST_ARCH:
            newest = max((p.stat().st_mtime for p in (root / source).rglob("*.py")), default=0) if source else 0
            if newest > built.stat().st_mtime:
                # the sources win over the stale build; the build still provides the dependencies
                print(f"local_invoke: {built} is older than {source}: using {source} first", file=sys.stderr)
                paths.append(str(root / str(source)))
            paths.append(str(built))
            continue
        if built.is_dir():
            print(f"local_invoke: {built} is for {arch}, this host is {HOST_ARCH}: using sources", file=sys.stderr)
        content = root / str(res.get("Properties", {}).get("ContentUri", "."))
        path = next((d for d in [content / "python", *([root / source] if source else [])] if d.is_dir()), None)
        if path is None:
            raise UsageError(f"layer {lid} is not built and has no source dir (Metadata LocalInvokePythonPath)")
        paths.append(str(path))
    return paths


def find_python(runtime: str) -> str:
    """This interpreter if it matches the Runtime (a project venv has boto3, as the runtime does), else pyenv's."""
    want = runtime.removeprefix("python")
    if f"{sys.version_info.major}.{sys.version_info.minor}" == want:
        return sys.executable
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    found = sorted(pyenv.glob(f"versions/{want}*/bin/python{want}"))
    if not found:
        raise UsageError(f"no python{want} interpreter for Runtime {runtime}: pass --python")
    return str(found[-1])


def resolve_function(args: argparse.Namespace) -> Function:
    fn, template = args.function, Path(args.template).resolve()
    t, root = load_template(template), template.parent
    res = t["Resources"].get(fn, {})
    if res.get("Type") != "AWS::Serverless::Function":
        raise UsageError(f"{fn} is not an AWS::Serverless::Function in {template}")
    pairs = re.sub(r"ParameterKey=([^,\s]+),ParameterValue=(\S*)", r"\1=\2", " ".join(args.parameter_overrides))
    overrides = {k: v.strip("\"'") for k, _, v in (kv.partition("=") for kv in pairs.split())}
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    deployed, account, aws_env = _deployed(args.stack, args.endpoint, region) if args.stack else ({}, ACCOUNT, {})
    r = Resolver(t, overrides, region, args.stack or args.stack_name, deployed, account)
    props = merge_globals(t.get("Globals", {}).get("Function", {}), res.get("Properties", {}))
    variables = r.resolve(props.get("Environment", {}).get("Variables", {}))
    env = {k: json.dumps(v) if isinstance(v, bool) else str(v) for k, v in variables.items()}
    if args.env_vars:  # SAM's format; as in SAM, only variables the template declares can be overridden
        given = json.loads(Path(args.env_vars).read_text())
        for key, value in {**given.get("Parameters", {}), **given.get(fn, {})}.items():
            if key in env:
                env[key] = str(value)
            else:
                print(f"local_invoke: --env-vars {key} ignored: {fn} does not declare it", file=sys.stderr)
    if r.used and not args.stack and not args.no_aws:
        _check_aws_reachable(fn, sorted(r.used))
    env |= aws_env
    code_dir = (root / str(r.resolve(props["CodeUri"]))).resolve()
    arch = str(r.resolve(props.get("Architectures", ["x86_64"]))[0])
    layers = layer_paths(props.get("Layers", []), t, root, Path(args.build_dir or root / ".aws-sam/build"), arch)
    return Function(
        name=fn,
        runtime=str(r.resolve(props["Runtime"])),
        handler=str(r.resolve(props["Handler"])),
        timeout=int(r.resolve(props.get("Timeout", 3))),
        memory=int(r.resolve(props.get("MemorySize", 128))),
        code_dir=code_dir,
        paths=[str(code_dir), *layers],
        env=env,
        region=region,
    )


def _deployed(stack: str, endpoint: str | None, region: str) -> tuple[dict[str, str], str, dict[str, str]]:
    """(logical -> physical ids of the deployed ``stack``, its account, the handler's endpoint variables)."""
    from stepchain.deploy.deploy_local import default_endpoint
    from stepchain.deploy.deploy_stack import client

    url = (endpoint or default_endpoint()).rstrip("/")
    try:
        cfn = client("cloudformation", url, region)
        resources = cfn.describe_stack_resources(StackName=stack)["StackResources"]
        account = str(client("sts", url, region).get_caller_identity()["Account"])
    except Exception as exc:  # botocore: endpoint down, stack missing
        raise UsageError(f"stack {stack} at {url}: {exc} (deploy it first: make deploy-local)") from None
    physical = {r["LogicalResourceId"]: str(r.get("PhysicalResourceId") or "") for r in resources}
    env = {"AWS_ENDPOINT_URL": url}
    if not os.environ.get("AWS_ACCESS_KEY_ID"):
        env |= {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}  # LocalStack accepts any
    return physical, account, env


def _check_aws_reachable(fn: str, used: list[str]) -> None:
    """A function that uses the template's resources needs somewhere to find them: say what to set."""
    if os.environ.get("AWS_ENDPOINT_URL"):
        return
    try:
        import botocore.session

        if botocore.session.Session().get_credentials() is not None:
            return
    except ImportError:
        pass
    raise UsageError(
        f"{fn} uses {', '.join(used)}, and there is no AWS endpoint or credentials to find them at. Deploy first "
        f"(make deploy-local), then run it against that stack: `make invoke FN={fn} EVENT=...` in a project made "
        f"by stepchain new (ON_STACK=<stack> in the stepchain repository), or stepchain invoke {fn} EVENT "
        "--stack NAME --endpoint URL; or set AWS_ENDPOINT_URL and credentials"
    )


def read_event(path: str, run_id: str | None) -> Any:
    text = (sys.stdin.read() if path == "-" else Path(path).read_text()) or "{}"
    if "RUN_ID" in text:
        if not run_id:
            raise UsageError(
                f"{path} refers to a run (RUN_ID): pass the run_id that api-start-run.json answered "
                "(make invoke ... RUN_ID=<run_id>, or --run-id)"
            )
        text = text.replace("RUN_ID", run_id)
    return json.loads(text)


def configure(p: argparse.ArgumentParser) -> None:
    """The options of ``stepchain invoke`` (and of the repository's tools/local_invoke.py)."""
    p.add_argument("function", help="logical id of an AWS::Serverless::Function")
    p.add_argument("event", nargs="?", default="-", help="event JSON file (default '-': stdin)")
    p.add_argument("--template", default="template.yaml")
    p.add_argument("--stack", help="resolve resources to this deployed stack's (make deploy-local) and use it")
    p.add_argument("--endpoint", help="with --stack: default AWS_ENDPOINT_URL, else make localstack-up's port")
    p.add_argument("--run-id", help="replaces RUN_ID in the event")
    p.add_argument("--no-aws", action="store_true", help="run without an endpoint or credentials (placeholders)")
    p.add_argument("--parameter-overrides", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--env-vars", help="JSON file in SAM's format: {LogicalId or Parameters: {VAR: value}}")
    p.add_argument("--build-dir", help="where `sam build` put the layers (default: .aws-sam/build by the template)")
    p.add_argument("--stack-name", default="local", help="AWS::StackName in placeholders (without --stack)")
    p.add_argument("--python", help="interpreter for the handler (default: this one if it matches Runtime)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        f = resolve_function(args)
        event = read_event(args.event, args.run_id)
        return run(f, event, args.python or find_python(f.runtime))
    except UsageError as exc:
        print(f"invoke: error: {exc}", file=sys.stderr)
        return 2
    except (OSError, KeyError, ValueError) as exc:
        print(f"invoke: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("invoke", help="run one function of template.yaml locally, no Docker (sam local invoke)")
    configure(p)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Docker-free `sam local invoke` of one template.yaml function.")
    configure(p)
    args = p.parse_args(argv)
    code: int = args.func(args)
    return code
