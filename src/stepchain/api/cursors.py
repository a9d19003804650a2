"""List cursors: the store's cursor wrapped with the query it belongs to and signed by this API."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json

from stepchain.api.errors import ApiError
from stepchain.api.security import cursor_key
from stepchain.store.records import RunStatus


def cursor_mac(payload: bytes) -> bytes:
    """HMAC-SHA256 (truncated to 16 bytes) of a cursor, keyed by :func:`~stepchain.api.security.cursor_key`.

    Deployed, the key is a generated Secrets Manager secret (``STEPCHAIN_CURSOR_KEY_SECRET_ARN``): a
    cursor this API did not issue is refused before it reaches the store. Locally ``STEPCHAIN_CURSOR_KEY``,
    else a public constant: that still rejects any cursor that was edited or made up without reading
    this code, and the store checks a cursor's shape itself."""
    return hmac.new(cursor_key(), payload, hashlib.sha256).digest()[:16]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_cursor(workflow: str, status: RunStatus | None, inner: str | None) -> str | None:
    if inner is None:
        return None
    doc = json.dumps({"w": workflow, "s": status.value if status else None, "c": inner}, separators=(",", ":"))
    return f"{b64(doc.encode())}.{b64(cursor_mac(doc.encode()))}"


def decode_cursor(cursor: str, workflow: str, status: RunStatus | None) -> str:
    """The store's cursor inside an API cursor: signed by this API, for this same query."""
    forged = ApiError(400, "invalid_cursor", "cursor is not one this API returned")
    body, _, mac = cursor.partition(".")
    try:
        payload, tag = unb64(body), unb64(mac)
    except (ValueError, binascii.Error):
        raise forged from None
    if not hmac.compare_digest(tag, cursor_mac(payload)):
        raise forged
    try:  # signed by us, but the key may be the public default: check the shape all the same
        doc = json.loads(payload)
    except (ValueError, RecursionError):
        raise forged from None
    if not (isinstance(doc, dict) and set(doc) == {"w", "s", "c"} and isinstance(doc["c"], str)):
        raise forged
    if doc["w"] != workflow or doc["s"] != (status.value if status else None):
        raise ApiError(400, "invalid_cursor", "cursor belongs to a different query (workflow/status changed)")
    return doc["c"]


def is_cursor_rejection(exc: Exception) -> bool:
    """A forged cursor that decodes but that the store cannot use (a bad key, a DynamoDB ValidationException)."""
    if isinstance(exc, ValueError | KeyError | TypeError):
        return True
    response = getattr(exc, "response", None)
    return isinstance(response, dict) and response.get("Error", {}).get("Code") == "ValidationException"


__all__ = ["b64", "cursor_mac", "decode_cursor", "encode_cursor", "is_cursor_rejection", "unb64"]
