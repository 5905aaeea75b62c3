"""The journal of a selection in progress (:class:`Journal`): each label's choices are
appended as they are made, so a selection killed part way resumes with only the labels that
are missing (:func:`~geochip.select.search.select_scenes` ``checkpoint=``; the CLI keeps it
beside the output as ``.<name>.journal.jsonl`` and removes it once the table is written).

A JSON-lines file: a header with the selection's settings (a journal made with other
settings is refused, never mixed in), then one line per label (its choices, with the chosen
items and their cloud covers) and one per scene skipped for lack of cloud information. A
line cut short by the kill is ignored.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pystac

from ..errors import InputError
from .cloud import CloudCover
from .periods import Period
from .ranking import Candidate, PeriodChoice

__all__ = [
    "Journal",
]

log = logging.getLogger(__name__)


def _choice_dict(choice: PeriodChoice) -> dict[str, Any]:
    return {
        "period": choice.period.index,
        "chosen": [
            {
                "item": c.item.to_dict(include_self_link=False, transform_hrefs=False),
                "when": c.when.isoformat(),
                "cloud": [
                    c.cloud.value,
                    c.cloud.method,
                    c.cloud.scope,
                    c.cloud.asset,
                    c.cloud.decimation,
                    c.cloud.pixels,
                ],
            }
            for c in choice.chosen
        ],
        "threshold": choice.threshold,
        "relax_steps": choice.relax_steps,
        "empty": choice.empty,
        "candidates": choice.candidates,
    }


def _choice(d: Mapping[str, Any], periods: Sequence[Period]) -> PeriodChoice:
    chosen = tuple(
        Candidate(
            pystac.Item.from_dict(c["item"], preserve_dict=False),
            dt.datetime.fromisoformat(c["when"]),
            CloudCover(*c["cloud"]),
        )
        for c in d["chosen"]
    )
    return PeriodChoice(
        periods[int(d["period"])],
        chosen,
        float(d["threshold"]),
        int(d["relax_steps"]),
        bool(d["empty"]),
        int(d["candidates"]),
    )


class Journal:
    """Append-only record of the labels done (thread-safe)."""

    def __init__(self, path: str | Path, settings: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self.settings = json.loads(json.dumps(dict(settings), default=str))
        self._lock = threading.Lock()
        self._started = False

    def load(
        self, periods: Sequence[Period]
    ) -> tuple[dict[str, list[PeriodChoice]], dict[str, str]]:
        """The labels done so far and the scenes skipped; empty when there is no journal."""
        if not self.path.exists():
            return {}, {}
        done: dict[str, list[PeriodChoice]] = {}
        skipped: dict[str, str] = {}
        lines = self.path.read_text().splitlines()
        for n, line in enumerate(lines):
            try:
                entry = json.loads(line)
            except ValueError:
                if n == len(lines) - 1:
                    continue  # the line being written when the selection was killed
                raise InputError(
                    f"the selection journal {self.path} is damaged at line {n + 1}; delete it "
                    "to start the selection again"
                ) from None
            if n == 0:
                if entry.get("settings") != self.settings:
                    raise InputError(
                        f"the selection journal {self.path} was made with other settings "
                        f"({entry.get('settings')}); delete it, or run with the same settings "
                        "to resume"
                    )
                continue
            if "label" in entry:
                done[str(entry["label"])] = [_choice(c, periods) for c in entry["choices"]]
            elif "skipped" in entry:
                skipped.update(entry["skipped"])
        self._started = True
        log.info("%s: resuming, %d labels done", self.path, len(done))
        return done, skipped

    def _append(self, entry: Mapping[str, Any]) -> None:
        with self._lock:
            if not self._started:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("w") as f:
                    f.write(json.dumps({"settings": self.settings}) + "\n")
                self._started = True
            with self.path.open("a") as f:
                f.write(json.dumps(entry, default=str) + "\n")
                f.flush()
                os.fsync(f.fileno())

    def record(self, label: str, choices: Sequence[PeriodChoice]) -> None:
        """Append a label's choices."""
        self._append({"label": label, "choices": [_choice_dict(c) for c in choices]})

    def record_skipped(self, item_id: str, why: str) -> None:
        """Append a scene left out for lack of cloud information."""
        self._append({"skipped": {item_id: why}})

    def remove(self) -> None:
        """Delete the journal (the selection is complete)."""
        self.path.unlink(missing_ok=True)
