"""Reading configuration files: YAML (or JSON) that refuses a key given twice.

YAML and JSON parsers keep the last of two equal keys without a word, so a config that sets
``chips:`` twice would silently lose the first. :func:`read_yaml` refuses it, naming the
key and the line, for build configs and registry files alike.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "c.yaml"
    >>> _ = path.write_text("chips: {size: 64}\\nchips: {size: 128}\\n")
    >>> read_yaml(path, "config file")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    geochip.errors.ConfigError: ...c.yaml is not valid YAML: ...key 'chips' is given twice...
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from .security import redact
from .storage import is_url, local_path, read_bytes

__all__ = [
    "read_yaml",
]


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping."""


def _construct_mapping(loader: Any, node: Any, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} is given twice", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} is given twice")
        out[key] = value
    return out


def read_yaml(path: str | Path, what: str) -> Any:
    """The data of a YAML file (JSON when it ends in ``.json``), a local path or an
    object-store URL; None when it is empty. A missing file, a syntax error or a key given
    twice is a :class:`~geochip.errors.ConfigError` naming ``what`` (e.g. "config file")."""
    if is_url(path):  # s3://, gs://, az://: one GET with the environment's credentials
        try:
            text = read_bytes(path).decode("utf-8")
        except FileNotFoundError:
            raise ConfigError(f"no {what} at {path}; check the URL") from None
        except (OSError, ValueError) as err:
            raise ConfigError(f"cannot read the {what} {path}: {redact(str(err))}") from None
    else:
        local = local_path(path)
        if not local.is_file():
            raise ConfigError(f"no {what} at {path}; check the path")
        text = local.read_text(encoding="utf-8")
    if str(path).lower().endswith(".json"):
        try:
            return json.loads(text, object_pairs_hook=_unique_pairs) if text.strip() else None
        except ValueError as err:
            raise ConfigError(f"{path} is not valid JSON: {err}") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
