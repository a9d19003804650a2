"""stepchain: durable, checkpointed agent workflows on AWS Lambda.

Define a workflow with :class:`Workflow`; each step gets a :class:`StepContext`. Run it on AWS
through :mod:`stepchain.runtimes.aws` handlers, locally with :mod:`stepchain.runtimes.local`, and test it with
:mod:`stepchain.testing`.
"""

from stepchain.define.context import StepContext
from stepchain.define.flow import Concurrency, RateLimit
from stepchain.define.routing import END, Route, goto
from stepchain.define.state import StateUpdate
from stepchain.define.workflow import Node, NodeKind, Registry, RetryPolicy, Workflow
from stepchain.engine import Engine
from stepchain.exceptions import (
    BlobUnavailable,
    BudgetExceeded,
    BudgetNotDeclared,
    EventIterationError,
    EventNotFound,
    IdempotencyConflict,
    InvalidRunState,
    IterationLimitExceeded,
    PayloadError,
    RetryableError,
    RunNotFound,
    StateNotDeclared,
    StepchainError,
    StepNotFound,
    StepTimedOut,
    TerminalError,
    UnknownRoute,
    ValidationError,
    VersionMismatch,
    VersionNotRegistered,
    WorkflowNotFound,
)
from stepchain.handoff.messages import Activation, Outcome, OutcomeKind
from stepchain.observe.ledger import RunView, describe
from stepchain.store.base import CheckpointStore
from stepchain.store.dynamodb import DynamoDBStore
from stepchain.store.memory import MemoryStore
from stepchain.store.payloads import BlobStore, MemoryBlobStore, PayloadCodec, S3BlobStore
from stepchain.store.records import NodeStatus, RunStatus

__version__ = "0.1.0"

__all__ = [
    "END",
    "Activation",
    "BlobStore",
    "BlobUnavailable",
    "BudgetExceeded",
    "BudgetNotDeclared",
    "CheckpointStore",
    "Concurrency",
    "DynamoDBStore",
    "Engine",
    "EventIterationError",
    "EventNotFound",
    "IdempotencyConflict",
    "InvalidRunState",
    "IterationLimitExceeded",
    "MemoryBlobStore",
    "MemoryStore",
    "Node",
    "NodeKind",
    "NodeStatus",
    "Outcome",
    "OutcomeKind",
    "PayloadCodec",
    "PayloadError",
    "RateLimit",
    "Registry",
    "RetryPolicy",
    "RetryableError",
    "Route",
    "RunNotFound",
    "RunStatus",
    "RunView",
    "S3BlobStore",
    "StateNotDeclared",
    "StateUpdate",
    "StepContext",
    "StepNotFound",
    "StepTimedOut",
    "StepchainError",
    "TerminalError",
    "UnknownRoute",
    "ValidationError",
    "VersionMismatch",
    "VersionNotRegistered",
    "Workflow",
    "WorkflowNotFound",
    "describe",
    "goto",
]
