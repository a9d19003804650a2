"""What keeps the runs API from handing out more than it should.

* :func:`redact` / :func:`redact_error`: a step's error is stored and logged in full, but what the API
  returns of it (run view, step view, list, and every error body) has AWS account ids, ARNs, access key
  ids, provider keys, URL passwords, table names, paths and secret-looking tokens replaced by
  ``<redacted:...>`` markers (the one pattern set: ``stepchain.api.redaction``). The response models apply
  it (``stepchain.api.models``), so no route can forget it.
* :func:`output_url_ttl_s`: the lifetime of presigned output URLs (``STEPCHAIN_OUTPUT_URL_TTL_S``, default
  300 s, at most :data:`~stepchain.store.payloads.MAX_URL_TTL_S`); the URLs are SigV4 (``stepchain.store.payloads``).
* :func:`check_input_size`: a run input (start or redrive) over ``STEPCHAIN_MAX_INPUT_BYTES`` is a 413.
* :func:`cursor_key`: the key that signs list cursors, read once per execution environment from the
  Secrets Manager secret named by ``STEPCHAIN_CURSOR_KEY_SECRET_ARN`` (template.yaml generates it); without
  that, ``STEPCHAIN_CURSOR_KEY``; a public constant only in the explicit local mode (:class:`SigningKey`).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

from stepchain.api.redaction import redact
from stepchain.define.limits import RunLimits
from stepchain.exceptions import ValidationError
from stepchain.settings import env_int
from stepchain.store.payloads import DEFAULT_URL_TTL_S, MAX_URL_TTL_S

__all__ = [
    "check_input_size",
    "cursor_key",
    "output_url_ttl_s",
    "redact",
    "redact_error",
    "reset_cursor_key",
]


def redact_error(error: Mapping[str, str] | None) -> dict[str, str] | None:
    """A stored error (``{"node", "type", "message", ...}``) as the API may show it."""
    return None if error is None else {k: redact(str(v)) for k, v in error.items()}


def output_url_ttl_s(env: Mapping[str, str] | None = None) -> int:
    """Seconds a presigned output URL is valid (``STEPCHAIN_OUTPUT_URL_TTL_S``)."""
    try:
        return env_int("STEPCHAIN_OUTPUT_URL_TTL_S", DEFAULT_URL_TTL_S, high=MAX_URL_TTL_S, env=env)
    except ValidationError as exc:  # the deployment's configuration, not the caller's request: a 500
        raise RuntimeError(str(exc)) from None


def check_input_size(value: Any, limits: RunLimits | None = None) -> None:
    """Raise :class:`~stepchain.exceptions.LimitExceeded` (413) when a run input is too large."""
    limits = limits or RunLimits.from_env()
    if limits.max_input_bytes is None:
        return
    try:
        data = json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError):
        return  # not storable at all: the payload codec refuses it with its own error
    limits.check_input_bytes(len(data))


# ------------------------------------------------------------------------------ signing keys
#: makes the Secrets Manager client (tests inject one)
SecretsClientFactory = Callable[[], Any]


def _secrets_client() -> Any:
    import boto3

    return boto3.client("secretsmanager")


class SigningKey:
    """An HMAC key of the API (list cursors, approval tokens): the Secrets Manager secret named by the
    ``arn_env`` variable, read on first use, then cached for the life of the execution environment. A
    failed read raises (the API answers 500) and is retried on the next request: a configured secret is
    never silently replaced by a weaker key. Without ``arn_env``: :meth:`fallback`."""

    def __init__(self, what: str, arn_env: str, key_env: str, local: str) -> None:
        self.what, self.arn_env, self.key_env, self.local = what, arn_env, key_env, local
        self.cached: bytes | None = None
        self._lock = threading.Lock()

    def __call__(
        self, env: Mapping[str, str] | None = None, client_factory: SecretsClientFactory | None = None
    ) -> bytes:
        if self.cached is not None:
            return self.cached
        env = os.environ if env is None else env
        arn = env.get(self.arn_env)
        if not arn:
            return self.fallback(env)
        with self._lock:
            if self.cached is None:
                secret = (client_factory or _secrets_client)().get_secret_value(SecretId=arn)["SecretString"]
                if len(secret) < 32:
                    raise RuntimeError(f"the {self.what} key secret is shorter than 32 characters")
                self.cached = secret.encode()
            return self.cached

    def fallback(self, env: Mapping[str, str]) -> bytes:
        """The key without a secret: ``key_env`` (at least 32 characters), else, in the explicit local
        mode only (``STEPCHAIN_OWNERSHIP=local``), the public constant. Anything else refuses to serve
        (:class:`~stepchain.api.identity.ConfigurationError`): a deployment never signs with a constant."""
        from stepchain.api.identity import ConfigurationError, ownership_mode

        value = env.get(self.key_env)
        local = ownership_mode(env) == "local"
        if value and (local or len(value) >= 32):
            return value.encode()
        if local:
            return self.local.encode()
        raise ConfigurationError(
            f"no {self.what} signing key: set {self.arn_env} (a Secrets Manager secret) or {self.key_env}"
            " (32+ characters); the public local key is used only with STEPCHAIN_OWNERSHIP=local"
        )

    def configured(self, env: Mapping[str, str]) -> None:
        """Raise :class:`~stepchain.api.identity.ConfigurationError` unless this key can be had (a secret
        is named, or :meth:`fallback` works), without reading the secret."""
        if not env.get(self.arn_env):
            self.fallback(env)

    def reset(self) -> None:
        """Forget the cached key (tests; a rotated secret takes effect in new execution environments)."""
        self.cached = None


#: the list-cursor key (its public local constant is documented in app.py)
CURSOR_KEY = SigningKey("cursor", "STEPCHAIN_CURSOR_KEY_SECRET_ARN", "STEPCHAIN_CURSOR_KEY", "stepchain-cursor-v1")


def cursor_key(env: Mapping[str, str] | None = None, client_factory: SecretsClientFactory | None = None) -> bytes:
    """The list-cursor signing key (:class:`SigningKey`)."""
    return CURSOR_KEY(env, client_factory)


def reset_cursor_key() -> None:
    CURSOR_KEY.reset()
