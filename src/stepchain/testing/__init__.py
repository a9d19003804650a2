"""Test stepchain workflows the way stepchain tests itself: in-process, virtual time, injected crashes.

Four harnesses, one interface (same names, same arguments, same results):

* ``Harness(*workflows, backend="memory"|"moto")``: the engine with the in-memory store (default,
  fast: the same store contract as DynamoDB) or the real DynamoDB and S3 adapters on moto,
  activations in an in-process time-ordered queue. ``SqsHarness``/``SfnHarness`` default to moto.
* ``SqsHarness(...)``: activations travel over moto SQS queues (one per node, a DLQ), served by
  the deployed SQS worker (``handle_sqs_batch``) in batches, with visibility timeouts.
* ``SfnHarness(...)``: the generated state machine runs in moto's Step Functions interpreter;
  each task is served by the deployed Step Functions worker (``handle_sfn_task``). Every registered
  workflow gets its state machine, the child workflows of ``call``/``parallel`` nodes included.
* ``LocalHarness("pkg.module:wf", ...)``: the embedded runtime (:mod:`stepchain.runtimes.local`): moto's
  server on 127.0.0.1, worker processes serving the SQS queue, in REAL time; a crash makes the
  worker process exit at the boundary and a fresh one takes over. No ``clock``/``invocations``.

Constructor (the first three; ``LocalHarness`` takes ``budget_ms`` and ``duplicate_delivery``):
``budget_ms`` (each invocation's limit; default: the node's ``timeout_s``), ``inline_limit``
(bytes kept inline before the S3 claim-check), ``duplicate_delivery`` (every activation is
delivered twice; on Step Functions every task is invoked twice, the first result lost),
``virtual_sleep`` (``time.sleep`` in a step spends virtual time). Time is virtual: sleeps,
waits, retry backoffs and redeliveries skip; a step spends time with ``time.sleep(s)`` (``await
asyncio.sleep(s)`` in an ``async def`` step: its event loop runs on the virtual clock) or
``h.clock.advance(ms)`` and is killed past its budget.

Methods (all four):

* ``start(workflow, input=None, *, idempotency_key=None) -> run_id``: what ``POST /runs`` does.
* ``send_event(run_id, name, payload=None, *, iteration=None) -> "delivered" | "buffered"``: ``iteration``
  names the loop iteration whose wait the event is for (idempotent per event and iteration); a wait
  inside a loop needs it once the run is past its first iteration's wait (``EventIterationError``).
* ``waiting_for(run_id) -> {"event": name, "iteration": n} | None``: what the run waits for.
* ``cancel(run_id)``; ``redrive(run_id, *, input=None, replace_input=False, keep_progress=None)``.
* ``fork(run_id, node, *, iteration=0, input=None, replace_input=False, state=None,
  idempotency_key=None) -> run_id``: what ``POST /runs/{id}/fork`` does (a new run from ``node``).
* ``run(run_id=None) -> status``: deliver everything that is due, skipping virtual time to
  each next delivery, until nothing moves on its own (the runs ended, or wait for an event).
  Returns the status of ``run_id`` (default: the run started last), as ``status`` does.
  ``Harness``/``SqsHarness`` also take ``max_activations`` and ``until_ms``; ``SfnHarness`` and
  ``LocalHarness`` take ``timeout_s`` (real seconds without progress before ``TimeoutError``).
* ``advance(seconds)``: let virtual time pass (real time on ``LocalHarness``); what falls due
  happens (a sleep ends, an event wait's deadline passes and fails its run). Time never skips to
  an event deadline by itself.
* ``status(run_id)`` (RUNNING, WAITING, SUCCEEDED, FAILED, CANCELLED), ``output(run_id)``
  (AssertionError unless SUCCEEDED), ``view(run_id)`` (the ledger, as ``GET /runs/{id}``),
  ``runs()`` (every run id the store holds, also runs whose ``start`` crashed).
* ``crash_at(boundary, *, node=None, times=1, skip=0)``: the worker dies (``InjectedCrash``) the
  next ``times`` times ``boundary`` is reached for ``node`` (a node id, which matches its map items
  ``node#00003`` and its loop iterations ``node~00002`` too, or one item's or iteration's key; None:
  any), after letting ``skip`` matches pass.
* ``executions``: completed executions of each node's code, by node key (map items
  ``node#00003``). ``invocations``: one ``InvocationLog`` per invocation served (not on
  ``LocalHarness``).
* ``effects``: real executions of ``ctx.once`` effect functions by ``"<node key>/<operation id>"``,
  counted when the effect returns, so also when the worker dies right after (see effect_window).
* ``sweep() -> int``: run the recovery sweeper once at the current virtual time; returns how many
  activations it re-issued or runs it failed.

Crash boundaries (``BOUNDARIES``) and the node key each reports (what ``node=`` matches):

* ``after_claim``: the claim of a node is written, its code has not run. Key: the step, the map
  item (``square#00002``), the map fanning out, the sleep or the wait node claimed.
* ``mid_item``: inside a step, before ``ctx.each`` item ``i`` runs; earlier items are
  checkpointed. Key: the step (or map item) running the loop.
* ``item_window``: a ``ctx.each`` item function returned, its result is not checkpointed yet
  (the item runs again). Key: as for ``mid_item``.
* ``effect_window``: a ``ctx.once`` effect function returned, its result is not checkpointed
  yet (the effect runs again on the next attempt, which sees the in-progress marker). Key: the
  step (or map item) calling ``once``.
* ``after_checkpoint``: a node's output is checkpointed, its successor is not handed off yet.
  Key: the node checkpointed (a step, a map item, the map at its join, a sleep or wait ending).
* ``before_handoff``: an activation is about to be sent. Key: the node being ACTIVATED (the
  successor, not the node that finished); also the first node inside ``start``.
* ``api_start``, ``api_event``, ``api_cancel``, ``api_redrive``: the API side dies inside that
  call after its first durable write, before it finished (no handoff sent); the harness call
  raises ``InjectedCrash`` to the test, and ``sweep()`` (or a client retry) must finish the work.
  Key: the node the call is about: start, the first node; event, the wait node; cancel and
  redrive, the run's current (top) node.
* ``api_fork_copy``, ``api_fork``: ``fork`` dies after a transaction of copies (no run yet:
  nothing visible), or after the fork's run and first node are written (its first activation not
  sent: the sweeper or a retry with the same idempotency key sends it). Key: the fork's chosen
  node (``think~00002``).

A worker killed at a worker-side boundary is redelivered after its lease ran out, as a queue
would after its visibility timeout (Step Functions: the task's Retry; ``LocalHarness``: the real
queue's visibility timeout, ``budget_ms`` + 3 s).
"""

from stepchain.testing.clock import InvocationTimeout, VirtualClock, VirtualLambdaContext
from stepchain.testing.harness import Harness, InvocationLog, moto_aws
from stepchain.testing.local_driver import LocalHarness
from stepchain.testing.probe import (
    API_BOUNDARIES,
    BOUNDARIES,
    FORK_BOUNDARIES,
    WORKER_BOUNDARIES,
    HarnessProbe,
    InjectedCrash,
)
from stepchain.testing.sfn_driver import SfnHarness
from stepchain.testing.sqs_driver import SqsHarness

__all__ = [
    "API_BOUNDARIES",
    "BOUNDARIES",
    "FORK_BOUNDARIES",
    "WORKER_BOUNDARIES",
    "Harness",
    "HarnessProbe",
    "InjectedCrash",
    "InvocationLog",
    "InvocationTimeout",
    "LocalHarness",
    "SfnHarness",
    "SqsHarness",
    "VirtualClock",
    "VirtualLambdaContext",
    "moto_aws",
]
