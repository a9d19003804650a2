"""Durable run state: a typed (pydantic) model a workflow declares, changed by steps, checkpointed
with each step's own checkpoint write.

``Workflow(name, state=MyState)``: a step reads ``ctx.state`` (the state stored with the node its
input came from) and changes it with ``ctx.update_state(field=value, ...)`` or by returning
``StateUpdate(output, field=value, ...)`` (merged after the step's own ``update_state`` calls). Each field merges by
its declared rule, ``Annotated[list[str], append]`` (default :data:`replace`):

* :data:`replace`: the new value replaces the old one;
* :data:`append`: a list extends the old list (a single non-list value is appended);
* :data:`merge`: a dict updates the old dict (shallow);
* :data:`add`: a number is added to the old number.

The state after a node is stored on the node's own item (``state``, a payload reference: inline
when small, an S3 claim-check when large) in the same conditional write as its output, so a
state change is exactly-once with its step. The reference travels with the successor's
activation (as the input reference does), so reading it costs no store call on the happy path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from stepchain.exceptions import StateModelMismatch, ValidationError


@dataclass(frozen=True)
class Reducer:
    """How an update to one state field merges with its current value."""

    name: str
    fn: Callable[[Any, Any], Any]

    def __repr__(self) -> str:
        return f"stepchain.define.state.{self.name}"


def _append(old: Any, new: Any) -> Any:
    return [*(old or []), *(new if isinstance(new, list | tuple) else [new])]


def _merge(old: Any, new: Any) -> Any:
    if not isinstance(new, Mapping):
        raise ValidationError(f"a merge field takes a dict, got {type(new).__name__}")
    return {**(old or {}), **new}


replace = Reducer("replace", lambda _old, new: new)
append = Reducer("append", _append)
merge = Reducer("merge", _merge)
add = Reducer("add", lambda old, new: (old or 0) + new)


def reducers_of(model: type[BaseModel]) -> dict[str, Reducer]:
    """Each field's merge rule (the :class:`Reducer` in its ``Annotated`` metadata; default replace)."""
    out: dict[str, Reducer] = {}
    for name, info in model.model_fields.items():
        found = [m for m in info.metadata if isinstance(m, Reducer)]
        out[name] = found[-1] if found else replace
    return out


def apply_update(model: type[BaseModel], current: BaseModel, update: Mapping[str, Any]) -> BaseModel:
    """``current`` with ``update`` merged in, field by field, validated by the model."""
    rules = reducers_of(model)
    unknown = sorted(set(update) - set(rules))
    if unknown:
        raise ValidationError(f"state {model.__name__} has no field(s) {', '.join(unknown)}")
    data = current.model_dump()
    for name, value in update.items():
        data[name] = rules[name].fn(data.get(name), value)
    try:
        return model.model_validate(data)
    except PydanticValidationError as exc:
        raise ValidationError(f"state update does not fit {model.__name__}: {exc}") from exc


def state_update(payload: Any) -> Mapping[str, Any]:
    """An event payload merged into the state (``wait_for_event(into_state=True)``): a dict of fields."""
    if not isinstance(payload, Mapping):
        raise ValidationError(f"an event merged into the state must be a JSON object, got {type(payload).__name__}")
    return payload


def check_event(model: type[BaseModel], payload: Any) -> None:
    """Refuse (before it is stored) an event payload that could not be merged into the state."""
    apply_update(model, model(), state_update(payload))


def check_model(model: Any) -> type[BaseModel]:
    """A workflow's declared state model: a pydantic model whose every field has a default."""
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise ValidationError(f"Workflow(state=...) takes a pydantic model class, got {model!r}")
    try:
        model()
    except PydanticValidationError as exc:
        raise ValidationError(f"state {model.__name__}: every field needs a default (a run starts from it)") from exc
    return model


def read_state(model: type[BaseModel], stored: Any) -> BaseModel:
    """The stored state as ``model``: a typed :class:`StateModelMismatch` when it does not fit (the
    model changed under a fixed version since the run stored it)."""
    try:
        return model.model_validate(stored)
    except PydanticValidationError as exc:
        raise StateModelMismatch(
            f"the run's stored state does not fit state model {model.__name__} (changed since the run stored "
            f"it, under the same Workflow(version=...)?): {exc.errors(include_url=False)}"
        ) from exc


def model_signature(model: type[BaseModel]) -> dict[str, Any]:
    """What of a state model decides a workflow's version: its JSON schema and each field's reducer."""
    return {"schema": model.model_json_schema(), "reducers": {k: r.name for k, r in reducers_of(model).items()}}


def branch_changes(model: type[BaseModel], start: Mapping[str, Any], end: Mapping[str, Any]) -> dict[str, Any]:
    """What a child run changed in the state it was given (``share_state``), as an update of the
    parent's ``model`` (fields both models have), per the parent's reducer: append, the items after
    the starting ones (all of them if the child rewrote the list); add, the difference; merge, the
    keys added or changed; replace, the end value if it differs. Unchanged fields are left out."""
    out: dict[str, Any] = {}
    for name, rule in reducers_of(model).items():
        if name not in end or name not in start or end[name] == start[name]:
            continue
        old, new = start[name], end[name]
        if rule is append:
            grown = isinstance(old, list) and isinstance(new, list) and new[: len(old)] == old
            out[name] = new[len(old) :] if grown else new
        elif rule is add:
            out[name] = (new or 0) - (old or 0)
        elif rule is merge:
            out[name] = {k: v for k, v in (new or {}).items() if (old or {}).get(k, _MISSING) != v}
        else:
            out[name] = new
    return out


_MISSING = object()


def view_of(ref: str | None) -> Any:
    """What a run view shows of a state reference: the value when inline, else the S3 reference."""
    if ref is None:
        return None
    import json

    doc = json.loads(ref)
    return doc["v"] if "v" in doc else {"blob": doc.get("blob"), "bytes": doc.get("bytes")}


T = TypeVar("T")


class StateUpdate(Generic[T]):
    """A step's return value that also changes the run's state: ``return StateUpdate(output,
    notes=[...])``. ``output`` is the step's output (what its successor receives, typed as
    ``StateUpdate[T]`` says); the keyword fields merge into ``ctx.state`` by their reducers, as
    ``ctx.update_state`` would after everything the step did, and are checkpointed in the same write
    as the output. It may wrap a route (``StateUpdate(goto("x", v), ...)``) or be wrapped by one
    (``goto("x", StateUpdate(v, ...))``)."""

    __slots__ = ("changes", "output")

    def __init__(self, output: T, /, **changes: Any) -> None:
        self.output = output
        self.changes: dict[str, Any] = changes

    def __repr__(self) -> str:
        return f"StateUpdate({self.output!r}, {self.changes!r})"


def take_update(box: StateBox | None, returned: object) -> object:
    """A step's return value without its :class:`StateUpdate` (merged into ``box``)."""
    if not isinstance(returned, StateUpdate):
        return returned
    if box is None:
        raise ValidationError(
            "a step returned a StateUpdate where there is no run state (Workflow(state=...) or a map item)"
        )
    box.update(returned.changes)
    return returned.output


@dataclass
class StateBox:
    """One step invocation's view of the state: decoded on first read, updates kept until the checkpoint."""

    model: type[BaseModel]
    ref: str | None  # the state the step starts from (None: the model's defaults)
    decode: Callable[[str], Any]
    _value: BaseModel | None = field(default=None, init=False)
    changed: bool = field(default=False, init=False)

    @property
    def value(self) -> BaseModel:
        if self._value is None:
            self._value = self.model() if self.ref is None else read_state(self.model, self.decode(self.ref))
        return self._value

    def update(self, changes: Mapping[str, Any]) -> BaseModel:
        self._value = apply_update(self.model, self.value, changes)
        self.changed = True
        return self._value

    def dump(self) -> Any:
        return self.value.model_dump(mode="json")


__all__ = [
    "Reducer",
    "StateBox",
    "StateUpdate",
    "add",
    "append",
    "apply_update",
    "branch_changes",
    "check_event",
    "check_model",
    "merge",
    "model_signature",
    "read_state",
    "reducers_of",
    "replace",
    "state_update",
    "take_update",
    "view_of",
]
