"""Where a build keeps its resumable state (``<out>/.geochip/``) and what an output folder
holds before a build starts: nothing, an unfinished build of the same config (resume), a
finished one (up to date), or something else (refused, naming the fields that differ).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..errors import StoreError
from .config.model import BuildConfig, diff_fields

__all__ = [
    "STATE_DIR",
]

#: Where a build keeps its resumable state inside the output folder.
STATE_DIR = ".geochip"


def state_dir(store: str | Path) -> Path:
    """The folder of a build's resumable state inside the output folder."""
    return Path(store) / STATE_DIR


def record_path(store: str | Path, batch: int) -> Path:
    """Where the record of batch ``batch`` is written."""
    return state_dir(store) / "batches" / f"{batch:07d}.json"


def remove_state(store: str | Path) -> None:
    """Remove the state of a finished build: ``config.json`` (what says "unfinished") first,
    then the rest; a kill in between leaves a state without it beside the manifest, which
    :func:`check_existing` removes."""
    state = state_dir(store)
    (state / "config.json").unlink(missing_ok=True)
    shutil.rmtree(state, ignore_errors=True)


def check_existing(out: Path, config: BuildConfig, overwrite: bool) -> str:
    """'fresh', 'resume' or 'complete' for the output folder; refuse a changed config."""
    state = state_dir(out)
    manifest = out / "manifest.json"
    wanted = config.dataset_fields()
    if overwrite and out.exists():
        if not (manifest.exists() or state.exists()) and any(out.iterdir()):
            raise StoreError(f"{out} exists and is not a geochip store; choose another path")
        shutil.rmtree(out)
        return "fresh"
    stopped_before_first_write = state.exists() and not (state / "config.json").exists()
    if stopped_before_first_write and all(p.name == STATE_DIR for p in out.iterdir()):
        shutil.rmtree(state)  # nothing to resume
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
            shutil.rmtree(state)
        old = json.loads(manifest.read_text())
        differ = diff_fields(old.get("config", {}), wanted)
        if differ:
            raise StoreError(
                f"{out} holds a chip dataset built from another config; fields that differ: "
                f"{', '.join(differ)}. Pass --overwrite to replace it, or choose another "
                "output path"
            )
        return "complete"
    if out.exists() and any(out.iterdir()):
        raise StoreError(f"{out} exists and is not a geochip store; choose another path")
    return "fresh"
