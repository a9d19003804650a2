"""The run view (the API's and ``stepchain show``'s): the ledger's rows, then each node kind's own
(:meth:`~stepchain.engine.nodes.base.NodeKindHandler.view_rows`: a call/parallel node lists its
child runs and adds their totals to the run's)."""

from __future__ import annotations

from stepchain.define.workflow import Registry
from stepchain.engine.nodes import handler_for
from stepchain.engine.nodes.base import ViewScope
from stepchain.observe.ledger import RunView, describe
from stepchain.store.base import CheckpointStore
from stepchain.store.records import RunRecord


def run_view(store: CheckpointStore, registry: Registry, run: RunRecord) -> RunView:
    """The run's ledger with its kinds' rows (child runs, recursively, their costs rolled up)."""
    return kind_rows(store, registry, describe(store, registry, run))


def kind_rows(store: CheckpointStore, registry: Registry, view: RunView) -> RunView:
    """Have each node's kind add its rows to ``view`` (a run on a retired version: none)."""
    wf = registry.find(view.workflow, view.version)
    if wf is None:
        return view
    scope = ViewScope(store, view, lambda child: run_view(store, registry, child))
    for nv in view.nodes:
        if wf.has_node(nv.node):
            handler_for(wf.node(nv.node)).view_rows(scope, wf.node(nv.node), nv)
    for k in ("cost_usd", "compute_usd"):
        view.totals[k] = round(view.totals[k], 9)
    return view


__all__ = ["kind_rows", "run_view"]
