"""Workflow definitions: an ordered chain of nodes (steps, maps, sleeps, event waits).

A node's id is stable: it is the Python function name (or the name given), the key of its
checkpoint record, and the stem of its state name in the generated ASL.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any, TypeVar

from stepchain.define.branches import call_node, child_name, parallel_node  # the node kinds' builders
from stepchain.define.flow import Limit, check_shared, limits_of
from stepchain.define.nodes import CHILD_KINDS as CHILD_KINDS  # re-exported: the node definitions
from stepchain.define.nodes import Node as Node
from stepchain.define.nodes import NodeKind as NodeKind
from stepchain.define.routing import END
from stepchain.define.state import check_model, model_signature
from stepchain.define.step_options import RetryPolicy as RetryPolicy  # re-exported
from stepchain.define.step_options import deploy_settings as deploy_settings
from stepchain.define.step_options import fuse_max_steps
from stepchain.exceptions import EventNotFound, ValidationError, VersionNotRegistered, WorkflowNotFound

F = TypeVar("F", bound=Callable[..., Any])
_ID = re.compile(r"^[a-z][a-z0-9_]{0,47}$")


class Workflow:
    """A named, versioned chain of nodes.

    >>> wf = Workflow("hello")
    >>> @wf.step()
    ... def greet(ctx, name):
    ...     return f"hello {name}"
    """

    def __init__(
        self,
        name: str,
        *,
        version: str | None = None,
        max_iterations: int = 100,
        stream_lifecycle: bool = False,
        state: type[Any] | None = None,
        budget_usd: float | None = None,
        on_budget: str = "pause",
        limits: Iterable[Limit] | Limit | None = None,
        fuse: bool | int = False,
    ) -> None:
        """``fuse``: step fusion (:mod:`stepchain.engine.fusion`): consecutive plain steps served by one
        function run in one invocation. ``True``: up to 50 steps per invocation, a whole number >= 2:
        that many, ``False`` (the default): every step in an invocation of its own. The one switch
        ``stepchain template``/``stepchain asl``, the runtime and every test harness read."""
        if not re.match(r"^[a-z][a-z0-9-]{0,62}$", name):
            raise ValidationError(f"workflow name {name!r} must match [a-z][a-z0-9-]*")
        if not isinstance(max_iterations, int) or not 1 <= max_iterations <= 99_999:
            raise ValidationError("max_iterations must be a whole number in 1..99999")
        self.name = name
        #: per-run cap on loop iterations (iteration numbers 0 .. max_iterations - 1)
        self.max_iterations = max_iterations
        if (budget_usd is not None and not budget_usd >= 0) or on_budget not in ("pause", "fail"):
            raise ValidationError("budget_usd must be >= 0 and on_budget 'pause' or 'fail'")
        #: a run's default dollar budget (stepchain.engine.budget) and what a step over it does
        self.budget_usd, self.on_budget = budget_usd, on_budget
        #: concurrency / rate limits every step of the workflow declares (stepchain.define.flow)
        self.limits = limits_of(limits)
        #: steps add ``node.*`` lifecycle events to the run's progress stream (one more write per invocation)
        self.stream_lifecycle = stream_lifecycle
        #: the most steps one invocation runs (step fusion; 1: none): ``fuse`` checked (:func:`fuse_max_steps`)
        self.fuse_max_steps = fuse_max_steps(fuse)
        #: the run's durable state model (a pydantic model, :mod:`stepchain.define.state`); None: no state
        self.state: type[Any] | None = None if state is None else check_model(state)
        self._version = version
        self._nodes: list[Node] = []
        self._index: dict[str, int] = {}  # node id -> position: lookups stay O(1) in long chains
        self._children: dict[str, Workflow] = {}  # Workflow objects given to call/parallel, by name

    # -- definition ----------------------------------------------------------------------------
    def _add(self, node: Node) -> None:
        if not _ID.match(node.id):
            raise ValidationError(f"node id {node.id!r} must match [a-z][a-z0-9_]*, at most 48 chars")
        if node.id in self._index:
            raise ValidationError(f"workflow {self.name!r} already has a node {node.id!r}")
        if node.timeout_s < 1 or node.timeout_s > 900:
            raise ValidationError(f"node {node.id!r}: timeout_s must be 1..900 (the Lambda limit)")
        self._index[node.id] = len(self._nodes)
        self._nodes.append(node)

    def step(
        self,
        name: str | None = None,
        *,
        retry: RetryPolicy | None = None,
        timeout_s: int = 60,
        function: str | None = None,
        memory_mb: int = 512,
        reserved_concurrency: int | None = None,
        environment: Mapping[str, Any] | None = None,
        policies: Iterable[Any] = (),
        routes: Iterable[str] = (),
        estimate_usd: float = 0.0,
        fuse: bool = True,
        limits: Iterable[Limit] | Limit | None = None,
    ) -> Callable[[F], F]:
        """Register ``fn(ctx, input) -> output`` as the next step of the chain.

        ``memory_mb``, ``reserved_concurrency``, ``environment``, ``policies``: the settings of the Lambda
        function ``stepchain template`` deploys it in (:func:`deploy_settings`). ``routes``: the
        successors the step may choose by returning ``goto(to, value)`` (node ids or ``END``; see
        :mod:`stepchain.define.routing`); they are checked when the workflow is first used (:meth:`validate`).
        ``estimate_usd``: what one attempt may spend (checked against the run's ``budget_usd``).
        ``fuse=False``: the step always starts in an invocation of its own, never run inline after
        its predecessor (:mod:`stepchain.engine.fusion`).
        ``limits``: its :class:`~stepchain.define.flow.Concurrency` / :class:`~stepchain.define.flow.RateLimit`
        limits by key (a throttled step waits without a running Lambda: :mod:`stepchain.engine.limits`).
        """
        step_limits = limits_of(limits)
        settings = deploy_settings(memory_mb, reserved_concurrency, environment, policies)
        route_ids = tuple(routes)
        if isinstance(routes, str) or any(not isinstance(r, str) for r in route_ids):
            raise ValidationError("routes must be a sequence of node ids (or END)")

        def register(fn: F) -> F:
            node = Node(name or fn.__name__, NodeKind.STEP, fn, retry or RetryPolicy(), timeout_s, function=function)
            self._add(
                replace(
                    node, routes=route_ids, estimate_usd=estimate_usd, fuse=bool(fuse), limits=step_limits, **settings
                )
            )
            return fn

        return register

    def map(
        self,
        name: str | None = None,
        *,
        max_concurrency: int = 0,
        retry: RetryPolicy | None = None,
        timeout_s: int = 60,
        function: str | None = None,
        memory_mb: int = 512,
        reserved_concurrency: int | None = None,
        environment: Mapping[str, Any] | None = None,
        policies: Iterable[Any] = (),
    ) -> Callable[[F], F]:
        """Register ``fn(ctx, item) -> result``, run once per element of the previous output (a list).

        The node's output is the list of results, in input order (fan-in). The function settings are
        those of :meth:`step`.
        """
        if max_concurrency < 0:
            raise ValidationError("max_concurrency must be >= 0")
        settings = deploy_settings(memory_mb, reserved_concurrency, environment, policies)

        def register(fn: F) -> F:
            self._add(
                replace(
                    Node(
                        name or fn.__name__,
                        NodeKind.MAP,
                        fn,
                        retry or RetryPolicy(),
                        timeout_s,
                        max_concurrency=max_concurrency,
                        function=function,
                    ),
                    **settings,
                )
            )
            return fn

        return register

    def sleep(self, seconds: int, *, name: str | None = None) -> None:
        """A durable sleep; its output is its input. Longer than Lambda's 15 minutes is fine."""
        if seconds < 1:
            raise ValidationError("sleep seconds must be >= 1")
        self._add(Node(name or f"sleep_{len(self._nodes)}", NodeKind.SLEEP, seconds=int(seconds), timeout_s=30))

    def wait_for_event(
        self, event: str, *, timeout_s: int = 86400, name: str | None = None, into_state: bool = False
    ) -> None:
        """Suspend the run until ``event`` is delivered; its payload becomes the next step's input.

        If nothing arrives within ``timeout_s`` the run fails with an ``EventTimeout`` error.
        ``into_state``: the payload (a dict of fields of the workflow's ``state`` model) is also
        merged into the run's durable state, each field by its rule (:mod:`stepchain.define.state`).
        """
        if into_state and self.state is None:
            raise ValidationError(f"wait_for_event({event!r}, into_state=True) needs Workflow(state=...)")
        if not re.match(r"^[a-z][a-z0-9_-]{0,62}$", event):
            raise ValidationError(f"event name {event!r} must match [a-z][a-z0-9_-]*")
        if timeout_s < 1:
            raise ValidationError("wait_for_event timeout_s must be >= 1")
        node = Node(
            name or event.replace("-", "_"),
            NodeKind.WAIT,
            event=event,
            seconds=int(timeout_s),
            timeout_s=30,
            into_state=into_state,
        )
        self._add(node)

    def call(self, workflow: str | Workflow, *, name: str | None = None, share_state: bool = False) -> None:
        """Run ``workflow`` (a name, or a Workflow: registered with this one) as a child run on this
        node's input; the output is the child's. A failed or cancelled child fails the node (terminal).
        ``share_state``: the child starts from this run's state and its changes merge back at the join
        (both workflows declare ``state``; :mod:`stepchain.define.state`)."""
        self._add(self._sharing(call_node(self._child_name(workflow), name), share_state))

    def parallel(
        self,
        branches: Mapping[str, str | Workflow],
        *,
        name: str | None = None,
        on_error: str = "fail",
        share_state: bool = False,
    ) -> None:
        """One child run per branch, all at once, on this node's input; the output is ``{branch:
        output}``. ``on_error``: ``"fail"`` (a failed branch fails the node, the others are
        cancelled) or ``"collect"`` (its value is ``{"error": {...}}``). ``share_state``: as for
        :meth:`call`; the branches' changes merge in declared branch order."""
        self._add(
            self._sharing(parallel_node(branches, self._child_name, len(self.nodes), name, on_error), share_state)
        )

    def _sharing(self, node: Node, share_state: bool) -> Node:
        if not share_state:
            return node
        if self.state is None:
            raise ValidationError(f"{node.id}: share_state=True needs Workflow(state=...)")
        for _, child in node.branches:
            known = self._children.get(child)
            if known is not None and known.state is None:
                raise ValidationError(f"{node.id}: share_state=True needs child workflow {child!r} to declare state")
        return replace(node, share_state=True)

    def _child_name(self, workflow: str | Workflow) -> str:
        return child_name(workflow, self._children, Workflow)

    @property
    def children(self) -> dict[str, Workflow]:
        """The Workflow objects this workflow's call/parallel nodes were given (by name)."""
        return dict(self._children)

    # -- queries -------------------------------------------------------------------------------
    @property
    def nodes(self) -> tuple[Node, ...]:
        return tuple(self._nodes)

    @property
    def version(self) -> str:
        """Explicit version, or a hash of the chain's shape (ids, kinds, parameters) and of its state
        model (a changed model is a new version: a run keeps the model it started with)."""
        if self._version:
            return self._version
        sig: list[Any] = [n.signature() for n in self._nodes]
        if self.state is not None:  # only then: the versions of other workflows stay what they were
            sig.append({"state": model_signature(self.state)})
        shape = json.dumps(sig, sort_keys=True)
        return hashlib.sha256(f"{self.name}:{shape}".encode()).hexdigest()[:12]

    def _position(self, node_id: str) -> int:
        try:
            return self._index[node_id]
        except KeyError:
            raise ValidationError(f"workflow {self.name!r} has no node {node_id!r}") from None

    def node(self, node_id: str) -> Node:
        return self._nodes[self._position(node_id)]

    def position(self, node_id: str) -> int:
        """The node's position in the chain (a route to a position at or before its own loops)."""
        return self._position(node_id)

    def validate(self) -> Workflow:
        """Check what can only be checked once every node is defined: every route names a node of
        this workflow (or ``END``). Called when the workflow is registered; returns the workflow."""
        for n in self._nodes:
            bad = [r for r in n.routes if r != END and r not in self._index]
            if bad:
                raise ValidationError(f"step {n.id!r} of workflow {self.name!r} routes to unknown nodes {bad}")
        return self

    def has_node(self, node_id: str) -> bool:
        return node_id in self._index

    def first(self) -> Node:
        if not self._nodes:
            raise ValidationError(f"workflow {self.name!r} has no steps")
        return self._nodes[0]

    def next_of(self, node_id: str) -> Node | None:
        i = self._position(node_id) + 1
        return self._nodes[i] if i < len(self._nodes) else None

    def prev_of(self, node_id: str) -> Node | None:
        i = self._position(node_id)
        return self._nodes[i - 1] if i > 0 else None

    def waits_for(self, event: str) -> bool:
        """Does a wait node of this workflow wait for ``event``?"""
        return any(n.waits_for_event and n.event == event for n in self._nodes)

    def wait_node(self, event: str) -> Node:
        for n in self._nodes:
            if n.kind is NodeKind.WAIT and n.event == event:
                return n
        raise EventNotFound(f"workflow {self.name!r} does not wait for an event named {event!r}")

    def __repr__(self) -> str:
        return f"Workflow({self.name!r}, version={self.version!r}, nodes={[n.id for n in self._nodes]})"


class Registry:
    """The workflows a deployment knows, by name and version."""

    def __init__(self, workflows: Iterable[Workflow] = ()) -> None:
        self._by_name: dict[str, dict[str, Workflow]] = {}
        self._latest: dict[str, Workflow] = {}
        for wf in workflows:
            self.register(wf)

    def register(self, wf: Workflow) -> None:
        """Register ``wf`` and the child workflows it was given as objects (``call``, ``parallel``)."""
        wf.validate()
        others = [w for w in self._latest.values() if w.name != wf.name]
        check_shared(
            (w.name, lim) for w in [*others, wf] for lim in (*w.limits, *(x for n in w.nodes for x in n.limits))
        )
        self._by_name.setdefault(wf.name, {})[wf.version] = wf
        self._latest[wf.name] = wf
        for child in wf.children.values():
            if self._by_name.get(child.name, {}).get(child.version) is not child:
                self.register(child)

    def unregister(self, name: str, version: str) -> None:
        """Forget one version (what a deployment that no longer defines it looks like)."""
        versions = self._by_name.get(name, {})
        versions.pop(version, None)
        if not versions:
            self._by_name.pop(name, None)
            self._latest.pop(name, None)
        elif self._latest[name].version == version:
            self._latest[name] = list(versions.values())[-1]

    def get(self, name: str, version: str | None = None) -> Workflow:
        """The workflow; raises :class:`WorkflowNotFound`, or :class:`VersionNotRegistered` (a
        :class:`VersionMismatch`) when ``name`` is known but not at ``version``."""
        versions = self._by_name.get(name)
        if not versions:
            if version is not None:
                raise VersionNotRegistered(f"workflow {name!r} version {version!r} is not registered here (none is)")
            raise WorkflowNotFound(f"unknown workflow {name!r}; known: {sorted(self._by_name)}")
        if version is None:
            return self._latest[name]
        try:
            return versions[version]
        except KeyError:
            raise VersionNotRegistered(
                f"workflow {name!r} version {version!r} is not registered here (registered: {sorted(versions)})"
            ) from None

    def find(self, name: str, version: str) -> Workflow | None:
        """The workflow at exactly ``version``, or None (read paths work from the records then)."""
        return self._by_name.get(name, {}).get(version)

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def __iter__(self) -> Any:
        return iter(self._latest.values())
