"""Docker-free `sam local invoke`: run one function of template.yaml the way the template declares it.

python tools/local_invoke.py FunctionId event.json [--parameter-overrides K=V ...] [--env-vars env.json]
stdout: the handler's JSON result or a Lambda-style error; stderr: logs and START/END/REPORT lines.
Exit status: 0 success, 1 handler error or timeout, 2 bad usage or template.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import re
import resource
import select
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

INIT_LIMIT_S = 10.0  # Lambda's limit for the init phase (imports) of an on-demand environment
ACCOUNT = "123456789012"
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
    import yaml  # type: ignore[import-untyped]  # only the parent needs PyYAML, not the runtime interpreter

    class CfnLoader(yaml.SafeLoader):  # type: ignore[misc]
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

    def __init__(self, template: dict[str, Any], overrides: dict[str, str], region: str, stack: str) -> None:
        self.t, self.region, declared = template, region, template.get("Parameters", {})
        if unknown := set(overrides) - set(declared):
            raise UsageError(f"unknown parameters: {sorted(unknown)}")
        known = {k: d for k, d in declared.items() if k in overrides or "Default" in d}
        self.params = {k: str(overrides.get(k, d.get("Default"))) for k, d in known.items()}
        for name, value in self.params.items():
            if value not in [str(v) for v in declared[name].get("AllowedValues", [value])]:
                raise UsageError(f"parameter {name}={value!r} is not one of {declared[name]['AllowedValues']}")
        self.pseudo: dict[str, Any] = {"AWS::Region": region, "AWS::AccountId": ACCOUNT, "AWS::StackName": stack}
        self.pseudo |= {"AWS::Partition": "aws", "AWS::URLSuffix": "amazonaws.com", "AWS::NoValue": NO_VALUE}

    def _placeholder(self, lid: str, fmt: int) -> str:
        res = self.t["Resources"].get(lid)
        if res is None:
            raise UsageError(f"reference to unknown resource or parameter {lid!r}")
        kind = KINDS.get(res["Type"], ("", "{n}", "arn:aws:local:{r}:{a}:{n}"))
        explicit = res.get("Properties", {}).get(kind[0])
        name = str(self.resolve(explicit)) if explicit else f"{self.pseudo['AWS::StackName']}-{lid}"
        name = name.lower() if res["Type"] == "AWS::S3::Bucket" else name
        ref = kind[1].format(r=self.region, a=ACCOUNT, n=name)
        return name if fmt == 0 else ref if fmt == 1 else kind[2].format(r=self.region, a=ACCOUNT, n=name, ref=ref)

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


def read_message(fd: int, buf: bytearray, deadline: float) -> dict[str, Any] | str | None:
    """The child's next JSON line; "timeout" if the deadline passes first; None at EOF (the child died)."""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return "timeout"
        if not (chunk := os.read(fd, 65536)):
            return None
        buf += chunk
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return dict(json.loads(line))


@dataclass(frozen=True)
class Function:
    """One function as the template declares it, Globals merged and intrinsics resolved."""

    name: str
    runtime: str
    handler: str
    timeout: int
    memory: int
    code_dir: Path
    paths: list[str]  # [CodeUri, layer python dirs]
    env: dict[str, str]
    region: str


def resolve_function(args: argparse.Namespace) -> Function:
    fn, template = args.function, Path(args.template).resolve()
    t, root = load_template(template), template.parent
    res = t["Resources"].get(fn, {})
    if res.get("Type") != "AWS::Serverless::Function":
        raise UsageError(f"{fn} is not an AWS::Serverless::Function in {template}")
    pairs = re.sub(r"ParameterKey=([^,\s]+),ParameterValue=(\S*)", r"\1=\2", " ".join(args.parameter_overrides))
    overrides = {k: v.strip("\"'") for k, _, v in (kv.partition("=") for kv in pairs.split())}
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    r = Resolver(t, overrides, region, args.stack_name)
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


def run(f: Function, event: Any, python: str) -> int:
    """Run the handler once in a fresh process, enforce the Timeout, print the result and Lambda's log lines."""
    rid, stream = str(uuid.uuid4()), f"{time.strftime('%Y/%m/%d')}/[$LATEST]{uuid.uuid4().hex}"
    # fmt: off
    env = {**os.environ, "AWS_LAMBDA_FUNCTION_NAME": f.name, "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
           "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(f.memory), "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{f.name}",
           "AWS_LAMBDA_LOG_STREAM_NAME": stream, "AWS_REGION": f.region, "AWS_DEFAULT_REGION": f.region,
           "AWS_EXECUTION_ENV": f"AWS_Lambda_{f.runtime}", "LAMBDA_TASK_ROOT": str(f.code_dir),
           "_HANDLER": f.handler, "TZ": ":UTC", "AWS_SAM_LOCAL": "true", **f.env}  # the template's values win
    # fmt: on
    print(f"START RequestId: {rid} Version: $LATEST", file=sys.stderr, flush=True)
    with tempfile.NamedTemporaryFile("w", suffix=".json") as event_file:
        json.dump(event, event_file)
        event_file.flush()
        rfd, wfd = os.pipe()
        spec = {"fd": wfd, "paths": f.paths, "handler": f.handler, "event": event_file.name, "timeout": f.timeout}
        spec |= {"request_id": rid, "arn": f"arn:aws:lambda:{f.region}:{ACCOUNT}:function:{f.name}"}
        # -I: no PYTHONPATH, user site or script dir on sys.path; -u: unbuffered logs; child stdout -> our stderr
        cmd = [python, "-I", "-u", str(Path(__file__).resolve()), "--child", json.dumps(spec)]
        proc = subprocess.Popen(cmd, env=env, cwd=f.code_dir, stdin=subprocess.DEVNULL, stdout=2,
                                pass_fds=(wfd,), start_new_session=True)  # fmt: skip
        os.close(wfd)
        buf, started = bytearray(), time.monotonic()
        init = read_message(rfd, buf, started + INIT_LIMIT_S)
        ready = isinstance(init, dict) and "init_ms" in init
        done = read_message(rfd, buf, time.monotonic() + f.timeout) if ready else init
        try:  # after the response Lambda freezes the sandbox: give lingering threads 1 s, then kill
            proc.wait(timeout=0 if done == "timeout" else 1.0)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        os.close(rfd)
    duration = (time.monotonic() - started) * 1000
    if done == "timeout":
        limit = float(f.timeout) if ready else INIT_LIMIT_S
        msg, duration = f"Task timed out after {limit:.2f} seconds", limit * 1000
        print(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {rid} {msg}", file=sys.stderr)
        done = {"error": {"errorType": "Sandbox.Timedout", "errorMessage": f"RequestId: {rid} Error: {msg}"}}
    elif not isinstance(done, dict):
        msg = f"Runtime exited with error: exit status {proc.returncode}"
        done = {"error": {"errorType": "Runtime.ExitError", "errorMessage": f"RequestId: {rid} Error: {msg}"}}
    duration = float(done.get("duration_ms", duration))
    max_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
    init_ms = f"\tInit Duration: {init['init_ms']:.2f} ms" if ready and isinstance(init, dict) else ""
    report = f"Duration: {duration:.2f} ms\tBilled Duration: {math.ceil(duration)} ms\tMemory Size: {f.memory} MB"
    print(f"END RequestId: {rid}", file=sys.stderr)
    print(f"REPORT RequestId: {rid}\t{report}\tMax Memory Used: {max_mb} MB{init_ms}", file=sys.stderr)
    if max_mb > f.memory:
        print(f"local_invoke: WARNING: {max_mb} MB used > MemorySize {f.memory} MB: Lambda kills it", file=sys.stderr)
    print(json.dumps(done.get("error", done.get("result"))))
    return 1 if "error" in done else 0


def child(spec: dict[str, Any]) -> int:
    """In the fresh interpreter: import the handler, call it once, report through the pipe (stdlib only)."""
    out = os.fdopen(spec["fd"], "w")

    def send(started: float, key: str, value: Any) -> int:
        out.write(json.dumps({"duration_ms": (time.perf_counter() - started) * 1000, key: value}) + "\n")
        out.flush()
        return 1 if key == "error" else 0

    def error(exc: BaseException, etype: str | None = None, message: str | None = None) -> dict[str, Any]:
        tb = exc.__traceback__.tb_next if exc.__traceback__ else None  # drop this function's own frame
        traceback.print_exception(type(exc), exc, tb)
        stack = [] if etype else traceback.format_tb(tb)  # Lambda's Runtime.* errors carry no stack trace
        return {"errorMessage": message or str(exc), "errorType": etype or type(exc).__name__,
                "requestId": spec["request_id"], "stackTrace": stack}  # fmt: skip

    sys.path[:0] = spec["paths"]
    started = time.perf_counter()
    module, _, attr = spec["handler"].rpartition(".")
    try:
        handler = getattr(importlib.import_module(module), attr)
    except AttributeError as exc:
        message = f"Handler '{attr}' missing on module '{module}'"
        return send(started, "error", error(exc, "Runtime.HandlerNotFound", message))
    except Exception as exc:
        message = f"Unable to import module '{module}': {exc}"
        return send(started, "error", error(exc, "Runtime.ImportModuleError", message))
    send(started, "init_ms", (time.perf_counter() - started) * 1000)
    env, deadline = os.environ, time.monotonic() + spec["timeout"]
    context = SimpleNamespace(  # what the Lambda Python runtime passes as `context`
        function_name=env["AWS_LAMBDA_FUNCTION_NAME"], function_version="$LATEST", invoked_function_arn=spec["arn"],
        memory_limit_in_mb=int(env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"]), aws_request_id=spec["request_id"],
        log_group_name=env["AWS_LAMBDA_LOG_GROUP_NAME"], log_stream_name=env["AWS_LAMBDA_LOG_STREAM_NAME"],
        identity=None, client_context=None,
        get_remaining_time_in_millis=lambda: max(0, int((deadline - time.monotonic()) * 1000)),
    )  # fmt: skip
    event, started = json.loads(Path(spec["event"]).read_text()), time.perf_counter()
    try:
        result = json.loads(json.dumps(handler(event, context)))
    except Exception as exc:
        return send(started, "error", error(exc))
    return send(started, "result", result)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child(json.loads(argv[1]))
    p = argparse.ArgumentParser(description="Docker-free `sam local invoke` of one template.yaml function.")
    p.add_argument("function", help="logical id of an AWS::Serverless::Function")
    p.add_argument("event", nargs="?", default="-", help="event JSON file (default '-': stdin)")
    p.add_argument("--template", default="template.yaml")
    p.add_argument("--parameter-overrides", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--env-vars", help="JSON file in SAM's format: {LogicalId or Parameters: {VAR: value}}")
    p.add_argument("--build-dir", help="where `sam build` put the layers (default: .aws-sam/build by the template)")
    p.add_argument("--stack-name", default="local", help="AWS::StackName used in placeholders")
    p.add_argument("--python", help="interpreter for the handler (default: this one if it matches Runtime)")
    args = p.parse_args(argv)
    try:
        f = resolve_function(args)
        event = json.loads((sys.stdin.read() if args.event == "-" else Path(args.event).read_text()) or "{}")
        return run(f, event, args.python or find_python(f.runtime))
    except UsageError as exc:
        print(f"local_invoke: error: {exc}", file=sys.stderr)
        return 2
    except (OSError, KeyError, ValueError) as exc:
        print(f"local_invoke: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
