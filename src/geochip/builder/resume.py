"""Where a build keeps its resumable state (``<out>/.geochip/``) and what an output folder
holds before a build starts: nothing, an unfinished build of the same config (resume), a
finished one (up to date), or something else (refused, naming the fields that differ).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..core.files import remove_tree
from ..core.storage import ObjectPath, store_path
from ..errors import StoreError
from .config.model import BuildConfig, diff_fields

__all__ = [
    "STATE_DIR",
]

#: Where a build keeps its resumable state inside the output folder.
STATE_DIR = ".geochip"


def state_dir(store: str | Path | ObjectPath) -> Path | ObjectPath:
    """The folder of a build's resumable state inside the output folder (or prefix)."""
    return store_path(store) / STATE_DIR


def record_path(store: str | Path | ObjectPath, batch: int) -> Path | ObjectPath:
    """Where the record of batch ``batch`` is written."""
    return state_dir(store) / "batches" / f"{batch:07d}.json"


def remove_state(store: str | Path | ObjectPath) -> None:
    """Remove the state of a finished build: ``config.json`` (what says "unfinished") first,
    then the rest; a kill in between leaves a state without it beside the manifest, which
    :func:`check_existing` removes."""
    state = state_dir(store)
    (state / "config.json").unlink(missing_ok=True)
    if isinstance(state, ObjectPath):  # all but the writer's lock (store.remote)
        for entry in state.iterdir():
            if entry.name != "lock":
                remove_tree(entry)
    else:
        remove_tree(state)


def check_existing(out: Path | ObjectPath, config: BuildConfig, overwrite: bool) -> str:
    """'fresh', 'resume' or 'complete' for the output folder; refuse a changed config."""
    state = state_dir(out)
    manifest = out / "manifest.json"
    wanted = config.dataset_fields()
    if overwrite and out.exists():
        if not (manifest.exists() or state.exists()) and any(out.iterdir()):
            raise StoreError(f"{out} exists and is not a geochip store; choose another path")
        _clear(out)
        return "fresh"
    stopped_before_first_write = state.exists() and not (state / "config.json").exists()
    if stopped_before_first_write and all(p.name == STATE_DIR for p in out.iterdir()):
        remove_state(out)  # nothing to resume
        return "fresh"
    if state.exists() and (state / "config.json").exists():
        old = json.loads((state / "config.json").read_text())
        differ = diff_fields(old.get("config", {}), wanted)
        if differ:
            raise StoreError(
                f"{out} holds an unfinished build of another config; fields that differ: "
                f"{', '.join(differ)}. Run it with its own config to finish it, pass "
                "--overwrite to start again, or choose another output path"
            )
        return "resume"
    if manifest.exists():
        if state.exists():  # the rest of a finished build's state (see remove_state)
            remove_state(out)
        old = json.loads(manifest.read_text())
        differ = diff_fields(old.get("config", {}), wanted)
        if differ:
            raise StoreError(
                f"{out} holds a chip dataset built from another config; fields that differ: "
                f"{', '.join(differ)}. Pass --overwrite to replace it, or choose another "
                "output path"
            )
        return "complete"
    if out.exists() and any(p.name != STATE_DIR for p in out.iterdir()):
        raise StoreError(f"{out} exists and is not a geochip store; choose another path")
    return "fresh"


def _clear(out: Path | ObjectPath) -> None:
    """Remove a store (``--overwrite``): the manifest first, so that it is never complete
    and half removed; in object storage all but the writer's lock."""
    (out / "manifest.json").unlink(missing_ok=True)
    if isinstance(out, ObjectPath):
        for entry in out.iterdir():
            if entry.name == STATE_DIR:
                remove_state(out)
            else:
                remove_tree(entry)
    else:
        remove_tree(out)
