"""The embedded local runtime: AWS emulated by moto's server on 127.0.0.1, workers as processes.

It runs the same code as Lambda does (the SQS transport, the DynamoDB store, the S3 claim-check),
with boto3 pointed at the emulator through ``AWS_ENDPOINT_URL``, so nothing in user code changes.
State lives in the emulator, outside the workers: kill a worker and start another, and the run
resumes at its last checkpoint.

    python -m stepchain.runtimes.local worker --workflow research_agent.workflow:wf --budget-ms 4000

Every worker also runs the recovery sweeper (:mod:`stepchain.engine.sweeper`) every ``--sweep-every``
seconds (default 60, as the deployed schedule does), so a run whose handoff was lost moves on here too.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stepchain.define.context import FakeLambdaContext, Probe
from stepchain.define.workflow import Workflow
from stepchain.engine import LEASE_GRACE_MS
from stepchain.handoff.sqs import MAX_RECEIVE_COUNT
from stepchain.runtimes.local_probes import AuditProbe, CrashPlanProbe, DuplicatingSqsHandoff

TABLE = "stepchain-local"
BUCKET = "stepchain-local-payloads"
QUEUE = "stepchain-local-steps"
DLQ = "stepchain-local-dlq"
#: the per-message visibility V and heartbeat interval H of local workers (see stepchain.engine.heartbeat)
LOCAL_VISIBILITY_S = 1
LOCAL_HEARTBEAT_S = 0.25
#: how often an idle worker asks the queue again (moto's long poll wakes on a new message, not on
#: a message whose visibility ran out: a short poll finds that one within this interval)
IDLE_POLL_S = 0.1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def client_env(endpoint: str) -> dict[str, str]:
    """What a process needs so boto3 talks to the emulator (and nothing else)."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }


@dataclass(frozen=True)
class LocalStack:
    """Names and URLs of one local deployment (the emulator's equivalent of template.yaml's outputs)."""

    endpoint: str
    table: str
    bucket: str
    queue_url: str
    dlq_url: str

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **client_env(self.endpoint),
            "STEPCHAIN_TABLE": self.table,
            "STEPCHAIN_BUCKET": self.bucket,
            "STEPCHAIN_TRANSPORT": "sqs",
            "STEPCHAIN_QUEUES": json.dumps({"*": self.queue_url}),
            # the SQS heartbeat (stepchain.engine.heartbeat): each message's own visibility is 1 s, kept
            # alive every 0.25 s while a worker runs it, so a killed worker's step resumes ~1 s later
            "STEPCHAIN_SQS_VISIBILITY_S": str(LOCAL_VISIBILITY_S),
            "STEPCHAIN_HEARTBEAT_S": str(LOCAL_HEARTBEAT_S),
            **extra,
        }


def _atomic_dynamodb(app: Any) -> Any:
    """WSGI middleware: one DynamoDB request at a time, as DynamoDB applies each request atomically.
    moto's server is threaded and an UpdateItem that creates its item puts it in the table before it
    applies the update: a concurrent Query (the API reading a run while a worker claims its next node)
    saw a node item with no status (a 500). SQS and S3 requests (a long-polling receive) are not held."""
    lock = threading.Lock()

    def wrapped(environ: dict[str, Any], start_response: Any) -> Any:
        if not str(environ.get("HTTP_X_AMZ_TARGET", "")).startswith("DynamoDB_"):
            return app(environ, start_response)
        with lock:
            return list(app(environ, start_response))  # the whole body, produced under the lock

    return wrapped


class _AtomicDynamoServer:
    """moto's ``ThreadedMotoServer`` with :func:`_atomic_dynamodb` around its application."""

    def __init__(self, ip_address: str, port: int, verbose: bool = False) -> None:
        from moto.server import ThreadedMotoServer

        self._inner = ThreadedMotoServer(ip_address=ip_address, port=port, verbose=verbose)
        self._ip, self._port = ip_address, port

    def start(self) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        inner = self._inner

        def entry() -> None:
            app = _atomic_dynamodb(DomainDispatcherApplication(create_backend_app))
            inner._server = make_server(self._ip, self._port, app, True, request_handler=MotoRequestHandler)
            inner._server_ready_event.set()
            inner._server.serve_forever()

        inner._thread = threading.Thread(target=entry, daemon=True)
        inner._thread.start()
        inner._server_ready_event.wait()

    def stop(self) -> None:
        self._inner.stop()


class EmbeddedAws:
    """moto's server in a thread of this process, bound to 127.0.0.1, stopped on exit."""

    def __init__(self, port: int | None = None) -> None:
        import logging

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
        self.port = port or free_port()
        self._server = _AtomicDynamoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> EmbeddedAws:
        import urllib.request

        self._server.start()
        # moto's backends are process-global: a server started earlier in this process (a test
        # session) left its tables and queues there. Start from an empty AWS, as a fresh stack would.
        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST"), timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()

    def client(self, service: str) -> Any:
        import boto3

        env = client_env(self.endpoint)
        return boto3.client(  # type: ignore[call-overload]
            service,
            endpoint_url=self.endpoint,
            region_name=env["AWS_REGION"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )

    def provision(self, *, visibility_timeout_s: int, max_receives: int = MAX_RECEIVE_COUNT) -> LocalStack:
        """Create the table, bucket, step queue and dead-letter queue (idempotent)."""
        from stepchain.store.dynamodb import create_table

        ddb, s3, sqs = self.client("dynamodb"), self.client("s3"), self.client("sqs")
        if TABLE not in ddb.list_tables()["TableNames"]:
            create_table(ddb, TABLE)
        s3.create_bucket(Bucket=BUCKET)
        dlq_url = sqs.create_queue(QueueName=DLQ)["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        queue_url = sqs.create_queue(
            QueueName=QUEUE,
            Attributes={
                "VisibilityTimeout": str(visibility_timeout_s),
                "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receives)}),
            },
        )["QueueUrl"]
        return LocalStack(self.endpoint, TABLE, BUCKET, queue_url, dlq_url)


def visibility_timeout_for(budget_ms: int) -> int:
    """The queue's own visibility timeout: at least the invocation's budget + the lease grace, as AWS
    requires of a queue behind an event source mapping (>= the function timeout). With the heartbeat
    (the default here) a message's own visibility is much shorter: this one only applies to a
    message whose visibility could not be changed."""
    return math.ceil((budget_ms + LEASE_GRACE_MS) / 1000) + 1


def run_worker(
    workflows: list[Workflow],
    queue_url: str,
    *,
    budget_ms: int,
    probe: Probe | None = None,
    idle_exit_s: float | None = None,
    env: Mapping[str, str] | None = None,
    sweep_every_s: float | None = 60.0,
    sweep_grace_s: float | None = None,
    duplicate_delivery: bool = False,
) -> None:
    """Poll the step queue like Lambda's event source mapping and run each batch as one invocation;
    every ``sweep_every_s`` seconds run the recovery sweeper (``None``: never), like the scheduled
    function of template.yaml. With ``duplicate_delivery``, every message this worker sends is sent twice."""
    from stepchain.engine.sweeper import Sweeper, SweepPolicy
    from stepchain.runtimes.aws import build_engine
    from stepchain.runtimes.aws.sqs_worker import handle_sqs_batch
    from stepchain.settings import Settings

    settings = Settings.from_env(env)
    handoff = None
    if duplicate_delivery:
        handoff = DuplicatingSqsHandoff(settings.queues)
        handoff.duplicate = True
    engine = build_engine(workflows, settings, handoff=handoff)
    if probe is not None:
        engine.probe = probe
        engine.handoff.probe = probe
    sqs = engine.handoff.client  # type: ignore[attr-defined]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    idle_since = time.monotonic()
    sweeper = Sweeper(engine, SweepPolicy() if sweep_grace_s is None else SweepPolicy(grace_s=sweep_grace_s))
    next_sweep = time.monotonic() + (sweep_every_s or 0)
    while not stop.is_set():
        if sweep_every_s is not None and time.monotonic() >= next_sweep:
            sweeper.sweep()
            next_sweep = time.monotonic() + sweep_every_s
        resp = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=1,
            WaitTimeSeconds=0,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages = resp.get("Messages", [])
        if not messages:
            if idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s:
                return
            stop.wait(IDLE_POLL_S)
            continue
        idle_since = time.monotonic()
        event = {"Records": [_record(m, queue_url) for m in messages]}
        ctx = FakeLambdaContext.with_budget(budget_ms, f"local-{uuid.uuid4().hex[:12]}")
        result = handle_sqs_batch(engine, event, ctx)
        failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
        for m in messages:
            if m["MessageId"] not in failed:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])


def _record(m: dict[str, Any], queue_url: str) -> dict[str, Any]:
    """An SQS message as Lambda's event source mapping presents it."""
    attrs = {
        k: {
            "stringValue": v.get("StringValue"),
            "dataType": v.get("DataType", "String"),
            "stringListValues": [],
            "binaryListValues": [],
        }
        for k, v in m.get("MessageAttributes", {}).items()
    }
    return {
        "messageId": m["MessageId"],
        "receiptHandle": m["ReceiptHandle"],
        "body": m["Body"],
        "attributes": m.get("Attributes", {}),
        "messageAttributes": attrs,
        "md5OfBody": m.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:us-east-1:000000000000:{queue_url.rsplit('/', 1)[-1]}",
        "awsRegion": "us-east-1",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stepchain.runtimes.local",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("worker", help="poll the local step queue and run steps (env: STEPCHAIN_*, AWS_ENDPOINT_URL)")
    w.add_argument("--workflow", action="append", required=True, help="module:attribute of a Workflow")
    w.add_argument("--budget-ms", type=int, default=60_000, help="time limit of each emulated invocation")
    w.add_argument("--audit", help="append executed steps/items/effects to this JSON-lines file")
    w.add_argument("--idle-exit", type=float, help="exit after this many idle seconds")
    w.add_argument("--sweep-every", type=float, default=60.0, help="run the recovery sweeper every N s (0: never)")
    w.add_argument("--sweep-grace", type=float, help="the sweeper's grace period in seconds (default 300)")
    w.add_argument("--crash-plan", help="exit at the boundaries this JSON file names (stepchain.testing.LocalHarness)")
    w.add_argument("--duplicate-delivery", action="store_true", help="send every message twice")
    args = parser.parse_args(argv)
    from stepchain.define.load import load_workflow

    queue_url = json.loads(os.environ["STEPCHAIN_QUEUES"])["*"]
    probe: Probe | None = AuditProbe(args.audit) if args.audit else None
    if args.crash_plan:
        probe = CrashPlanProbe(args.audit or os.devnull, args.crash_plan)
    run_worker(
        [load_workflow(s) for s in args.workflow],
        queue_url,
        budget_ms=args.budget_ms,
        probe=probe,
        idle_exit_s=args.idle_exit,
        sweep_every_s=args.sweep_every or None,
        sweep_grace_s=args.sweep_grace,
        duplicate_delivery=args.duplicate_delivery,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
