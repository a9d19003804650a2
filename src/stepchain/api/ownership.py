"""Who may see and steer a run: the caller (``stepchain.api.identity``), run ownership and operators.

``STEPCHAIN_OWNERSHIP`` (the template's ``RunOwnership`` parameter) chooses the mode. It fails closed:
unset means ``on``.

* ``on`` (default): the run is recorded with its caller (``RunRecord.owner``, ``source:principal``); a
  run's routes answer its owner and the operators only, anyone else gets the same 404 as for a missing
  run (after the same single store read); listing returns the caller's own runs (operators: all);
  idempotency keys are per caller. A request without an identity is refused with 401
  ``unauthenticated``: there is no shared "anonymous" caller.
* ``local``: the explicit embedded/demo/test mode: every request is the fixed identity ``local``, an
  operator, whatever identity the event carries (one idempotency scope; every run visible); the signing
  keys may fall back to public local constants (``stepchain.api.security.SigningKey``).
* ``off``: no owner is recorded and every caller sees every run (an explicit deployment choice).

Operators are named by ``STEPCHAIN_OPERATORS`` (the ``OperatorPrincipals`` parameter):
:func:`stepchain.api.identity.operator_entries`. Runs without an owner (started before ownership, or
recorded under the identity scheme before callers were namespaced) are visible to operators only.

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

from stepchain.api.errors import ApiError
from stepchain.api.identity import (
    LOCAL_IDENTITY,
    MODES,
    identity_of,
    operator_entries,
    ownership_mode,
    role_sessions_shared,
)
from stepchain.api.models import RUN_ID_PATTERN
from stepchain.exceptions import RunNotFound
from stepchain.store.records import RunRecord

__all__ = [
    "LOCAL_IDENTITY",
    "MODES",
    "Caller",
    "caller_of",
    "check_configuration",
    "guard",
    "is_operator",
    "ownership_mode",
]

_RUN_ID = re.compile(RUN_ID_PATTERN)


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


def is_operator(owner: str, env: Mapping[str, str] | None = None) -> bool:
    """Whether the caller ``owner`` (``source:principal``) is named by ``STEPCHAIN_OPERATORS``."""
    return operator_entries(env).match(owner)


def caller_of(event: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Caller:
    """The :class:`Caller` of ``event`` under the configured mode; 401 ``unauthenticated`` when ownership
    is on and the event carries no identity."""
    env = os.environ if env is None else env
    mode = ownership_mode(env)
    if mode == "off":
        return Caller(None, operator=True)
    if mode == "local":
        return Caller(LOCAL_IDENTITY, operator=True)
    identity = identity_of(event, env)
    if identity is None:
        raise ApiError(401, "unauthenticated", "the request carries no caller identity")
    owner = str(identity)
    return Caller(owner, operator=is_operator(owner, env))


def check_configuration(env: Mapping[str, str] | None = None) -> None:
    """Refuse to serve (:class:`~stepchain.api.identity.ConfigurationError`, before any route runs) when
    the deployment would fail open: an unknown ownership mode or assumed-role setting, an operator entry
    that names no source, or a signing key that only the public local constant could supply."""
    from stepchain.api.security import CURSOR_KEY
    from stepchain.api.tokens import APPROVAL_KEY

    env = os.environ if env is None else env
    ownership_mode(env)
    role_sessions_shared(env)
    operator_entries(env)
    for key in (CURSOR_KEY, APPROVAL_KEY):
        key.configured(env)


def guard(app: Any, next_middleware: NextMiddleware) -> Response[Any]:
    """Global middleware: a route with a ``{run_id}`` runs only for the run's owner or an operator;
    anyone else gets exactly the 404 of a missing run, after the same one store read (neither the
    answer nor the work done reveals that the run exists)."""
    run_id = (app.context.get("_route_args") or {}).get("run_id")
    if isinstance(run_id, str) and _RUN_ID.match(run_id):  # a malformed id: the route's validation answers
        caller = caller_of(app.current_event.raw_event)
        run = app.context["engine"].runs.store.get_run(run_id)
        if run is None or not caller.may_access(run):
            raise RunNotFound(f"no run {run_id!r}")  # the message Worker.get_run gives a missing run
    return next_middleware(app)
