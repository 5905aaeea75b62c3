"""The README's code blocks run: Python blocks in one namespace, bash blocks line by line."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def _blocks(path: Path, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", path.read_text(), flags=re.S)


def _with_examples(folder: Path) -> None:
    """The README's blocks run from a fresh folder that holds a copy of examples/."""
    import shutil

    shutil.copytree(ROOT / "examples", folder / "examples")


def test_readme_python_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _with_examples(tmp_path)
    monkeypatch.chdir(tmp_path)
    blocks = _blocks(ROOT / "README.md", "python")
    assert len(blocks) >= 2
    namespace: dict[str, object] = {"__name__": "__readme__"}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["batch"]["image"].shape[1:] == (3, 128, 128)  # type: ignore[index]


def test_readme_cli_blocks_run(tmp_path: Path) -> None:
    commands = [
        line
        for block in _blocks(ROOT / "README.md", "bash")
        for line in block.splitlines()
        if line.startswith("geochip ")
    ]
    assert commands
    _with_examples(tmp_path)
    bindir = Path(sys.executable).parent
    for line in commands:
        args = shlex.split(line.split("#")[0])
        result = subprocess.run(
            [str(bindir / args[0]), *args[1:]],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "COLUMNS": "120"},
            check=False,
        )
        assert result.returncode == 0, f"{line}\n{result.stderr}"


def test_readme_shows_both_commands_first() -> None:
    text = (ROOT / "README.md").read_text()
    first_block = _blocks(ROOT / "README.md", "bash")[0]
    assert "make demo" in first_block and "make test" in first_block
    assert text.index("make demo") < text.index("## A tour of the Python API")
