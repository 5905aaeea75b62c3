"""The Typer application, the consoles every command module prints to, and the conventions
every command shares:

* lists: an option that takes several names takes them repeated (``--bands red --bands nir``)
  and comma-separated (``--bands red,nir``), or both: :func:`split_list`;
* progress: every long-running command has ``--progress/--no-progress``; output: a command
  that writes takes ``--out``; overwrite: a command that refuses to replace what it wrote
  before takes ``--overwrite`` (``tests/test_consistency.py`` walks every command's options);
* flags are shown without a type (no ``<bool>`` after ``--overwrite``: :class:`GeochipCommand`);
* the command as typed, shell-quoted, for hints such as "run it again to resume":
  :func:`rerun_command`; after Ctrl-C a command in :data:`RESUMING` prints it;
* a usage error (unknown option, bad or missing value) is one line like every refusal,
  ``error: CommandLineError: ...`` naming the help to read, exit status 2.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable, Iterable
from typing import Any

import typer
from rich.console import Console
from typer.core import TyperCommand, TyperGroup

from .._version import __version__
from ..core.security import redact
from ..errors import CommandLineError

__all__ = [
    "GeochipCommand",
    "GeochipGroup",
    "GeochipTyper",
    "EXIT_INTERRUPTED",
    "RESUMING",
    "app",
    "console",
    "err_console",
    "rerun_command",
    "split_list",
]


def _no_flag_types(params: list[Any]) -> list[Any]:
    """Flags (``--overwrite/--no-overwrite``, ``--help``) take no value: an empty metavar
    keeps typer's help from showing ``<bool>`` after them. (Duck-typed: typer may bring its
    own copy of click.) Options that take a list show how to give one (``<a,b,...>``, also
    repeatable) instead of ``<list[str]>``."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
        elif getattr(param, "multiple", False) and param.metavar is None:
            commas = "separate with commas" in (getattr(param, "help", None) or "")
            param.metavar = "<a,b,...>" if commas else "<text>"  # (repeatable)
    return params


#: Exit status after Ctrl-C.
EXIT_INTERRUPTED = 130
#: Commands that resume what an interrupted run did when the same command runs again.
RESUMING = frozenset({"build", "timeseries", "predict", "select"})


def _usage_error(err: typer.TyperException, ctx: Any) -> CommandLineError:
    """Click's usage error as a one-line named refusal that names the help to read."""
    where = getattr(err, "ctx", None) or ctx
    names: list[str] = []
    while where is not None and where.parent is not None:  # the root is "geochip"
        names.append(where.info_name)
        where = where.parent
    command = " ".join(["geochip", *reversed(names)])
    message = err.format_message().rstrip(".")
    return CommandLineError(f"{message}; see `{command} --help`")


def _is_help_request(err: Exception) -> bool:
    return type(err).__name__ == "NoArgsIsHelpError"  # a bare group: shows its help


class GeochipCommand(TyperCommand):
    """A command whose help shows no type after its flags, whose usage errors are one line,
    and which after Ctrl-C says how to resume (status 130)."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _no_flag_types(super().get_params(ctx))

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except typer.TyperException as err:
            if _is_help_request(err):
                raise
            raise _usage_error(err, ctx) from None

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            hint = (
                f": run `{rerun_command()}` again to resume where it stopped"
                if self.name in RESUMING
                else ""
            )
            err_console.print(f"interrupted{hint}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None


class GeochipGroup(TyperGroup):
    """A command group whose help shows no type after its flags and whose usage errors
    (an unknown command) are one line."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _no_flag_types(super().get_params(ctx))

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except typer.TyperException as err:
            if _is_help_request(err):
                raise
            raise _usage_error(err, ctx) from None

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        try:
            return super().resolve_command(ctx, args)
        except typer.TyperException as err:
            raise _usage_error(err, ctx) from None


class GeochipTyper(typer.Typer):
    """``typer.Typer`` whose commands and groups are :class:`GeochipCommand` and
    :class:`GeochipGroup` unless told otherwise."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("cls", GeochipGroup)
        super().__init__(**kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
        kwargs["cls"] = kwargs.get("cls") or GeochipCommand
        return super().command(*args, **kwargs)


app = GeochipTyper(
    name="geochip",
    help="Earth-observation rasters to deep-learning training data: chips, cubes, datasets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"geochip {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_show_version,
        is_eager=True,
        help="Print geochip's version and exit (`geochip versions`: every library's).",
    ),
) -> None:
    """Earth-observation rasters to deep-learning training data: chips, cubes, datasets."""


def split_list(values: Iterable[str] | str | None) -> list[str] | None:
    """The items of a list option given repeated, comma-separated, or both; None when none.

    >>> split_list(["red,green", " nir08 ", "blue,"])
    ['red', 'green', 'nir08', 'blue']
    >>> split_list(None) is None, split_list("a,b")
    (True, ['a', 'b'])
    """
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    items = [piece.strip() for value in values for piece in value.split(",") if piece.strip()]
    return items or None


def rerun_command(argv: list[str] | None = None) -> str:
    """The command as it was typed (``geochip`` and every argument, shell-quoted and
    redacted): what to run again to resume.

    >>> rerun_command(["build", "my config.yaml", "--out", "runs/a", "--no-progress"])
    "geochip build 'my config.yaml' --out runs/a --no-progress"
    """
    args = sys.argv[1:] if argv is None else argv
    return redact(shlex.join(["geochip", *args]))
