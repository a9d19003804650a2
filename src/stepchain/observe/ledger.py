"""The run record a person reads: per-node ledger, totals, and the restart tax avoided.

*Restart tax*: what a naive retry-from-scratch would have paid again. At every point where a
worker died and the run resumed from a checkpoint (a crash event), a naive loop would have
re-run all work completed before that moment; stepchain re-ran none of it. We add that up in
seconds of compute and in dollars (recorded step costs plus Lambda compute).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from typing import Any

from stepchain.define.state import view_of
from stepchain.define.workflow import Registry, Workflow
from stepchain.observe.fusion_saved import fusion_saved
from stepchain.observe.pricing import Prices, load_prices
from stepchain.store.base import CheckpointStore
from stepchain.store.payloads import PayloadCodec
from stepchain.store.records import (
    CrashEvent,
    EachRecord,
    Invocation,
    NodeRecord,
    NodeStatus,
    RunRecord,
    RunStatus,
    full_history,
    node_key,
)

#: Lambda on-demand price (x86, us-east-1): per GB-second and per request
LAMBDA_GB_SECOND_USD = 0.0000166667
LAMBDA_REQUEST_USD = 0.0000002


def compute_usd(duration_ms: int, invocations: int, memory_mb: int) -> float:
    return duration_ms / 1000 * memory_mb / 1024 * LAMBDA_GB_SECOND_USD + invocations * LAMBDA_REQUEST_USD


@dataclass
class NodeView:
    key: str
    node: str
    kind: str
    status: str
    index: int | None
    attempts: int
    invocations: int
    crashes: int
    checkpoint_hits: int
    resumed: bool
    duration_ms: int
    started_ms: int | None
    ended_ms: int | None
    cost_usd: float
    compute_usd: float
    input_tokens: int
    output_tokens: int
    output_bytes: int
    offloaded: bool
    items_checkpointed: int
    error: dict[str, str] | None
    history: list[dict[str, Any]]
    effect_reruns: int = 0  # ctx.once effects run again (an earlier attempt never checkpointed them)
    requests: dict[str, int] = field(default_factory=dict)  # AWS requests by counter (stepchain.requests)
    orchestration_usd: float = 0.0  # their price, Lambda's request charge excepted (in compute_usd)
    items: list[NodeView] = field(default_factory=list)
    iteration: int = 0  # the loop iteration (each iteration of a node is its own row)
    route: str | None = None  # the successor a routing step chose
    copied_from: str | None = None  # a fork's copy of this checkpoint of run ``copied_from`` (not run here)
    fused: bool = False  # it ran inline after its predecessor (stepchain.engine.fusion): no handoff, no claim
    #: a step held by a concurrency / rate limit (stepchain.engine.limits): its limit, key and expected start
    throttled: dict[str, Any] | None = None


@dataclass
class RestartTax:
    crashes: int
    seconds: float
    usd: float


@dataclass
class RunView:
    run_id: str
    workflow: str
    version: str
    status: str
    created_ms: int
    updated_ms: int
    ended_ms: int | None
    current: str | None
    error: dict[str, str] | None
    redrives: int
    nodes: list[NodeView]
    totals: dict[str, Any]
    restart_tax_avoided: RestartTax
    crash_events: list[dict[str, Any]]
    #: a child run's parent (``<parent run id>/<node key>/<branch>``)
    parent: str | None = None
    #: child runs of call/parallel nodes (engine/nodes/views.py: each kind's rows): their totals are in ``totals``
    children: list[dict[str, Any]] = field(default_factory=list)
    #: the run's durable state (:mod:`stepchain.define.state`): inline, or ``{"blob", "bytes"}`` when in S3
    state: Any = None
    #: a fork's origin ``{"run_id", "node", "iteration"}`` (stepchain.engine.fork)
    forked_from: dict[str, Any] | None = None
    #: what step fusion saved (:mod:`stepchain.observe.fusion_saved`), next to the restart tax
    fusion_saved: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunView:
        """The inverse of :meth:`to_dict` (extra keys, such as the API's links, are ignored)."""

        def node(n: dict[str, Any]) -> NodeView:
            kw = {k: n[k] for k in NodeView.__dataclass_fields__ if k in n and k != "items"}
            return NodeView(**kw, items=[node(i) for i in n.get("items", [])])

        kw = {k: d[k] for k in cls.__dataclass_fields__ if k in d and k not in ("nodes", "restart_tax_avoided")}
        return cls(
            **kw, nodes=[node(n) for n in d["nodes"]], restart_tax_avoided=RestartTax(**d["restart_tax_avoided"])
        )


def orchestration_usd(prices: Prices, counts: dict[str, int]) -> float:
    """What durability cost: DynamoDB, S3, SQS and Step Functions (Lambda's requests are compute)."""
    return round(sum(v for k, v in prices.cost(counts).items() if k != "lambda"), 9)


def run_requests(run: RunRecord, node_counts: dict[str, int]) -> dict[str, int]:
    """Requests of the run itself, made outside any node write (estimated): the start transaction
    (2 items, 2 units each) and the final run write on DynamoDB; an execution's first and last
    states on Step Functions."""
    extra: dict[str, int] = {}
    if node_counts.get("ddb_write"):
        extra.update(ddb_write=1 + (run.ended_ms is not None), ddb_wru=4 + (run.ended_ms is not None))
    if node_counts.get("sfn_transition"):
        extra["sfn_transition"] = 2 * (run.redrives + 1)
    return extra


def _node_view(
    rec: NodeRecord,
    kind: str,
    memory_mb: int,
    each: list[EachRecord],
    older: dict[int, Invocation],
    prices: Prices | None = None,
) -> NodeView:
    return NodeView(
        requests=dict(rec.requests),
        orchestration_usd=orchestration_usd(prices or load_prices(), rec.requests),
        key=rec.key,
        node=rec.node,
        kind=kind,
        status=rec.status.value,
        index=rec.index,
        attempts=rec.attempts,
        invocations=rec.invocations,
        crashes=rec.crashes,
        checkpoint_hits=rec.checkpoint_hits,
        resumed=rec.crashes > 0 or rec.checkpoint_hits > 0,
        duration_ms=rec.duration_ms,
        started_ms=rec.started_ms,
        ended_ms=rec.ended_ms,
        cost_usd=round(rec.cost_usd, 9),
        compute_usd=round(compute_usd(rec.duration_ms, rec.invocations, memory_mb), 9),
        input_tokens=rec.input_tokens,
        output_tokens=rec.output_tokens,
        output_bytes=PayloadCodec.size(rec.output_ref),
        offloaded=PayloadCodec.blob_key(rec.output_ref) is not None,
        items_checkpointed=len(each),
        effect_reruns=rec.effect_reruns,
        error=rec.error,
        history=[h.to_dict() for h in full_history(rec, older)],
        iteration=rec.iteration,
        route=rec.route,
        copied_from=rec.copied_from,
        fused=rec.fused,
        throttled=throttled_of(rec),
    )


def throttled_of(rec: NodeRecord) -> dict[str, Any] | None:
    """A RETRYING node held by a limit: ``{"limit", "key", "until_ms"}`` (its expected start, or its next
    try) and, for a concurrency limit, ``position`` in the key's queue."""
    e = rec.error or {}
    if rec.status is not NodeStatus.RETRYING or e.get("type") != "Throttled":
        return None
    out: dict[str, Any] = {"limit": e.get("limit", ""), "key": e.get("key", ""), "until_ms": int(e.get("until_ms", 0))}
    if "position" in e:  # a concurrency limit's queue: its place (0: next)
        out["position"] = int(e["position"])
    return out


#: memory assumed for the compute-cost ledger of a node whose workflow version is not registered
DEFAULT_MEMORY_MB = 512


def node_kind(rec: NodeRecord, wf: Workflow | None, maps: Collection[str] = ()) -> str:
    """A node's kind: from the workflow when this deployment registers the run's version, else
    from the record alone (a run on a retired version stays readable)."""
    if wf is not None and wf.has_node(rec.node):
        return wf.node(rec.node).kind.value
    if rec.index is not None or rec.items_total is not None or rec.node in maps:
        return "map"
    if rec.event_name is not None:
        return "wait"
    return "sleep" if rec.wake_at_ms is not None else "step"


def current_of(run: RunRecord, nodes: list[NodeView], wf: Workflow | None) -> str | None:
    """The key of the node the run is at (a step's commit does not write the run: no extra write):
    the one that failed (FAILED); else the latest node (in iteration and chain order) that runs,
    waits or is about to, or the successor of the latest one done; else the run's own ``current``."""
    if run.status is RunStatus.FAILED and run.error and run.error.get("node"):
        return str(run.error["node"])
    if run.status.finished or not nodes:
        return run.current or None
    last = nodes[-1]
    if last.status not in ("SUCCEEDED", "FAILED", "CANCELLED"):
        return last.key
    if last.status == "SUCCEEDED" and wf is not None and wf.has_node(last.node):
        from stepchain.engine.routing import successor  # the engine sits above the ledger

        nxt = successor(wf, wf.node(last.node), last.iteration, last.route)
        if nxt is not None:
            return node_key(nxt[0].id, None, nxt[1])
    return run.current or None


def describe(store: CheckpointStore, registry: Registry, run: RunRecord, prices: Prices | None = None) -> RunView:
    """The run's ledger. Works from the records alone when the run's version is not registered
    (node kinds inferred from the records, nodes in the order they were created). ``prices``:
    the AWS price table (default: :func:`stepchain.observe.pricing.load_prices`)."""
    prices = prices or load_prices()
    wf = registry.find(run.workflow, run.version)
    records = store.list_nodes(run.run_id)

    def memory_mb(node: str) -> int:
        return wf.node(node).memory_mb if wf is not None and wf.has_node(node) else DEFAULT_MEMORY_MB

    each = store.list_each_all(run.run_id) if any(r.invocations for r in records) else {}
    # nodes past their history window keep older invocations as H# items: one query for all
    older = store.list_history(run.run_id) if not all(r.history_complete for r in records) else {}
    crash_events = sorted((*run.crash_events, *store.list_crash_events(run.run_id)))
    generation = {r.key: r.generation for r in records}  # progress discarded by a redrive is not counted
    each = {k: [e for e in v if e.generation == generation.get(k, 0)] for k, v in each.items()}
    maps = {r.node for r in records if r.index is not None}
    views = [
        _node_view(
            rec, node_kind(rec, wf, maps), memory_mb(rec.node), each.get(rec.key, []), older.get(rec.key, {}), prices
        )
        for rec in records
    ]
    nodes, items = _tree(views, _order(wf, records))
    leaves = [v for v in nodes if not v.items] + items
    memory = {rec.key: memory_mb(rec.node) for rec in records}
    tax_s, tax_usd = _restart_tax(crash_events, leaves, each, memory)
    totals = _totals(run, nodes, leaves, len(crash_events))
    totals.update(_request_totals(run, records, prices))
    return RunView(
        run_id=run.run_id,
        workflow=run.workflow,
        version=run.version,
        status=run.status.value,
        created_ms=run.created_ms,
        updated_ms=run.updated_ms,
        ended_ms=run.ended_ms,
        current=current_of(run, nodes, wf),
        error=run.error,
        redrives=run.redrives,
        nodes=nodes,
        totals=totals,
        restart_tax_avoided=RestartTax(len(crash_events), round(tax_s, 3), round(tax_usd, 9)),
        crash_events=[c.to_dict() for c in crash_events],
        parent=run.parent,
        state=current_state(records, _order(wf, records)),
        forked_from=run.forked_from,
        fusion_saved=fusion_saved(records, prices),
    )


def current_state(records: list[NodeRecord], order: dict[str, int]) -> Any:
    """The durable state stored with the run's latest node (:func:`latest_state_ref`), as shown."""
    return view_of(latest_state_ref(records, order))


def latest_state_ref(records: list[NodeRecord], order: dict[str, int]) -> str | None:
    """The state reference stored with the run's latest node: the last loop iteration, then the last
    written, then the furthest down the chain (a waiting node holds the state it waits with)."""
    held = [r for r in records if r.state_ref is not None and r.index is None]
    if not held:
        return None

    def rank(r: NodeRecord) -> tuple[int, int, int]:
        return r.iteration, r.updated_ms or r.ended_ms or r.created_ms, order.get(r.node, -1)

    return max(held, key=rank).state_ref


def _order(wf: Workflow | None, records: list[NodeRecord]) -> dict[str, int]:
    """Node id -> its position: in the workflow, or (its version not registered) first created first."""
    if wf is not None:
        return {n.id: i for i, n in enumerate(wf.nodes)}
    first_seen = sorted(
        (r for r in records if r.index is None),
        key=lambda r: (r.created_ms, r.ended_ms if r.ended_ms is not None else 2**63, r.key),
    )
    return {r.node: i for i, r in enumerate(first_seen)}


def _tree(views: list[NodeView], order: dict[str, int]) -> tuple[list[NodeView], list[NodeView]]:
    """The top nodes in run order (each map with its items), and every map item."""
    top = {v.key: v for v in views if v.index is None}
    items = [v for v in views if v.index is not None]
    for item in items:
        parent = top.get(node_key(item.node, None, item.iteration))
        if parent is not None:
            parent.items.append(item)
    return sorted(top.values(), key=lambda v: (v.iteration, order.get(v.node, 0))), items


def _restart_tax(
    crash_events: list[CrashEvent], leaves: list[NodeView], each: dict[str, list[EachRecord]], memory: dict[str, int]
) -> tuple[float, float]:
    """A naive restart at a crash re-runs every finished leaf (nodes; map items rather than their
    parent) and every checkpointed ctx.each iteration of leaves that had not finished yet: its
    seconds and dollars, summed over the crashes."""
    tax_s = tax_usd = 0.0
    for crash in crash_events:
        t = crash.at_ms
        finished = [v for v in leaves if v.status == "SUCCEEDED" and v.ended_ms is not None and v.ended_ms <= t]
        finished_keys = {v.key for v in finished}
        partial = [
            (r, memory.get(key, 512))
            for key, recs in each.items()
            if key not in finished_keys
            for r in recs
            if r.ended_ms <= t
        ]
        tax_s += (sum(v.duration_ms for v in finished) + sum(r.duration_ms for r, _ in partial)) / 1000
        # a rerun pays each finished leaf's work again, not the requests of its invocations that died
        tax_usd += sum(
            v.cost_usd
            + compute_usd(v.duration_ms, v.invocations - v.crashes, memory.get(v.key, 512))
            + v.orchestration_usd  # its requests, made again by a rerun
            for v in finished
        )
        tax_usd += sum(compute_usd(r.duration_ms, 0, mb) for r, mb in partial)
    return tax_s, tax_usd


def _totals(run: RunRecord, nodes: list[NodeView], leaves: list[NodeView], crashes: int) -> dict[str, Any]:
    return {
        "nodes": len(nodes),
        "iterations": 1 + max((v.iteration for v in nodes), default=0),  # loop iterations the run reached
        "succeeded": sum(1 for v in nodes if v.status == "SUCCEEDED"),
        "invocations": sum(v.invocations for v in leaves),
        "attempts": sum(v.attempts for v in leaves),
        "crashes": crashes,
        "resumed_nodes": sum(1 for v in leaves if v.resumed),
        "checkpoint_hits": sum(v.checkpoint_hits for v in leaves),
        "compute_ms": sum(v.duration_ms for v in leaves),
        "cost_usd": round(sum(v.cost_usd for v in leaves), 9),
        "compute_usd": round(sum(v.compute_usd for v in leaves), 9),
        "input_tokens": sum(v.input_tokens for v in leaves),
        "output_tokens": sum(v.output_tokens for v in leaves),
        "wall_ms": (run.ended_ms or run.updated_ms) - run.created_ms,
        # a budgeted run (stepchain.engine.budget): its budget and what its steps spent (LLM + compute)
        "budget_usd": None if run.budget_nano is None else run.budget_nano / 1e9,
        "budget_spent_usd": None if run.budget_nano is None else run.spent_nano / 1e9,
    }


def _request_totals(run: RunRecord, records: list[NodeRecord], prices: Prices) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    for rec in records:  # map parents too (fan-out, join)
        counts.update(rec.requests)
    counts.update(run_requests(run, counts))
    return {
        "requests": dict(sorted(counts.items())),
        "orchestration_by_service": {k: v for k, v in prices.cost(counts).items() if k != "lambda"},
        "orchestration_usd": orchestration_usd(prices, counts),
        "prices": f"{prices.region}, {prices.version}",
    }
