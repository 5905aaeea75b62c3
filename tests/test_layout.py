"""The house: floors that import only downwards, no circles, no geochip.testing in the
package, imports at the top of modules (or a reason why not), small modules, and a map in
docs/design.md that lists exactly the modules that exist."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "geochip"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
MAX_LINES = 600


def _lint_imports(pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
    )


def _modules() -> list[str]:
    return sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py"))


def test_the_floors_hold() -> None:
    result = _lint_imports()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


def test_an_upward_import_a_circle_and_a_testing_import_break_the_contracts(
    tmp_path: Path,
) -> None:
    copy = tmp_path / "geochip"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / "core" / "grid.py", "a") as f:  # the ground floor imports the CLI
        f.write("\nfrom ..cli import app as _app  # noqa\n")
    with open(copy / "read" / "load.py", "a") as f:  # the package imports the fixtures
        f.write("\nfrom ..testing import make_cog as _make_cog  # noqa\n")
    with open(copy / "plan" / "chips.py", "a") as f:  # plan.chips <-> plan.scenes
        f.write("\nfrom .scenes import plan_scenes as _plan_scenes  # noqa\n")
    result = _lint_imports(pythonpath=tmp_path)
    assert result.returncode != 0
    assert "0 kept, 3 broken" in result.stdout
    assert "geochip.core.grid -> geochip.cli" in result.stdout
    assert "geochip.read.load -> geochip.testing" in result.stdout


def _function_imports(path: Path) -> list[tuple[int, ast.Import | ast.ImportFrom, str]]:
    """Imports inside functions (not TYPE_CHECKING blocks): (line, node, its text with the
    line above)."""
    source = path.read_text()
    lines = source.splitlines()
    out = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for inner in ast.walk(node):
            if isinstance(inner, ast.Import | ast.ImportFrom):
                end = inner.end_lineno or inner.lineno
                text = "\n".join(lines[inner.lineno - 2 : end])
                out.append((inner.lineno, inner, text))
    return out


def test_geochip_imports_are_at_the_top_of_modules() -> None:
    # the CLI's commands import what they run when they run (the measured exception,
    # explained in geochip/cli/__init__.py)
    inside = []
    for name in _modules():
        if name.startswith("cli/"):
            continue
        for line, node, _ in _function_imports(PACKAGE / name):
            internal = isinstance(node, ast.ImportFrom) and (
                node.level > 0 or (node.module or "").startswith("geochip")
            )
            if internal:
                inside.append(f"{name}:{line}")
    assert inside == []


def test_every_import_inside_a_function_says_why() -> None:
    silent = []
    for name in _modules():
        for line, node, text in _function_imports(PACKAGE / name):
            internal_cli = (
                name.startswith("cli/") and isinstance(node, ast.ImportFrom) and node.level > 0
            )
            if not internal_cli and not re.search(r"#.*\blazy\b", text):
                silent.append(f"{name}:{line}: {ast.unparse(node)}")
    assert silent == []


def test_no_module_is_a_mansion() -> None:
    sizes = {name: len((PACKAGE / name).read_text().splitlines()) for name in _modules()}
    assert {n: s for n, s in sizes.items() if s > MAX_LINES} == {}


def _design_map() -> tuple[list[str], list[str]]:
    """(the floors, the paths) drawn in docs/design.md's "Where things live"."""
    text = (ROOT / "docs" / "design.md").read_text()
    section = text.split("## Where things live", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```\n(.*?)```", section, re.S)
    floors_block, tree_block = blocks[0], blocks[1]
    floors = [
        m.group(1).strip()
        for m in (re.match(r"^\s*\d+\s+(.+)$", ln) for ln in floors_block.splitlines()[1:])
        if m
    ]
    paths: list[str] = []
    stack: list[tuple[int, str]] = []
    for line in tree_block.splitlines()[1:]:
        m = re.match(r"^( *)(\S+)", line)
        if not m:
            continue
        depth, entry = len(m.group(1)), m.group(2)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parent = "".join(p for _, p in stack)
        if entry.endswith("/"):
            stack.append((depth, entry))
            paths.append(parent + entry + "__init__.py")
        else:
            paths.append(parent + entry)
    return floors, paths


def test_the_map_in_the_design_lists_every_module() -> None:
    _, paths = _design_map()
    assert sorted(paths) == _modules()


def test_the_floors_in_the_design_are_the_contract() -> None:
    floors, _ = _design_map()
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contract = next(c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers")
    assert floors == contract["layers"]


def test_every_module_says_what_it_is() -> None:
    missing = []
    for name in _modules():
        doc = ast.get_docstring(ast.parse((PACKAGE / name).read_text()))
        if not doc or "TODO" in doc:
            missing.append(name)
    assert missing == []


def test_no_script_folder_shadows_a_standard_module() -> None:
    """A script runs with its folder first on sys.path: benchmarks/select.py made every
    benchmark's `import subprocess` import it instead of the standard `select`."""
    root = Path(__file__).parents[1]
    for folder in ("benchmarks", "scripts", "examples"):
        shadowing = {p.stem for p in (root / folder).glob("*.py")} & sys.stdlib_module_names
        assert not shadowing, (folder, shadowing)
