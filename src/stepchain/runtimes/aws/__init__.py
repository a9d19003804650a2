"""AWS Lambda entry points: build an engine from the environment and serve events.

In a function's ``app.py``::

    from stepchain.runtimes.aws import api_handler, step_handler
    from research_agent.workflow import wf

    step_handler = step_handler(wf)   # SQS batches and Step Functions tasks
    api_handler = api_handler(wf)     # API Gateway (REST, Lambda proxy)
    sweeper_handler = sweeper_handler(wf)  # scheduled: re-issues lost handoffs (stepchain.engine.sweeper)

Clients are created lazily on the first event (not at import), once per execution environment.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from stepchain.clock import Clock
from stepchain.define.workflow import Registry, Workflow
from stepchain.engine import Engine
from stepchain.handoff.base import Handoff
from stepchain.settings import Settings
from stepchain.store.dynamodb import DynamoDBStore
from stepchain.store.payloads import PayloadCodec, S3BlobStore

Handler = Callable[[dict[str, Any], Any], Any]


@dataclass
class AwsClients:
    """boto3 clients, injected (tests pass moto- or LocalStack-bound ones) or created on first use."""

    dynamodb: Any = None
    s3: Any = None
    sqs: Any = None
    stepfunctions: Any = None
    _cache: dict[str, Any] = field(default_factory=dict)

    def get(self, service: str) -> Any:
        client = getattr(self, service, None)
        if client is None:
            if service not in self._cache:
                import boto3
                from botocore.config import Config

                # inject_host_prefix=False: StartSyncExecution/SendTaskSuccess work on emulators too
                self._cache[service] = boto3.client(  # type: ignore[call-overload]
                    service,
                    config=Config(inject_host_prefix=False, signature_version="s3v4" if service == "s3" else None),
                )
            client = self._cache[service]
        return client


def make_handoff(
    settings: Settings, clients: AwsClients, clock: Clock | None = None, workflows: Iterable[Workflow] = ()
) -> Handoff:
    """The deployment's transport: SQS routes each node of ``workflows`` to its function's queue
    (:func:`stepchain.engine.queue_routes.node_queues`), any other node to ``"*"``; Step Functions starts
    each of ``workflows`` on its state machine (:meth:`Settings.state_machines_of`)."""
    if settings.transport == "sqs":
        from stepchain.engine.queue_routes import node_queues
        from stepchain.handoff.sqs import SqsHandoff

        return SqsHandoff(node_queues(workflows, settings.queues), clients.get("sqs"), clock=clock)
    if settings.transport == "stepfunctions":
        from stepchain.handoff.stepfunctions import StepFunctionsHandoff

        names = [wf.name for wf in workflows]
        return StepFunctionsHandoff(settings.state_machines_of(names), clients.get("stepfunctions"))
    raise ValueError("the in-process transport has no AWS handoff; use stepchain.runtimes.local or stepchain.testing")


def build_engine(
    workflows: Registry | list[Workflow] | tuple[Workflow, ...],
    settings: Settings | None = None,
    *,
    clients: AwsClients | None = None,
    clock: Clock | None = None,
    handoff: Handoff | None = None,
) -> Engine:
    settings = settings or Settings.from_env()
    clients = clients or AwsClients()
    store = DynamoDBStore(settings.table, clients.get("dynamodb"), retention_s=settings.retention_days * 86400)
    codec = PayloadCodec(S3BlobStore(settings.bucket, clients.get("s3")), settings.inline_limit)
    registry = workflows if isinstance(workflows, Registry) else Registry(workflows)
    return Engine(
        registry,
        store,
        codec,
        handoff or make_handoff(settings, clients, clock, registry),
        clock=clock,
    )


#: probe boundaries counted as CloudWatch metrics (EMF, flushed once per invocation)
METRIC_NAMES = {
    "step_executed": "StepsExecuted",
    "item_executed": "ItemsCheckpointed",
    "once_executed": "EffectsExecuted",
    "continued": "Continuations",
    "takeover": "Takeovers",
    "checkpoint_hit": "CheckpointHits",
}


class MetricsProbe:
    """Counts the engine's durable events as Powertools metrics (namespace POWERTOOLS_METRICS_NAMESPACE)."""

    def __init__(self, metrics: Any) -> None:
        self.metrics = metrics

    def reached(self, boundary: str, run_id: str, key: str, detail: str = "") -> None:
        name = METRIC_NAMES.get(boundary)
        if name is not None:
            from aws_lambda_powertools.metrics import MetricUnit

            self.metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)


class _Lazy:
    """Builds the engine on the first event and keeps it for the life of the execution environment."""

    def __init__(self, workflows: tuple[Workflow, ...], settings: Settings | None, clients: AwsClients | None) -> None:
        from stepchain.runtimes.aws.calls import install_from_env

        install_from_env()  # STEPCHAIN_RECORD_CALLS=1: log every AWS call (least-privilege checks)
        self.workflows = workflows
        self.settings = settings
        self.clients = clients
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = build_engine(self.workflows, self.settings, clients=self.clients)
        return self._engine

    def with_metrics(self, metrics: Any) -> Engine:
        engine = self.engine
        engine.probe = engine.handoff.probe = MetricsProbe(metrics)
        return engine


def step_handler(*workflows: Workflow, settings: Settings | None = None, clients: AwsClients | None = None) -> Handler:
    """The handler of every step function: SQS batches (``Records``) and Step Functions task payloads."""
    from aws_lambda_powertools import Metrics

    lazy = _Lazy(workflows, settings, clients)
    metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "stepchain")

    @metrics.log_metrics
    def handler(event: dict[str, Any], context: Any) -> Any:
        engine = lazy.with_metrics(metrics)
        if isinstance(event, dict) and "Records" in event:
            from stepchain.runtimes.aws.sqs_worker import handle_sqs_batch

            return handle_sqs_batch(engine, event, context)
        from stepchain.runtimes.aws.sfn_worker import handle_sfn_task

        return handle_sfn_task(engine, event, context)

    return handler


def api_handler(*workflows: Workflow, settings: Settings | None = None, clients: AwsClients | None = None) -> Handler:
    """The API Gateway (REST, Lambda proxy) handler: start, watch, signal, cancel and redrive runs."""
    lazy = _Lazy(workflows, settings, clients)

    def handler(event: dict[str, Any], context: Any) -> Any:
        from stepchain.api.app import handle_api_event

        return handle_api_event(lazy.engine, event, context)

    return handler


def sweeper_handler(
    *workflows: Workflow, settings: Settings | None = None, clients: AwsClients | None = None
) -> Handler:
    """The scheduled recovery sweeper (``stepchain.engine.sweeper``; template.yaml runs it every minute).
    ``STEPCHAIN_SWEEP_GRACE_S`` overrides the grace period (default 300 s),
    ``STEPCHAIN_SWEEP_MAX_REISSUES`` the re-issues of one node without progress before the run
    is failed (default 10)."""
    from stepchain.engine.sweeper import Sweeper, SweepPolicy

    lazy = _Lazy(workflows, settings, clients)

    def handler(event: dict[str, Any], context: Any) -> Any:
        report = Sweeper(lazy.engine, SweepPolicy.from_env()).sweep()
        return {**report.__dict__, "acted": report.acted}

    return handler


__all__ = ["AwsClients", "Handler", "api_handler", "build_engine", "make_handoff", "step_handler", "sweeper_handler"]
