"""Deployment settings, read from the environment that template.yaml sets on every function."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import overload

from stepchain.exceptions import ValidationError
from stepchain.store.payloads import DEFAULT_INLINE_LIMIT

TRANSPORTS = ("stepfunctions", "sqs", "inprocess")


@overload
def env_int(
    name: str, default: int, *, low: int = 1, high: int | None = None, env: Mapping[str, str] | None = None
) -> int: ...
@overload
def env_int(
    name: str, default: None = None, *, low: int = 1, high: int | None = None, env: Mapping[str, str] | None = None
) -> int | None: ...
def env_int(
    name: str,
    default: int | None = None,
    *,
    low: int = 1,
    high: int | None = None,
    env: Mapping[str, str] | None = None,
) -> int | None:
    """A whole-number setting from the environment (``default`` when unset or blank), within
    ``low``..``high``; anything else is a :class:`ValidationError` naming the variable."""
    raw = ((os.environ if env is None else env).get(name) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError(f"{name} must be a whole number, not {raw!r}") from None
    if value < low or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise ValidationError(f"{name} must be {bound}, not {value}")
    return value


@dataclass(frozen=True)
class Settings:
    """``STEPCHAIN_*`` environment variables.

    ======================================  ====================================================
    ``STEPCHAIN_TABLE``                     checkpoint table name
    ``STEPCHAIN_BUCKET``                    claim-check bucket name
    ``STEPCHAIN_TRANSPORT``                 ``stepfunctions`` (default) or ``sqs``
    ``STEPCHAIN_STATE_MACHINE_ARN``         the workflow's state machine (Step Functions transport)
    ``STEPCHAIN_STATE_MACHINE_PREFIX``      ``arn:...:stateMachine:<stack>-``: a workflow's state machine is
                                            this and its name (what the generated template sets: its size
                                            does not grow with the workflows, Lambda's 4 KB environment)
    ``STEPCHAIN_STATE_MACHINES``            JSON ``{workflow: arn}`` (older templates; wins over the prefix)
    ``STEPCHAIN_QUEUES``                    JSON ``{route key: queue url, "*": default queue}`` (SQS): one
                                            entry per worker function (:mod:`stepchain.engine.queue_routes`),
                                            or by node id (older templates)
    ``STEPCHAIN_RETENTION_DAYS``            TTL of run records (default 30)
    ``STEPCHAIN_INLINE_LIMIT``              bytes above which values go to S3 (default 32768)
    ======================================  ====================================================
    """

    table: str
    bucket: str
    transport: str = "stepfunctions"
    state_machines: Mapping[str, str] = field(default_factory=dict)
    state_machine_prefix: str = ""
    queues: Mapping[str, str] = field(default_factory=dict)
    retention_days: int = 30
    inline_limit: int = DEFAULT_INLINE_LIMIT

    def __post_init__(self) -> None:
        if self.transport not in TRANSPORTS:
            raise ValidationError(f"STEPCHAIN_TRANSPORT must be one of {TRANSPORTS}, not {self.transport!r}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        missing = [k for k in ("STEPCHAIN_TABLE", "STEPCHAIN_BUCKET") if not env.get(k)]
        if missing:
            raise ValidationError(f"missing environment variables: {', '.join(missing)}")

        def as_map(name: str) -> dict[str, str]:
            raw = env.get(name, "").strip()
            if not raw:
                return {}
            try:
                doc = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ValidationError(f"{name} is not JSON: {exc}") from exc
            if not isinstance(doc, dict):
                raise ValidationError(f"{name} must be a JSON object")
            return {str(k): str(v) for k, v in doc.items()}

        machines = as_map("STEPCHAIN_STATE_MACHINES")
        if env.get("STEPCHAIN_STATE_MACHINE_ARN"):
            machines.setdefault("*", env["STEPCHAIN_STATE_MACHINE_ARN"])
        return cls(
            table=env["STEPCHAIN_TABLE"],
            bucket=env["STEPCHAIN_BUCKET"],
            transport=env.get("STEPCHAIN_TRANSPORT", "stepfunctions") or "stepfunctions",
            state_machines=machines,
            state_machine_prefix=env.get("STEPCHAIN_STATE_MACHINE_PREFIX", "").strip(),
            queues=as_map("STEPCHAIN_QUEUES"),
            retention_days=env_int("STEPCHAIN_RETENTION_DAYS", 30, env=env),
            inline_limit=env_int("STEPCHAIN_INLINE_LIMIT", DEFAULT_INLINE_LIMIT, env=env),
        )

    def state_machine_for(self, workflow: str) -> str:
        arn = self.state_machines.get(workflow) or self._prefixed(workflow) or self.state_machines.get("*")
        if not arn:
            raise ValidationError(f"no state machine configured for workflow {workflow!r}")
        return arn

    def state_machines_of(self, workflows: Iterable[str]) -> dict[str, str]:
        """``{workflow: arn}`` for the named ``workflows`` (and ``"*"`` when configured): what the Step
        Functions handoff starts executions by."""
        out = {name: arn for name in workflows if (arn := self.state_machines.get(name) or self._prefixed(name))}
        return {**out, **{k: v for k, v in self.state_machines.items() if k not in out}}

    def _prefixed(self, workflow: str) -> str:
        return self.state_machine_prefix + workflow if self.state_machine_prefix else ""

    def queue_for(self, node: str) -> str:
        url = self.queues.get(node) or self.queues.get("*")
        if not url:
            raise ValidationError(f"no queue configured for node {node!r}")
        return url
