"""A signing hook for tests and docs, importable by path like ``planetary_computer.sign``.

:func:`sign` appends a SAS-like token to http(s) hrefs (local paths are left alone), the way
the Planetary Computer's signer does. The token comes from the environment variable
:data:`TOKEN_ENV`, so that neither a config nor a task ever holds it: a build config says
``sources.sign: geochip.testing.signing:sign``, and each task imports the function and signs
just before it reads.

Example:
    >>> import os
    >>> os.environ[TOKEN_ENV] = "s3cr3t-token"
    >>> sign("https://data.example/x.tif")
    'https://data.example/x.tif?sv=2024-01-01&sp=r&sig=s3cr3t-token'
    >>> sign("/data/x.tif")
    '/data/x.tif'
    >>> del os.environ[TOKEN_ENV]
"""

from __future__ import annotations

import os

from ..errors import ConfigError

__all__ = [
    "TOKEN_ENV",
    "sign",
]

#: The environment variable holding the token :func:`sign` appends.
TOKEN_ENV = "GEOCHIP_TEST_SAS_TOKEN"


def sign(href: str) -> str:
    """``href`` with ``sv``, ``sp`` and ``sig`` (the token of :data:`TOKEN_ENV`) appended,
    when it is an http(s) URL."""
    if not href.startswith(("http://", "https://")):
        return href
    token = os.environ.get(TOKEN_ENV)
    if not token:
        raise ConfigError(f"the test signer needs the environment variable {TOKEN_ENV}")
    sep = "&" if "?" in href else "?"
    return f"{href}{sep}sv=2024-01-01&sp=r&sig={token}"
