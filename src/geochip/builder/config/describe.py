"""``geochip build --help-config``: every field of a build config, its type, default and
description, read from the models themselves."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel

from ...core.validation import kind_of, models_in
from .model import BuildConfig

__all__ = [
    "describe_config",
]


def _type_name(annotation: Any) -> str:
    text = re.sub(r"\b(typing|geochip(\.\w+)*)\.", "", str(annotation))
    return text.replace("NoneType", "None").replace("<class '", "").replace("'>", "")


def _walk(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, str, str, str]]:
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        if field.is_required():
            default = "required"
        elif field.default_factory is not None:
            made = field.default_factory()  # type: ignore[call-arg]
            default = "{...}" if isinstance(made, BaseModel) else json.dumps(made)
        else:
            default = json.dumps(field.default)
        annotation = field.annotation
        models = models_in(annotation)
        if models and name != "kind":
            yield dotted, "section", default, field.description or ""
            for sub in models:
                sub_prefix = dotted + "."
                if len(models) > 1:
                    yield (
                        f"{dotted}[kind={kind_of(sub)}]",
                        "variant",
                        "",
                        " ".join((sub.__doc__ or "").split()),
                    )
                for row in _walk(sub, sub_prefix):
                    if len(models) > 1 and row[0] == f"{sub_prefix}kind":
                        continue
                    yield row
        else:
            yield dotted, _type_name(annotation), default, field.description or ""


def describe_config() -> str:
    """Every field of :class:`BuildConfig` with its type, default and description.

    >>> text = describe_config()
    >>> "chips.edge" in text and "output.codec" in text
    True
    """
    lines = ["geochip build configuration (YAML). Fields, defaults and meaning:", ""]
    for name, kind, default, description in _walk(BuildConfig, ""):
        if kind == "section":
            lines += ["", f"{name}:  {description}"]
        elif kind == "variant":
            lines.append(f"  {name}: {description}")
        else:
            tail = f" [default {default}]" if default != "required" else " [required]"
            lines.append(f"  {name} ({kind}){tail}")
            lines.append(f"      {description}")
    return "\n".join(lines).strip() + "\n"
