"""``GET /runs/{run_id}/stream``: the run's progress stream (included into ``stepchain.api.app``).

Events come oldest first with their sequence number ``seq``; ask again with ``after=<the last seq>``
to resume (after a disconnect too): the sequence is gap-free and an event never appears below a
sequence a reader has already passed, so nothing is lost or repeated (``stepchain.store.stream``).
With ``wait_s`` the call long-polls while the run is RUNNING: it returns as soon as there is an
event, or after ``wait_s`` seconds with none (one query per :data:`POLL_S`); a run that is not
RUNNING (finished, or waiting for an event or a timer) answers at once: poll it again after a
pause. ``finished``: the run has ended, and a page with no events after it ends the stream.
A run route: the owner or an operator, else 404.
"""

from __future__ import annotations

import time
from http import HTTPStatus
from typing import Annotated, Any, cast

from aws_lambda_powertools.event_handler import content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.depends import Depends
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from pydantic import BaseModel, Field

from stepchain.api.models import RUN_ID_PATTERN, ErrorResponse
from stepchain.clock import Clock
from stepchain.engine import Engine
from stepchain.engine.runs import RunService
from stepchain.store.records import RunStatus
from stepchain.store.stream import read_events

__all__ = ["MAX_WAIT_S", "POLL_S", "router"]

#: the longest long-poll (API Gateway ends a request at 29 s)
MAX_WAIT_S = 20
#: how often a long-poll reads the stream again
POLL_S = 0.25

router = Router()  # type: ignore[no-untyped-call]


def _runs() -> RunService:
    return cast(Engine, router.context["engine"]).runs


RunsDep = Annotated[RunService, Depends(_runs)]


class StreamEventModel(BaseModel):
    seq: int = Field(description="The event's position in the run's stream: 1, 2, 3, ... without gaps.")
    id: str = Field(description="Stable across re-runs of the operation that emitted it.")
    kind: str = Field(description="The kind given to ctx.emit, or node.started/succeeded/failed/... (lifecycle).")
    data: Any = None
    node: str | None = Field(default=None, description="The key of the step (or map item) that emitted it.")
    at: int = Field(description="When it was emitted (ms since the epoch).")


class StreamPage(BaseModel):
    run_id: str
    events: list[StreamEventModel]
    next: int = Field(description="Pass as after= to read on: the last seq returned, else the after given.")
    finished: bool = Field(description="The run has ended: an empty page after it ends the stream.")


def _responses(status: int, description: str, *errors: int) -> dict[int, Any]:
    json_error = {content_types.APPLICATION_JSON: {"model": ErrorResponse}}
    return {
        status: {"description": description},
        **{c: {"description": HTTPStatus(c).phrase, "content": json_error} for c in (500, *errors)},
    }


@router.get(
    "/runs/<run_id>/stream",
    summary="The run's progress stream after a sequence number (long-poll with wait_s)",
    operation_id="getRunStream",
    responses=_responses(200, "Events after `after`, oldest first", 400, 404),
)
def get_stream(
    runs: RunsDep,
    run_id: Annotated[str, Path(pattern=RUN_ID_PATTERN, description="24 lowercase hex characters.")],
    after: Annotated[int, Query(ge=0, le=10**12, description="The last seq already read (0: from the start).")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    wait_s: Annotated[float, Query(ge=0, le=MAX_WAIT_S, description="Long-poll up to this long for an event.")] = 0,
) -> StreamPage:
    deadline = runs.clock.monotonic_ms() + wait_s * 1000
    while True:
        run = runs.get_run(run_id)  # 404 for an unknown run (the ownership guard ran before)
        events = read_events(runs.store, run_id, after=after, limit=limit)
        if events or run.status is not RunStatus.RUNNING or runs.clock.monotonic_ms() + POLL_S * 1000 > deadline:
            break
        _pause(runs.clock, POLL_S)
    page = [StreamEventModel.model_validate(e.to_dict()) for e in events]
    last = events[-1].seq if events else after
    return StreamPage(run_id=run_id, events=page, next=last, finished=run.status.finished)


def _pause(clock: Clock, seconds: float) -> None:
    advance = getattr(clock, "advance", None)  # a virtual clock (the harnesses): its time passes at once
    if callable(advance):
        advance(seconds * 1000)
    else:
        time.sleep(seconds)
