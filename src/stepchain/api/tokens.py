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
environment value or in a log. Without that variable the key is ``STEPCHAIN_APPROVAL_KEY`` (32+
characters); the fixed public constant (tokens forgeable by anyone who reads this code) is used only in
the explicit local mode (``STEPCHAIN_OWNERSHIP=local``): otherwise the API refuses to serve.

Single use is the store's job (``CheckpointStore.spend_token``, one conditional put of ``T#<id>``): see
``stepchain.api.approvals``.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stepchain.api.cursors import b64, unb64
from stepchain.api.errors import ApiError
from stepchain.api.security import SecretsClientFactory, SigningKey

__all__ = ["Approval", "approval_key", "mint_token", "read_token", "reset_approval_key"]

_DOMAIN = b"stepchain-approval-v1\0"
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
    return f"{b64(payload)}.{b64(_mac(key or approval_key(), payload))}", approval


def read_token(token: str, now_ms: int, key: bytes | None = None) -> Approval:
    """The :class:`Approval` a token grants. 403 ``invalid_token`` unless this API signed it exactly so
    (tampered, forged, truncated, signed with another key); 410 ``token_expired`` once it has expired."""
    invalid = ApiError(403, "invalid_token", "the approval token is not valid")
    body, _, tag = token.partition(".")
    try:
        payload, mac = unb64(body), unb64(tag)
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
APPROVAL_KEY = SigningKey(
    "approval", "STEPCHAIN_APPROVAL_KEY_SECRET_ARN", "STEPCHAIN_APPROVAL_KEY", "stepchain-approval-local-v1"
)


def approval_key(env: Mapping[str, str] | None = None, client_factory: SecretsClientFactory | None = None) -> bytes:
    """The token signing key (:class:`~stepchain.api.security.SigningKey`, like the cursor key)."""
    return APPROVAL_KEY(env, client_factory)


def reset_approval_key() -> None:
    APPROVAL_KEY.reset()
