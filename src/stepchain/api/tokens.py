"""Approval tokens: single-use, expiring capabilities to deliver one event to one run.

A token is ``<payload>.<mac>`` (both unpadded base64url): the payload is the compact JSON
``{"r": run id, "e": event name, "x": expiry (epoch ms), "n": token id (128 random bits), "i": loop
iteration}`` (a token minted before iterations were bound has no ``"i"``: it delivers as an event
that names no iteration) and the
mac is HMAC-SHA256 over ``b"stepchain-approval-v1\\0" + payload`` with :func:`approval_key`. Anyone can
read what a token is for; nobody without the key can make or change one (``hmac.compare_digest``).

:func:`approval_key` is read once per execution environment from the Secrets Manager secret named by
``STEPCHAIN_APPROVAL_KEY_SECRET_ARN`` (template.yaml generates it; only the API function may read it),
the same way as the list-cursor key (``stepchain.api.security.cursor_key``): never in code, in an
environment value or in a log. Without that variable (local runs, tests) the key is
``STEPCHAIN_APPROVAL_KEY``, else a fixed local constant: local tokens are then forgeable by anyone who
reads this code, which is why a deployed stack always sets the secret.

Single use is the store's job (``CheckpointStore.spend_token``, one conditional put of ``T#<id>``): see
``stepchain.api.approvals``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from stepchain.api.errors import ApiError

__all__ = ["Approval", "approval_key", "mint_token", "read_token", "reset_approval_key"]

_DOMAIN = b"stepchain-approval-v1\0"
_LOCAL_KEY = "stepchain-approval-local-v1"
#: longest token the route accepts (a 24-char run id and a 63-char event name make ~190)
MAX_TOKEN_CHARS = 512
TOKEN_PATTERN = r"^[A-Za-z0-9_-]{1,400}\.[A-Za-z0-9_-]{43}$"


@dataclass(frozen=True)
class Approval:
    """What a valid token grants: deliver ``event`` to ``run_id`` once, for the wait of loop iteration
    ``iteration`` (None: a token without one, delivered naming no iteration), until ``expires_ms``."""

    run_id: str
    event: str
    expires_ms: int
    token_id: str
    iteration: int | None = None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, _DOMAIN + payload, hashlib.sha256).digest()


def mint_token(
    run_id: str, event: str, expires_ms: int, key: bytes | None = None, *, iteration: int = 0
) -> tuple[str, Approval]:
    """A new token for ``event`` of ``run_id`` (the wait of loop iteration ``iteration``), valid until
    ``expires_ms``."""
    approval = Approval(run_id, event, expires_ms, secrets.token_hex(16), iteration)
    doc = {"r": run_id, "e": event, "x": expires_ms, "n": approval.token_id, "i": iteration}
    payload = json.dumps(doc, separators=(",", ":")).encode()
    return f"{_b64(payload)}.{_b64(_mac(key or approval_key(), payload))}", approval


def read_token(token: str, now_ms: int, key: bytes | None = None) -> Approval:
    """The :class:`Approval` a token grants. 403 ``invalid_token`` unless this API signed it exactly so
    (tampered, forged, truncated, signed with another key); 410 ``token_expired`` once it has expired."""
    invalid = ApiError(403, "invalid_token", "the approval token is not valid")
    body, _, tag = token.partition(".")
    try:
        payload, mac = _unb64(body), _unb64(tag)
    except (ValueError, binascii.Error):
        raise invalid from None
    if not hmac.compare_digest(mac, _mac(key or approval_key(), payload)):
        raise invalid
    try:
        doc: Any = json.loads(payload)
    except (ValueError, RecursionError):
        raise invalid from None
    if not (
        isinstance(doc, dict)
        and set(doc) - {"i"} == {"r", "e", "x", "n"}
        and all(isinstance(doc[k], str) for k in ("r", "e", "n"))
        and isinstance(doc["x"], int)
        and (type(doc.get("i", 0)) is int and doc.get("i", 0) >= 0)
    ):
        raise invalid
    if now_ms >= doc["x"]:
        raise ApiError(410, "token_expired", "the approval token has expired")
    return Approval(doc["r"], doc["e"], doc["x"], doc["n"], doc.get("i"))


# ------------------------------------------------------------------------------ the signing key
_key_lock = threading.Lock()
_key: bytes | None = None


def _secrets_client() -> Any:
    import boto3

    return boto3.client("secretsmanager")


def approval_key(env: Mapping[str, str] | None = None, client_factory: Callable[[], Any] | None = None) -> bytes:
    """The token signing key: the Secrets Manager secret, read on first use and cached for the life of
    the execution environment. A failed read raises (500) and is retried on the next request; a
    configured secret is never replaced by a weaker key."""
    global _key
    if _key is not None:
        return _key
    env = os.environ if env is None else env
    arn = env.get("STEPCHAIN_APPROVAL_KEY_SECRET_ARN")
    if not arn:
        return (env.get("STEPCHAIN_APPROVAL_KEY") or _LOCAL_KEY).encode()
    with _key_lock:
        if _key is None:
            secret = (client_factory or _secrets_client)().get_secret_value(SecretId=arn)["SecretString"]
            if len(secret) < 32:
                raise RuntimeError("the approval key secret is shorter than 32 characters")
            _key = secret.encode()
        return _key


def reset_approval_key() -> None:
    """Forget the cached key (tests; a rotated secret takes effect in new execution environments)."""
    global _key
    _key = None
