"""The bad-input corpus: inputs users get wrong, each refused with a named error.

Every case asserts four things (issue 11): the named error (the class name the CLI prints, or
the exception type the API raises), a one-line message without a traceback on the CLI, the
exit status, and that nothing partial is left where the output would have been.

Each area has its own module (``test_<area>.py``); the fixtures here run a case.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

CliCase = Callable[..., subprocess.CompletedProcess[str]]


def leftovers(paths: Iterable[Path]) -> list[str]:
    """What exists under ``paths`` (files or folders, recursively): should be nothing."""
    found: list[str] = []
    for path in paths:
        if path.is_dir():
            found += [str(p) for p in path.rglob("*")] or [str(path)]
        elif path.exists():
            found.append(str(path))
    return found


def _refuse(
    *args: str,
    error: str,
    message: str = "",
    outputs: Iterable[Path] = (),
    status: int = 1,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "geochip", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        timeout=300,
        check=False,
    )
    shown = result.stdout + result.stderr
    assert result.returncode == status, shown
    assert "Traceback" not in shown, shown
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, shown
    assert lines[0].startswith(f"error: {error}: "), shown
    assert message in lines[0], shown
    assert not leftovers(outputs), leftovers(outputs)
    return result


@pytest.fixture
def refuse() -> CliCase:
    """``refuse(*cli_args, error=..., message=..., outputs=[...])`` runs ``geochip`` and
    checks the refusal: exit status 1, one line ``error: <ErrorName>: ...`` on stderr, no
    traceback, and nothing left under ``outputs``."""
    return _refuse
