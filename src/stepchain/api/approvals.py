"""Approvals as capabilities: the two approval routes (included into ``stepchain.api.app``).

    POST /runs/{run_id}/approvals   {"event": "approval", "ttl_s": 3600, "iteration": 2}   mint a token   201
    POST /approvals/{token}         body: the event's payload (any JSON)   use it once    202

Minting is a run route: only the run's owner or an operator may mint (``stepchain.api.ownership``),
for an event the run's workflow waits for, on an active run. Using a token needs no permission on
the run at all: the token is the permission (bound to one run, one event name, the loop iteration
whose wait it is for, and an expiry, signed
with a key from Secrets Manager: ``stepchain.api.tokens``). So an approver whose IAM policy allows
only ``execute-api:Invoke`` on ``POST /approvals/*`` can approve, and cannot list, read, cancel or
redrive anything.

The iteration: the one given at minting (409 ``event_iteration_unknown`` if the wait never has it,
``event_iteration_passed`` if the run is past it without the event), else the one the run waits in
now or reaches next (0 for a wait outside a loop); the answer says which. Using the token delivers
the event for that iteration only (``RunService.deliver_event(..., iteration=)``): a token minted
for iteration 2 never approves iteration 3, however late it is used.

Using a token, in order: the signature (403 ``invalid_token``: tampered, forged, or signed for
another deployment), the expiry (410 ``token_expired``), the run (404 if it is gone), then the
single-use record: ONE conditional put of ``T#<token id>`` in the run's partition. A replay finds it
and gets 409 ``token_used``, unless the run holds no such event yet: the first use then died between
spending the token and storing the event, and this use finishes it. The event item itself is
conditional too (``put_event``), so whatever interleaving of uses, crashes and retries happens, the
event is stored once: a token never delivers two events, and never a second payload (409).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Annotated, Any, cast

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.depends import Depends
from aws_lambda_powertools.event_handler.openapi.params import Body, Path
from pydantic import BaseModel, ConfigDict, Field

from stepchain.api.errors import ApiError
from stepchain.api.models import EVENT_PATTERN, RUN_ID_PATTERN, ErrorResponse
from stepchain.api.tokens import TOKEN_PATTERN, mint_token, read_token
from stepchain.define.workflow import NodeKind
from stepchain.engine import Engine
from stepchain.engine.events import event_target, mint_iteration
from stepchain.engine.routing import event_key
from stepchain.engine.runs import RunService
from stepchain.exceptions import InvalidRunState, RunNotFound

__all__ = ["MAX_TTL_S", "router"]

#: the longest a token may live (7 days)
MAX_TTL_S = 7 * 86400

router = Router()  # type: ignore[no-untyped-call]


def _runs() -> RunService:
    return cast(Engine, router.context["engine"]).runs


RunsDep = Annotated[RunService, Depends(_runs)]


class MintApproval(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event: str = Field(pattern=EVENT_PATTERN, description="The event name the run's wait step waits for.")
    ttl_s: int = Field(default=3600, ge=1, le=MAX_TTL_S, description="Seconds until the token expires.")
    iteration: int | None = Field(
        default=None,
        ge=0,
        le=2**31,
        description="The loop iteration whose wait the token is for; default: the one the run waits in (or next).",
    )


class ApprovalToken(BaseModel):
    run_id: str
    event: str
    iteration: int = Field(description="The loop iteration whose wait the token delivers to (0 outside loops).")
    token: str = Field(description="Single use. Whoever holds it can deliver this event once: share it as a secret.")
    expires_ms: int
    approve: str = Field(description="POST the event's payload here (no other permission needed).")


class ApprovalAccepted(BaseModel):
    run_id: str
    event: str
    iteration: int | None = Field(default=None, description="The loop iteration the token is bound to.")
    status: str = Field(description="delivered (the wait completed) or buffered (the run is not waiting yet)")


def _responses(status: int, description: str, *errors: int) -> dict[int, Any]:
    json_error = {content_types.APPLICATION_JSON: {"model": ErrorResponse}}
    return {
        status: {"description": description},
        **{c: {"description": HTTPStatus(c).phrase, "content": json_error} for c in (500, *errors)},
    }


def _prefix() -> str:
    """The stage API Gateway put before the resource path (``/v1``), as in ``stepchain.api.app``."""
    event = router.current_event
    full, path = (event.raw_event.get("requestContext") or {}).get("path") or "", event.path or ""
    return full[: -len(path)] if path and full.endswith(path) else ""


@router.post(
    "/runs/<run_id>/approvals",
    summary="Mint a single-use approval token for one event of the run",
    operation_id="mintApproval",
    responses=_responses(201, "Minted", 400, 404, 409, 413, 415, 422),
    status_code=201,
)
def mint_approval(
    runs: RunsDep,
    run_id: Annotated[str, Path(pattern=RUN_ID_PATTERN, description="24 lowercase hex characters.")],
    body: Annotated[MintApproval, Body()],
) -> Response[ApprovalToken]:
    run = runs.get_run(run_id)  # the ownership guard has already let this caller through
    if run.status.finished:
        raise InvalidRunState(f"run {run_id} is {run.status.value}; it takes no events")
    wf = runs.registry.find(run.workflow, run.version)
    if wf is None or not any(n.kind is NodeKind.WAIT and n.event == body.event for n in wf.nodes):
        raise ApiError(
            404, "event_not_found", f"workflow {run.workflow!r} does not wait for an event named {body.event!r}"
        )
    wait = wf.wait_node(body.event)
    if body.iteration is None:
        it = mint_iteration(runs.store, wf, run_id, wait)
    else:  # 409 for an iteration this wait never has, or one the run is past without the event
        it = event_target(runs.store, wf, run_id, wait, body.iteration)
    token, grant = mint_token(run_id, body.event, runs.clock.now_ms() + body.ttl_s * 1000, iteration=it)
    out = ApprovalToken(
        run_id=run_id,
        event=body.event,
        iteration=it,
        token=token,
        expires_ms=grant.expires_ms,
        approve=f"{_prefix()}/approvals/{token}",
    )
    return Response(status_code=201, content_type=content_types.APPLICATION_JSON, body=out)


@router.post(
    "/approvals/<token>",
    summary="Deliver the event an approval token is for (once)",
    operation_id="approve",
    responses=_responses(
        202, "Delivered, or buffered until the run reaches the wait", 400, 403, 404, 409, 410, 413, 415
    ),
    status_code=202,
)
def approve(
    runs: RunsDep,
    token: Annotated[str, Path(pattern=TOKEN_PATTERN, description="A token from POST /runs/{run_id}/approvals.")],
    payload: Annotated[
        Any | list[Any], Body(description="The event's payload (any JSON); an empty body is null.")
    ] = None,
) -> ApprovalAccepted:
    now = runs.clock.now_ms()
    grant = read_token(token, now)  # 403 invalid, 410 expired
    if runs.store.get_run(grant.run_id) is None:
        raise RunNotFound(f"no run {grant.run_id!r}")
    spent = runs.store.spend_token(grant.run_id, grant.token_id, now, grant.expires_ms // 1000 + 86400)
    if not spent and runs.store.get_event(grant.run_id, event_key(grant.event, grant.iteration or 0)) is not None:
        raise ApiError(409, "token_used", "the approval token has already been used")
    result = runs.deliver_event(grant.run_id, grant.event, payload, iteration=grant.iteration)
    status = "delivered" if result == "delivered" else "buffered"
    return ApprovalAccepted(run_id=grant.run_id, event=grant.event, iteration=grant.iteration, status=status)
