"""Who may see and steer a run: the caller's identity, run ownership and operators.

The caller is read from API Gateway's request context (never from a header the client chooses):

1. a JWT / Cognito authorizer's ``claims.sub``, else a Lambda authorizer's ``principalId``;
2. IAM (SigV4): ``identity.userArn``. An assumed-role session
   (``arn:aws:sts::<acct>:assumed-role/<role>/<session>``) counts as its role
   (``arn:aws:sts::<acct>:assumed-role/<role>``): every session of a team's role is the same caller;
3. API key mode: ``identity.apiKeyId`` (the key's id, never its value).

``STEPCHAIN_OWNERSHIP`` (the template's ``RunOwnership`` parameter, ``on`` by default) chooses the mode:

* ``on``: the run is recorded with its caller (``RunRecord.owner``); a run's routes answer its owner and
  the operators only, anyone else gets the same 404 as for a missing run; listing returns the caller's
  own runs (operators: all); idempotency keys are per caller. A request without an identity (API Gateway
  always supplies one under the template's IAM and API-key modes; an emulator that does not authenticate,
  such as LocalStack under IAM, does not) is the fixed caller ``anonymous``: not an operator, it sees only
  the runs it started itself.
* unset (the embedded/local runtime, harnesses, tests): every request is the fixed identity ``local``,
  an operator, whatever identity the event carries: runs are recorded as ``local``'s, every run
  (a harness's too) is visible, one idempotency scope: the behaviour before ownership.
* ``off``: no owner is recorded and every caller sees every run (the behaviour before ownership).

Operators are named by ``STEPCHAIN_OPERATORS`` (the ``OperatorPrincipals`` parameter): a comma list of
caller identities (IAM ARNs, API key ids, authorizer subjects). An IAM role ARN
(``arn:aws:iam::<acct>:role/[path/]<name>``) makes every session of that role an operator. Runs
without an owner (started before ownership) are visible to operators only.

:func:`guard` is the ONE check: a global middleware that runs before every route whose path has a
``{run_id}``, so no run route can forget it, and a route added later is covered too.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware

from stepchain.api.models import RUN_ID_PATTERN
from stepchain.exceptions import RunNotFound
from stepchain.store.records import RunRecord

__all__ = [
    "ANONYMOUS",
    "LOCAL_IDENTITY",
    "Caller",
    "caller_of",
    "guard",
    "identity_of",
    "is_operator",
    "ownership_mode",
]

#: who a request without an identity is when ``STEPCHAIN_OWNERSHIP`` is unset (an operator)
LOCAL_IDENTITY = "local"
#: who a request without an identity is when ownership is ``on`` (not an operator)
ANONYMOUS = "anonymous"
MODES = ("on", "off", "local")
_RUN_ID = re.compile(RUN_ID_PATTERN)
_SESSION = re.compile(r"^(arn:[a-z-]+:sts::\d{12}:assumed-role/[^/]+)/[^/]+$")
_ROLE = re.compile(r"^arn:([a-z-]+):iam::(\d{12}):role/(?:[^,]*/)?([^/]+)$")


@dataclass(frozen=True)
class Caller:
    """The caller of one request. ``owner`` None: ownership is off (nothing recorded, all visible)."""

    owner: str | None
    operator: bool = False

    def may_access(self, run: RunRecord) -> bool:
        return self.operator or (self.owner is not None and run.owner == self.owner)

    @property
    def list_owner(self) -> str | None:
        """The owner a listing is restricted to (None: every run of the workflow)."""
        return None if self.operator else self.owner


def ownership_mode(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    mode = env.get("STEPCHAIN_OWNERSHIP") or "local"
    if mode not in MODES:  # the deployment's configuration, not the caller's request: a 500
        raise RuntimeError(f"STEPCHAIN_OWNERSHIP must be one of {MODES}, not {mode!r}")
    return mode


def identity_of(event: Mapping[str, Any]) -> str | None:
    """The caller's identity in an API Gateway (REST, Lambda proxy) event, or None."""
    ctx = event.get("requestContext") or {}
    authorizer = ctx.get("authorizer") or {}
    claims = authorizer.get("claims") or {}
    ident = ctx.get("identity") or {}
    for value in (claims.get("sub"), authorizer.get("principalId"), ident.get("userArn"), ident.get("apiKeyId")):
        if isinstance(value, str) and value:
            session = _SESSION.match(value)
            return session.group(1) if session else value
    return None


def _operators(env: Mapping[str, str]) -> list[str]:
    return [p.strip() for p in (env.get("STEPCHAIN_OPERATORS") or "").split(",") if p.strip()]


def is_operator(owner: str, env: Mapping[str, str] | None = None) -> bool:
    """Whether ``owner`` is named by ``STEPCHAIN_OPERATORS`` (itself, or the IAM role it is a session of)."""
    for entry in _operators(os.environ if env is None else env):
        if entry == owner:
            return True
        role = _ROLE.match(entry)
        if role and owner == f"arn:{role.group(1)}:sts::{role.group(2)}:assumed-role/{role.group(3)}":
            return True
    return False


def caller_of(event: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Caller:
    """The :class:`Caller` of ``event`` under the configured mode."""
    env = os.environ if env is None else env
    mode = ownership_mode(env)
    if mode == "off":
        return Caller(None, operator=True)
    if mode == "local":
        return Caller(LOCAL_IDENTITY, operator=True)
    identity = identity_of(event) or ANONYMOUS
    return Caller(identity, operator=identity != ANONYMOUS and is_operator(identity, env))


def guard(app: Any, next_middleware: NextMiddleware) -> Response[Any]:
    """Global middleware: a route with a ``{run_id}`` runs only for the run's owner or an operator;
    anyone else gets exactly the 404 of a missing run (the run's existence is not revealed)."""
    run_id = (app.context.get("_route_args") or {}).get("run_id")
    if isinstance(run_id, str) and _RUN_ID.match(run_id):  # a malformed id: the route's validation answers
        caller = caller_of(app.current_event.raw_event)
        run = app.context["engine"].runs.store.get_run(run_id)
        if run is not None and not caller.may_access(run):
            raise RunNotFound(f"no run {run_id!r}")  # the message Worker.get_run gives a missing run
    return next_middleware(app)
