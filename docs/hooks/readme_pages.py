"""MkDocs hook: the README's ``## `` sections become the guide's pages at build time.

Nothing is copied into ``docs/``: each build splits ``README.md`` at its ``## `` headings
into ``guide/<slug>.md`` pages (the text before the first heading and the "Contents" list
make ``index.md``), puts them in the nav where ``mkdocs.yml`` says ``Guide: README.md``, and
rewrites the README's links for their new place: ``#section`` to that section's page,
``docs/x.md`` to ``x.md``, ``CHANGELOG.md`` to the changelog page (made from
``CHANGELOG.md`` the same way). A section added to the README is a page on the next build.

It also writes ``reference/geochip.md``: every name of ``geochip.__all__``, documented where
it is defined (read statically from the ``_LAZY`` table of ``src/geochip/__init__.py``).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).parents[2]
PLACEHOLDER = "README.md"
SKIPPED = {"Contents"}  # the README's table of contents goes on the index page


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def _sections() -> tuple[str, list[tuple[str, str]]]:
    """(text before the first ``## ``, [(title, body)]) of the README."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return parts[0], list(zip(parts[1::2], parts[2::2], strict=True))


def _links(text: str, prefix: str, pages: dict[str, str]) -> str:
    """The README's links, rewritten for a page ``prefix`` deep (``""`` or ``"../"``)."""

    def anchor(match: re.Match[str]) -> str:
        slug = match[1]
        if slug in pages:
            return f"]({prefix}guide/{pages[slug]}.md)"
        return match[0]

    text = re.sub(r"\]\(#([\w-]+)\)", anchor, text)
    text = re.sub(r"\]\(docs/([\w./-]+\.md)\)", rf"]({prefix}\1)", text)
    return text.replace("](CHANGELOG.md)", f"]({prefix}changelog.md)")


def _top_level() -> str:
    """The page of ``geochip``'s top-level names, each from the module that defines it."""
    tree = ast.parse((ROOT / "src" / "geochip" / "__init__.py").read_text(encoding="utf-8"))
    table: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.AnnAssign | ast.Assign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "_LAZY" for t in targets):
                table = ast.literal_eval(node.value)  # type: ignore[arg-type]
    lines = [
        "# Top-level names (`geochip`)",
        "",
        "::: geochip",
        "    options:",
        "      members: false",
        "      show_root_heading: false",
        "",
    ]
    for name, module in sorted(table.items()):
        lines += [
            f"::: {module}.{name}",
            "    options:",
            "      show_root_full_path: false",
            "      heading_level: 2",
            "",
        ]
    return "\n".join(lines)


def on_config(config: Any) -> Any:
    """Replace the nav's ``Guide: README.md`` with one entry per README section."""
    _, sections = _sections()
    guide = [{title: f"guide/{_slug(title)}.md"} for title, _ in sections if title not in SKIPPED]
    nav = config["nav"] or []
    for n, entry in enumerate(nav):
        if isinstance(entry, dict) and list(entry.values()) == [PLACEHOLDER]:
            nav[n] = {next(iter(entry)): guide}
    return config


def on_files(files: Files, config: Any) -> Files:
    """Add the index, the guide pages and the changelog, generated from the README."""
    intro, sections = _sections()
    pages = {_slug(title): _slug(title) for title, _ in sections if title not in SKIPPED}
    contents = "".join(f"## {t}{b}" for t, b in sections if t in SKIPPED)
    index = _links(intro + contents, "", pages)
    files.append(File.generated(config, "index.md", content=index))
    for title, body in sections:
        if title in SKIPPED:
            continue
        page = f"# {title}\n{_links(body, '../', pages)}"
        files.append(File.generated(config, f"guide/{_slug(title)}.md", content=page))
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    files.append(File.generated(config, "changelog.md", content=changelog))
    files.append(File.generated(config, "reference/geochip.md", content=_top_level()))
    return files
