"""Who is calling: the caller's identity as ``(source, principal)``, read from API Gateway's request context.

Never from a header or body the client chooses. Each source has its own namespace, so no source can produce
another source's caller (a Lambda authorizer's ``principalId`` that reads like an IAM ARN stays an
authorizer principal)::

    source       where API Gateway puts it                          the caller (the run's recorded owner)
    jwt          authorizer.claims.sub (Cognito user pool, JWT)     jwt:<sub>
    authorizer   authorizer.principalId (Lambda authorizer)         authorizer:<principalId>
    cognito      identity.cognitoIdentityId (identity pool, IAM)    cognito:<identity id>
    sts-session  identity.userArn, an assumed-role session          sts-session:<session ARN>
    sts-role     the same, when STEPCHAIN_ASSUMED_ROLE_CALLER=role  sts-role:<session ARN without /<session>>
    iam          identity.userArn, any other principal (IAM user)   iam:<arn>
    apikey       identity.apiKeyId (ApiAuth=apikey)                 apikey:<key id>

The first source present in that order wins: an authorizer is what API Gateway authenticated; a Cognito
identity pool hands every app user a session of ONE role (often with the same session name), so its
``cognitoIdentityId`` comes before the session ARN. An assumed-role session is its own caller: two people
behind one SSO permission set are two callers. ``STEPCHAIN_ASSUMED_ROLE_CALLER=role`` (the template's
``AssumedRoleCallers`` parameter) makes every session of a role one caller instead, for teams that want to
share their runs: an explicit choice, never the default.

The embedded/local mode records runs as the fixed caller ``local`` (no namespace: no source produces it).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "LOCAL_IDENTITY",
    "SOURCES",
    "ConfigurationError",
    "Identity",
    "identity_of",
    "operator_entries",
    "role_sessions_shared",
]

#: the caller of every request in the explicit local mode (an operator; no source can produce it)
LOCAL_IDENTITY = "local"
SOURCES = ("jwt", "authorizer", "cognito", "sts-session", "sts-role", "iam", "apikey")
_SESSION = re.compile(r"^(arn:[a-z-]+:sts::\d{12}:assumed-role/[^/]+)/[^/]+$")
_ARN = re.compile(r"^arn:[a-z-]+:(?:iam|sts)::\d{12}:\S+$")
_ROLE = re.compile(r"^arn:([a-z-]+):iam::(\d{12}):role/(?:\S*/)?([^/]+)$")


class ConfigurationError(RuntimeError):
    """The API's deployment configuration is unusable (the API refuses to serve rather than fail open)."""


@dataclass(frozen=True)
class Identity:
    """One caller: ``source`` names where the principal came from; ``str()`` is the recorded owner."""

    source: str
    principal: str

    def __str__(self) -> str:
        return f"{self.source}:{self.principal}"


def role_sessions_shared(env: Mapping[str, str] | None = None) -> bool:
    """``STEPCHAIN_ASSUMED_ROLE_CALLER``: ``session`` (default, each session its own caller) or ``role``."""
    env = os.environ if env is None else env
    value = env.get("STEPCHAIN_ASSUMED_ROLE_CALLER") or "session"
    if value not in ("session", "role"):
        raise ConfigurationError(f"STEPCHAIN_ASSUMED_ROLE_CALLER must be 'session' or 'role', not {value!r}")
    return value == "role"


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def identity_of(event: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Identity | None:
    """The caller of an API Gateway (REST, Lambda proxy) event, or None when it carries no identity."""
    ctx = event.get("requestContext") or {}
    authorizer = ctx.get("authorizer") or {}
    claims = authorizer.get("claims") or {} if isinstance(authorizer, Mapping) else {}
    ident = ctx.get("identity") or {}
    if not isinstance(authorizer, Mapping) or not isinstance(ident, Mapping) or not isinstance(claims, Mapping):
        return None
    if sub := _text(claims.get("sub")):
        return Identity("jwt", sub)
    if principal := _text(authorizer.get("principalId")):
        return Identity("authorizer", principal)
    if cognito := _text(ident.get("cognitoIdentityId")):
        return Identity("cognito", cognito)
    if arn := _text(ident.get("userArn")):
        session = _SESSION.match(arn)
        if session is None:
            return Identity("iam", arn)
        return Identity("sts-role", session.group(1)) if role_sessions_shared(env) else Identity("sts-session", arn)
    if key := _text(ident.get("apiKeyId")):
        return Identity("apikey", key)
    return None


@dataclass(frozen=True)
class OperatorEntries:
    """``STEPCHAIN_OPERATORS`` parsed: exact callers, and IAM roles whose every session is an operator."""

    callers: frozenset[str]
    roles: frozenset[tuple[str, str, str]]  # (partition, account, role name)

    def match(self, caller: str) -> bool:
        if caller in self.callers:
            return True
        source, _, arn = caller.partition(":")
        if source not in ("sts-session", "sts-role"):
            return False
        m = re.match(r"^arn:([a-z-]+):sts::(\d{12}):assumed-role/([^/]+)", arn)
        return m is not None and (m.group(1), m.group(2), m.group(3)) in self.roles


def operator_entries(env: Mapping[str, str] | None = None) -> OperatorEntries:
    """Parse ``STEPCHAIN_OPERATORS`` (comma list). An entry is a namespaced caller (``apikey:<id>``,
    ``authorizer:<id>``, ``jwt:<sub>``, ``cognito:<id>``, ``iam:<arn>``, ``sts-session:<arn>``), or an
    IAM ARN: a role ARN (``arn:aws:iam::<acct>:role/[path/]<name>``) makes every session of that role an
    operator, another ARN is that IAM principal. A bare value that is neither is refused (it would be
    ambiguous between sources): :class:`ConfigurationError`."""
    env = os.environ if env is None else env
    callers: set[str] = set()
    roles: set[tuple[str, str, str]] = set()
    for entry in (p.strip() for p in (env.get("STEPCHAIN_OPERATORS") or "").split(",")):
        if not entry:
            continue
        source, _, rest = entry.partition(":")
        arn = rest if source == "iam" else entry if source == "arn" else None
        if arn is not None:
            if role := _ROLE.match(arn):
                roles.add((role.group(1), role.group(2), role.group(3)))
            elif _SESSION.match(arn):
                callers.add(f"sts-session:{arn}")  # that one session (a role ARN names them all)
            elif _ARN.match(arn):
                callers.add(f"iam:{arn}")
            else:
                raise ConfigurationError(f"STEPCHAIN_OPERATORS: {entry!r} is not an IAM ARN")
        elif source in SOURCES and rest:
            callers.add(entry)
        else:
            raise ConfigurationError(
                f"STEPCHAIN_OPERATORS: {entry!r} names no source; write it as one of "
                + ", ".join(f"{s}:<principal>" for s in SOURCES if s != "sts-role")
                + " or an IAM ARN"
            )
    return OperatorEntries(frozenset(callers), frozenset(roles))


MODES = ("on", "off", "local")


def ownership_mode(env: Mapping[str, str] | None = None) -> str:
    """``STEPCHAIN_OWNERSHIP``: ``on`` unless the deployment says ``off`` or ``local`` (fails closed)."""
    env = os.environ if env is None else env
    mode = env.get("STEPCHAIN_OWNERSHIP") or "on"
    if mode not in MODES:  # the deployment's configuration, not the caller's request
        raise ConfigurationError(f"STEPCHAIN_OWNERSHIP must be one of {MODES}, not {mode!r}")
    return mode
