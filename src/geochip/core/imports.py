"""Functions named by import path: ``"package.module:function"`` (or
``"package.module.function"``), the form configs and registry files use for signers and
download functions. One grammar, checked when a file is read; one loader, called when the
function is needed (in the task, for signers).

Example:
    >>> check_import_path("planetary_computer:sign")
    'planetary_computer:sign'
    >>> check_import_path("fetch everything")
    Traceback (most recent call last):
    ...
    ValueError: must be an import path 'package.module:function' (or 'package.module.function')
    >>> load_object("posixpath:normpath", "sources.sign")("/a/./b")
    '/a/b'
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError

__all__ = [
    "IMPORT_PATH",
    "check_import_path",
    "load_object",
]

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
#: "package.module:function" or "package.module.function"
IMPORT_PATH = re.compile(rf"{_IDENT}(\.{_IDENT})*(:{_IDENT}|\.{_IDENT})")


def check_import_path(value: str, name: str = "") -> str:
    """``value`` when it is an import path, else a ValueError (pydantic validators raise it;
    ``name``, when given, starts the message)."""
    if not IMPORT_PATH.fullmatch(value):
        raise ValueError(
            f"{name + ' ' if name else ''}must be an import path 'package.module:function' "
            "(or 'package.module.function')"
        )
    return value


def load_object(path: str, what: str) -> Callable[..., Any]:
    """The callable named by ``path``; a :class:`~geochip.errors.ConfigError` that starts
    with ``what`` (the field that named it) when it cannot be imported or called."""
    module_name, sep, name = path.partition(":")
    if not sep:
        module_name, _, name = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(
            f"{what}: cannot import {module_name!r} ({type(err).__name__}: {err}); install "
            "the package that provides it (where the tasks run, too) or fix the name"
        ) from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ConfigError(f"{what}: {module_name!r} has no function {name!r}")
    return fn  # type: ignore[no-any-return]
