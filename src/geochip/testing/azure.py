"""A real Azure Blob Storage API on loopback: Microsoft's emulator Azurite (the npm package
``azurite``; ``make test`` installs it into the venv as ``azurite-blob``) started on a free
port with its data in memory (:class:`AzuriteServer`). adlfs (``az://``) and GDAL
(``/vsiaz/``) both talk to it through the connection string :meth:`AzuriteServer.environ`
gives (``AZURE_STORAGE_CONNECTION_STRING`` with the emulator's well-known account and a
``BlobEndpoint`` on loopback).

Example:
    >>> import os
    >>> from geochip.core.storage import filesystem
    >>> with AzuriteServer() as azure:
    ...     azure.create_container("demo")
    ...     os.environ.update(azure.environ())
    ...     fs, path = filesystem("az://demo/a.txt")
    ...     _ = fs.pipe_file(path, b"hello")
    ...     data = fs.cat_file(path)
    ...     del os.environ["AZURE_STORAGE_CONNECTION_STRING"]
    >>> data
    b'hello'
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Self

from .rustac import ServerProcess, free_port

__all__ = ["ACCOUNT", "AzuriteServer"]

#: The emulator's well-known development account and its key (public: Microsoft documents
#: them for every Azurite and Azure Storage Emulator install).
ACCOUNT = "devstoreaccount1"
_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def azurite_executable() -> str:
    """Path of the ``azurite-blob`` command (next to the running Python, else on PATH)."""
    here = Path(sys.executable).parent / "azurite-blob"
    command = str(here) if here.exists() else shutil.which("azurite-blob")
    if command is None:
        raise FileNotFoundError(
            "the `azurite-blob` command (Azure's storage emulator) is not installed: `make "
            "test` installs it with npm (npm install azurite), which needs Node.js and npm"
        )
    return command


class AzuriteServer(ServerProcess):
    """``azurite-blob`` on ``127.0.0.1:<free port>``, stopped on exit (its containers live
    in its memory only)."""

    def __init__(self) -> None:
        self.port = 0
        self.key = _KEY
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """The blob endpoint of the account: ``http://127.0.0.1:<port>/devstoreaccount1``."""
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={self.key};"
            f"BlobEndpoint={self.endpoint};"
        )

    def environ(self) -> dict[str, str]:
        """Environment variables that point adlfs and GDAL at this server."""
        return {"AZURE_STORAGE_CONNECTION_STRING": self.connection_string()}

    def start(self) -> Self:
        self.port = free_port()
        self._process = subprocess.Popen(
            [
                azurite_executable(),
                "--blobHost", "127.0.0.1",
                "--blobPort", str(self.port),
                "--inMemoryPersistence",
                "--disableTelemetry",
                "--skipApiVersionCheck",
                "--silent",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        # it answers a listing it cannot authorise with 403: that is up
        return self.wait(f"{self.endpoint}?comp=list", 60, any_answer=True)

    def create_container(self, name: str) -> None:
        """Create container ``name`` (3-63 lowercase letters, digits, ``-``), with adlfs."""
        from adlfs import AzureBlobFileSystem  # lazy: the azure extra / the dev group

        AzureBlobFileSystem(connection_string=self.connection_string()).mkdir(name)
