"""Who may see a run, in the store: the owner fields of a RUN item, idempotency keys scoped per
caller, and single-use approval token records. Shared by both adapters (``memory``, ``dynamodb``).

* A run started by a caller (``NewRun.owner``) stores ``owner`` (the caller's identity) and, in
  DynamoDB, ``owner_pk`` = ``OWN#<sha256(owner)[:32]>#<workflow>``: the hash key of the sparse
  ``owner`` index (range key ``gsi1sk``, the same ``<created>#<run id>`` as ``gsi1``), so a caller's
  listing is one Query on their own runs, never a filtered read of everyone's. Runs without an
  owner (started before ownership, or by a harness) are not in that index.
* An idempotency key is stored as ``IDEM#<workflow>#<key>`` without an owner (the old layout) and as
  ``IDEM#<workflow>#O#<sha256(owner)[:32]>#<key>`` with one: caller B's key never meets caller A's
  (the owner is hashed, so no key text can forge another caller's prefix: keys hold no ``#``).
* A spent approval token is a ``T#<token id>`` item in its run's partition, written with a
  conditional put (``attribute_not_exists``): the first use wins, a replay finds it.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import GlobalSecondaryIndexTypeDef

OWNER_INDEX = "owner"
OWNER_PK = "owner_pk"


def owner_hash(owner: str) -> str:
    return hashlib.sha256(owner.encode()).hexdigest()[:32]


def owner_pk(owner: str, workflow: str) -> str:
    """The ``owner`` index hash key of ``owner``'s runs of ``workflow``."""
    return f"OWN#{owner_hash(owner)}#{workflow}"


def idem_pk(workflow: str, key: str, owner: str | None) -> str:
    """Where an idempotency key is recorded: per workflow, and per caller when the run has an owner."""
    return f"IDEM#{workflow}#{key}" if owner is None else f"IDEM#{workflow}#O#{owner_hash(owner)}#{key}"


def owner_fields(owner: str | None, workflow: str) -> dict[str, Any]:
    """The RUN item fields that record ``owner`` (none for a run without one)."""
    return {} if owner is None else {"owner": owner, OWNER_PK: owner_pk(owner, workflow)}


def token_sk(token_id: str) -> str:
    return f"T#{token_id}"


#: the ``owner`` GSI as ``create_table`` declares it (template: sam_base.yaml, the same)
OWNER_GSI: GlobalSecondaryIndexTypeDef = {
    "IndexName": OWNER_INDEX,
    "KeySchema": [
        {"AttributeName": OWNER_PK, "KeyType": "HASH"},
        {"AttributeName": "gsi1sk", "KeyType": "RANGE"},
    ],
    "Projection": {"ProjectionType": "ALL"},
}

__all__ = ["OWNER_GSI", "OWNER_INDEX", "OWNER_PK", "idem_pk", "owner_fields", "owner_hash", "owner_pk", "token_sk"]
