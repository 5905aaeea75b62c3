"""Griffe extension for the API reference: doctests render as code.

A docstring's ``Example:`` section (the singular, which Google's style guide and Sphinx's
napoleon accept, and geochip's docstrings use) is read as griffe's ``Examples:`` section;
doctests in the body text (before any such section) are fenced as ``pycon`` code, so
their output is not read as Markdown."""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE = re.compile(r"^(\s*)Examples?:[ \t]*$", flags=re.M)


def _fence_doctests(text: str) -> str:
    """Each paragraph of ``text`` that starts with ``>>>`` fenced as ``pycon``."""
    out: list[str] = []
    inside = False
    for line in text.splitlines():
        if not inside and line.lstrip().startswith(">>>"):
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}```pycon")
            inside = True
        elif inside and not line.strip():
            out.append(f"{indent}```")
            inside = False
        out.append(line)
    if inside:
        out.append(f"{indent}```")
    return "\n".join(out)


class ExampleSections(griffe.Extension):
    """``Example:`` read as ``Examples:``; doctests in the body text fenced."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is None:
            return
        value = obj.docstring.value
        found = _EXAMPLE.search(value)
        head, tail = (value[: found.start()], value[found.start() :]) if found else (value, "")
        tail = _EXAMPLE.sub(r"\1Examples:", tail)
        obj.docstring.value = (_fence_doctests(head) if ">>>" in head else head) + tail
