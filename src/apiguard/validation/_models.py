"""Pydantic models for the body, the query and the headers, and their errors."""

from __future__ import annotations

import collections.abc
import math
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any, Final, Literal, TypeAlias

from pydantic import BaseModel, TypeAdapter, ValidationError

from apiguard.errors import ConfigError

__all__ = ["MAX_ERRORS", "BodyModel", "ParamsModel", "Part", "error_list", "missing_body"]

Part: TypeAlias = Literal["body", "query", "header"]

#: At most this many errors are listed in a 422: a body of thousands of bad
#: items must not turn into a response larger than the request.
MAX_ERRORS: Final = 50

_SEQUENCES: Final = frozenset(
    {list, tuple, set, frozenset, collections.abc.Sequence, collections.abc.Set}
)


class BodyModel:
    """A validator for a parsed JSON body: any type pydantic validates.

    Validation is in Python mode on the parsed value, which is what FastAPI
    does with its own body models (`json.loads`, then `validate_python`).

    Raises:
        ConfigError: pydantic cannot build a validator for `model`.
    """

    __slots__ = ("accepts_none", "declared", "model", "validate")

    def __init__(self, option: str, model: Any) -> None:
        self.model = model
        try:
            adapter: TypeAdapter[Any] = TypeAdapter(model)
        except Exception as exc:  # pydantic raises several types here
            msg = f"{option}: pydantic cannot validate {model!r}: {exc}"
            raise ConfigError(msg) from exc
        self.validate: Callable[[Any], Any] = adapter.validator.validate_python
        self.declared = schema_strings(adapter.core_schema)
        try:
            self.validate(None)
        except ValidationError:
            self.accepts_none = False
        else:
            self.accepts_none = True


class ParamsModel:
    """A model for the query parameters or the headers of a request.

    Each field is looked up under its alias, else its name (for headers,
    lowercased, with `_` as `-`: `x_request_id` reads `x-request-id`). Fields
    annotated as lists (or tuples, sets) receive every value; others receive
    the last query value, or the first header value, as Starlette's
    `request.query_params[...]` and `request.headers[...]` do.

    Raises:
        ConfigError: `model` is not a pydantic `BaseModel` subclass.
    """

    __slots__ = ("by_name", "declared", "model", "multi", "validate", "wire_names")

    def __init__(self, option: str, model: Any, *, headers: bool) -> None:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            msg = f"{option}: {model!r} is not a pydantic BaseModel subclass"
            raise ConfigError(msg)
        self.model = model
        self.validate: Callable[[Any], Any] = model.__pydantic_validator__.validate_python
        self.declared = schema_strings(model.__pydantic_core_schema__)
        #: Wire name -> the key the model validates it under.
        self.by_name: dict[str, str] = {}
        #: The key a model reports an error under -> the name on the wire.
        self.wire_names: dict[str, str] = {}
        #: Keys that take every value, as a list.
        self.multi: frozenset[str] = frozenset()
        multi = set()
        for name, field in model.model_fields.items():
            key = field.alias or name
            if headers:
                wire = field.alias.lower() if field.alias else name.replace("_", "-").lower()
            else:
                wire = key
            self.by_name[wire] = key
            self.wire_names[key] = wire
            if _is_sequence(field.annotation):
                multi.add(key)
        self.multi = frozenset(multi)

    def from_pairs(self, pairs: Iterable[tuple[str, str]], *, first: bool) -> dict[str, Any]:
        """The input dict: declared fields under their keys, other names as they are."""
        data: dict[str, Any] = {}
        by_name, multi = self.by_name, self.multi
        for name, value in pairs:
            key = by_name.get(name, name)
            if key in multi:
                data.setdefault(key, []).append(value)
            elif not first or key not in data:
                data[key] = value
        return data


def _is_sequence(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _is_sequence(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        return any(_is_sequence(arg) for arg in typing.get_args(annotation))
    return origin in _SEQUENCES or annotation in _SEQUENCES


#: What an undeclared key becomes in `loc` when inputs are not echoed.
HIDDEN_KEY: Final = "<key>"


def schema_strings(schema: Any) -> frozenset[str]:
    """Every string in a pydantic core schema: field names, aliases, tags, titles.

    What a model declares is no secret of the client's; a `loc` element that
    is not among these and is a key of the input was chosen by the client.
    """
    found: set[str] = set()
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            found.add(node)
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list | tuple):
            stack.extend(node)
    return frozenset(found)


def _input_keys(data: Any) -> set[Any]:
    """Every key of every mapping in the input (on the refusal path only)."""
    keys: set[Any] = set()
    level = [data]
    while level:
        children: list[Any] = []
        for node in level:
            if isinstance(node, dict):
                keys.update(node)
                children.extend(node.values())
            elif isinstance(node, list | tuple):
                children.extend(node)
        level = children
    return keys


def missing_body() -> list[dict[str, Any]]:
    """The errors of an empty body where the model needs one (as FastAPI words it)."""
    return [{"loc": ["body"], "msg": "Field required", "type": "missing"}]


def error_list(
    exc: ValidationError,
    part: Part,
    *,
    echo_input: bool,
    wire_names: dict[str, str] | None = None,
    declared: frozenset[str] = frozenset(),
    data: Any = None,
) -> list[dict[str, Any]]:
    """`loc`, `msg` and `type` of each error; `input` and `ctx` only if `echo_input`.

    `wire_names` renames the first `loc` element (a header field's key) to
    the name the client sent (the header's name).

    Without `echo_input`, the few built-in messages that quote the input (a
    discriminator tag, a UUID parser's complaint) are replaced by ones that do
    not, and a `loc` element that is a key of the input (`data`) but not a
    string of the model (`declared`) becomes `"<key>"`: an extra key, a
    key of a `dict` field, an undeclared query parameter are the client's
    text, which may be a secret sent by mistake. Messages raised by the app's
    own validators go out as written.
    """
    out: list[dict[str, Any]] = []
    keys: set[Any] | None = None
    for error in exc.errors(include_url=False, include_input=echo_input)[:MAX_ERRORS]:
        kind = error["type"]
        loc = list(error["loc"])
        if not echo_input:
            for position, element in enumerate(loc):
                if type(element) is str and element not in declared:
                    if keys is None:
                        keys = _input_keys(data)
                    if element in keys:
                        loc[position] = HIDDEN_KEY
        if wire_names and loc and isinstance(loc[0], str):
            loc[0] = wire_names.get(loc[0], loc[0])
        item: dict[str, Any] = {"loc": [part, *loc], "msg": error["msg"], "type": kind}
        ctx = error.get("ctx")
        if echo_input:
            item["input"] = _jsonable(error.get("input"))
            if ctx:
                item["ctx"] = _jsonable(ctx)
        else:
            quiet = _QUIET_MESSAGES.get(kind)
            if quiet is not None:
                item["msg"] = quiet(ctx or {})
        out.append(item)
    return out


def _tag_message(ctx: dict[str, Any]) -> str:
    return (
        f"Input tag found using {ctx.get('discriminator', 'the discriminator')} does not "
        f"match any of the expected tags: {ctx.get('expected_tags', '')}"
    )


#: Error types whose pydantic message quotes (part of) the submitted value.
_QUIET_MESSAGES: Final[dict[str, Callable[[dict[str, Any]], str]]] = {
    "union_tag_invalid": _tag_message,
    "uuid_parsing": lambda ctx: "Input should be a valid UUID",
    "uuid_version": lambda ctx: "Input should be a valid UUID of the expected version",
    "bytes_invalid_encoding": lambda ctx: f"Data should be valid {ctx.get('encoding', 'bytes')}",
}


def _jsonable(value: Any) -> Any:
    """`value` with everything JSON cannot carry turned into text."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    return str(value)
