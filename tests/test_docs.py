"""The README's code blocks run: each Python block in a fresh interpreter (a block whose first
line is ``# continues the block above`` runs after the block(s) before it, one of
``# follows "<section>"`` after the blocks of that section), bash blocks line by line."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
CONTINUES = "# continues the block above"
FOLLOWS = re.compile(r'#\s*follows "(?P<section>[^"]+)"')


def _blocks(path: Path, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", path.read_text(), flags=re.S)


@dataclass
class Program:
    """Python blocks of the README that run together in one fresh interpreter."""

    section: str
    blocks: list[str]

    @property
    def source(self) -> str:
        return "\n".join(self.blocks)


def readme_programs(path: Path = README) -> list[Program]:
    """The README's Python blocks grouped into programs, in order."""
    programs: list[Program] = []
    section = ""
    sections: dict[str, list[str]] = {}
    for match in re.finditer(
        r"^## (?P<title>[^\n]+)$|```python\n(?P<code>.*?)```", path.read_text(), flags=re.S | re.M
    ):
        if match["title"]:
            section = match["title"].strip()
            continue
        code = match["code"]
        first = code.splitlines()[0].strip() if code.strip() else ""
        follows = FOLLOWS.match(first)
        if first.startswith(CONTINUES):
            assert programs, f"the first Python block (in {section!r}) continues nothing"
            programs[-1].blocks.append(code)
        elif follows:
            earlier = sections.get(follows["section"])
            assert earlier, f"a block in {section!r} follows {follows['section']!r}: no such blocks"
            programs.append(Program(section, [*earlier, code]))
        else:
            programs.append(Program(section, [code]))
        sections.setdefault(section, []).append(code)
    return programs


PROGRAMS = readme_programs()


def _id(program: Program) -> str:
    return re.sub(r"\W+", "-", program.section.lower()).strip("-")


def _with_examples(folder: Path) -> None:
    """The README's blocks run from a fresh folder that holds a copy of examples/."""
    shutil.copytree(ROOT / "examples", folder / "examples")


def test_the_readme_has_python_blocks_grouped_into_programs() -> None:
    assert len(PROGRAMS) >= 10
    assert sum(len(p.blocks) for p in PROGRAMS) == len(_blocks(README, "python"))


@pytest.mark.parametrize("program", PROGRAMS, ids=[f"{n}-{_id(p)}" for n, p in enumerate(PROGRAMS)])
def test_readme_python_blocks_run_on_their_own(program: Program, tmp_path: Path) -> None:
    _with_examples(tmp_path)
    script = tmp_path / "readme_block.py"
    script.write_text(program.source)
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "MPLBACKEND": "Agg"},
        check=False,
    )
    assert result.returncode == 0, f"README, {program.section!r}:\n{result.stderr[-3000:]}"


def test_readme_cli_blocks_run(tmp_path: Path) -> None:
    commands = [
        line
        for block in _blocks(README, "bash")
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
    text = README.read_text()
    first_block = _blocks(README, "bash")[0]
    assert "make demo" in first_block and "make test" in first_block
    assert text.index("make demo") < text.index("## A tour of the Python API")


def test_readme_shows_how_to_install_with_the_extras() -> None:
    text = README.read_text()
    assert 'pip install "geochip[torch]"' in text
    assert "https://download.pytorch.org/whl/cpu" in text
    extras = re.search(
        r"\[project\.optional-dependencies\]\n(.*?)\n\[",
        (ROOT / "pyproject.toml").read_text(),
        flags=re.S,
    )
    assert extras
    for name in re.findall(r"^(\w+) = ", extras[1], flags=re.M):
        assert f"| `{name}` |" in text, f"the README's Install table misses the extra {name!r}"
