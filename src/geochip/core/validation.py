"""Errors of pydantic models (build configs, registry files) as one line per bad field,
naming the field, the value and what is allowed.

The ``kind`` values of discriminated unions (``sources.kind: catalog``) are left out of
field names (``sources.path``, not ``sources.catalog.path``); an unknown field lists the
fields allowed there; a value that fits none of a union's forms lists the forms.

Example:
    >>> from typing import Literal
    >>> from pydantic import BaseModel, ConfigDict, ValidationError
    >>> class Chips(BaseModel):
    ...     model_config = ConfigDict(extra="forbid")
    ...     size: int
    ...     edge: Literal["drop", "pad"] = "drop"
    >>> class Config(BaseModel):
    ...     chips: Chips
    >>> try:
    ...     Config.model_validate({"chips": {"size": 8, "edge": "wrap", "sizes": 1}})
    ... except ValidationError as err:
    ...     print("\\n".join(error_lines(err, Config)))
    chips.edge: 'wrap' is not allowed; allowed: 'drop', 'pad'
    chips.sizes: unknown field; allowed fields here: edge, size
"""

from __future__ import annotations

import re
import typing
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

__all__ = [
    "error_lines",
    "kind_of",
    "models_in",
]

#: pydantic's names of union members in an error's location (int, literal[...], list[...]).
_UNION_TAG = re.compile(
    r"^(int|float|str|bool|bytes|none|list|dict|tuple|set|literal|union|nullable|"
    r"is-instance|function-[a-z]+|json-or-python|lax-or-strict|chain)(\[.*\])?$"
)
_FORMS = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "list": "a list",
    "tuple": "a list",
    "dict": "a mapping",
    "none": "null",
}


def models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation holds (``A | B | None`` -> ``[A, B]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    out: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        out += models_in(arg)
    return out


def kind_of(model: type[BaseModel]) -> str | None:
    """The ``kind`` a member of a discriminated union has (its ``Literal`` value)."""
    field = model.model_fields.get("kind")
    if field is None:
        return None
    args = typing.get_args(field.annotation)
    return str(args[0]) if args else None


def _all_models(root: type[BaseModel]) -> Iterator[type[BaseModel]]:
    seen: set[type[BaseModel]] = set()
    todo = [root]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        yield model
        for field in model.model_fields.values():
            todo += models_in(field.annotation)


def _allowed_fields(root: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    by_kind = {k: m for m in _all_models(root) if (k := kind_of(m)) is not None}
    model: Any = root
    for part in loc[:-1]:
        if not isinstance(part, str):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            model = by_kind.get(part, model)
            continue
        models = models_in(field.annotation)
        if models:
            model = models[0]
    fields = getattr(model, "model_fields", None)
    return sorted(fields) if fields else None


def _is_tag(part: Any) -> bool:
    return isinstance(part, str) and bool(_UNION_TAG.match(part))


def _form(tag: str, err: Mapping[str, Any]) -> str:
    if tag.startswith("literal"):
        return str(err.get("ctx", {}).get("expected", tag)).replace(" or ", ", ")
    return _FORMS.get(tag.split("[", maxsplit=1)[0], tag)


def _line(err: Mapping[str, Any], root: type[BaseModel], kinds: set[str]) -> str:
    loc = tuple(err.get("loc", ()))
    shown = [str(p) for p in loc if not (isinstance(p, str) and p in kinds)]
    field = ".".join(shown)
    value = err.get("input")
    kind = err.get("type", "")
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    if kind == "extra_forbidden":
        allowed = _allowed_fields(root, loc)
        tail = f"; allowed fields here: {', '.join(allowed)}" if allowed else ""
        return f"{field}: unknown field{tail}"
    if kind == "missing":
        return f"{field}: required field is missing"
    if kind == "literal_error":
        expected = str(err.get("ctx", {}).get("expected", "")).replace(" or ", ", ")
        return f"{field}: {value!r} is not allowed; allowed: {expected}"
    if kind == "union_tag_invalid":
        expected = err.get("ctx", {}).get("expected_tags", "")
        tag = err.get("ctx", {}).get("tag")
        return f"{field}.kind: {tag!r} is not allowed; allowed: {expected}"
    if kind == "union_tag_not_found":
        return f"{field}.kind: required (it says which kind of {field} this is)"
    if not shown:
        return msg
    if isinstance(value, dict | list):
        return f"{field}: {msg}"
    return f"{field}: {msg} (got {value!r})"


def error_lines(error: ValidationError, root: type[BaseModel]) -> list[str]:
    """One line per bad field of ``error`` (raised validating ``root``), without repeats;
    the members of a union a value fits none of are merged into one line that lists the
    allowed forms."""
    kinds = {k for m in _all_models(root) if (k := kind_of(m)) is not None}
    alternatives: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    deeper: set[tuple[Any, ...]] = set()
    plain = []
    errors: list[dict[str, Any]] = [dict(e) for e in error.errors()]
    for err in errors:
        loc: tuple[Any, ...] = tuple(err.get("loc", ()))
        tags = [n for n, part in enumerate(loc) if _is_tag(part)]
        if not tags:
            plain.append(err)
            continue
        at = tags[0]
        field = tuple(p for p in loc[:at])
        if at == len(loc) - 1:
            alternatives.setdefault(field, []).append(err)
        else:
            deeper.add(field)
            plain.append({**err, "loc": tuple(p for p in loc if not _is_tag(p))})
    lines = [_line(e, root, kinds) for e in plain]
    for field, errs in alternatives.items():
        if field in deeper:
            continue  # the value had one member's shape: its own errors say what is wrong
        forms = list(dict.fromkeys(_form(str(e["loc"][-1]), e) for e in errs))
        name = ".".join(str(p) for p in field if not (isinstance(p, str) and p in kinds))
        lines.append(
            f"{name}: {errs[0].get('input')!r} is not allowed; allowed: {', '.join(forms)}"
        )
    return list(dict.fromkeys(lines))
