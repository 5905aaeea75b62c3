"""The ``geochip`` command line (Typer): one module per command group, each registering its
commands on :data:`geochip.cli.app.app` when imported here.

Commands import what they run when they run (the imports inside the command functions):
``geochip --help`` then takes ~0.1 s instead of the ~3 s that importing every stage
(odc-stac, dask, xarray, zarr, geopandas, matplotlib) costs.
"""

from __future__ import annotations

import sys

from rich.markup import escape

from ..core.security import redact
from ..errors import GeochipError
from .app import app, err_console

# The order of these imports is the order of the commands in `geochip --help`.
# isort: off
from . import demo, build, chips, datasets, search, store, stats, timeseries, predict
# isort: on

__all__ = ["app", "main"]

COMMAND_MODULES = (demo, build, chips, datasets, search, store, stats, timeseries, predict)


def main() -> None:
    """Entry point: geochip errors become one red line and exit status 1, not a traceback.

    The line names the error (``error: BandNotFoundError: ...``) so that scripts and bug
    reports can tell one refusal from another; the message is redacted and on one line.
    """
    try:
        app()
    except GeochipError as err:
        message = " ".join(redact(str(err)).split())
        err_console.print(
            f"[red]error:[/] {type(err).__name__}: {escape(message)}",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
