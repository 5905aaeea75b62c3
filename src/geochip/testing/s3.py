"""A real S3 API on loopback: moto's server mode (``moto[server]``, a dev dependency) started
on a free port (:class:`S3Server`). boto3, s3fs, obstore and GDAL (``/vsis3/``) all talk to
it through the environment :meth:`S3Server.environ` gives: the endpoint as the AWS SDKs read
it (``AWS_ENDPOINT_URL``) and as GDAL reads it (``AWS_S3_ENDPOINT``, ``AWS_HTTPS=NO``,
``AWS_VIRTUAL_HOSTING=FALSE``), and throwaway credentials. Put
:class:`~geochip.testing.proxy.FaultProxy` in front of :attr:`S3Server.endpoint` to inject
latency and faults.

Example:
    >>> import os
    >>> from geochip.core.storage import filesystem
    >>> with S3Server() as s3:
    ...     s3.create_bucket("demo-bucket")
    ...     os.environ.update(s3.environ())
    ...     fs, path = filesystem("s3://demo-bucket/a.txt")
    ...     _ = fs.pipe_file(path, b"hello")
    ...     fs.invalidate_cache()
    ...     data = fs.cat_file(path)
    ...     for key in s3.environ():
    ...         del os.environ[key]
    >>> data
    b'hello'
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Self

from .rustac import ServerProcess, free_port

__all__ = ["S3Server"]


class S3Server(ServerProcess):
    """``moto_server`` on ``127.0.0.1:<free port>``, stopped on exit (its buckets live in
    its memory only)."""

    def __init__(self, region: str = "us-east-1") -> None:
        self.region = region
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def environ(self, endpoint: str | None = None) -> dict[str, str]:
        """Environment variables that point boto3, s3fs, obstore and GDAL at ``endpoint``
        (this server, or a proxy in front of it) with throwaway credentials."""
        url = endpoint or self.endpoint
        return {
            "AWS_ACCESS_KEY_ID": "geochip-test-key",
            "AWS_SECRET_ACCESS_KEY": "geochip-test-secret",
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ENDPOINT_URL": url,
            "AWS_ALLOW_HTTP": "true",
            "AWS_S3_ENDPOINT": url.split("://", 1)[1],
            "AWS_HTTPS": "NO",
            "AWS_VIRTUAL_HOSTING": "FALSE",
        }

    def start(self) -> Self:
        executable = Path(sys.executable).parent / "moto_server"
        command = str(executable) if executable.exists() else shutil.which("moto_server")
        if command is None:
            raise FileNotFoundError(
                "the `moto_server` command is not installed; install the dev group "
                "(pip install 'moto[server]')"
            )
        self.port = free_port()
        self._process = subprocess.Popen(
            [command, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return self.wait(self.endpoint + "/moto-api/", 30)

    def create_bucket(self, name: str) -> None:
        """Create bucket ``name`` (S3 naming rules: 3-63 lowercase letters, digits, ``-``)."""
        request = urllib.request.Request(f"{self.endpoint}/{name}", method="PUT")
        urllib.request.urlopen(request, timeout=10).close()

    def reset(self) -> None:
        """Forget every bucket and object (moto's reset API), between tests."""
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        urllib.request.urlopen(request, timeout=10).close()
