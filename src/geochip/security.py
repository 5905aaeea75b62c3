"""Secrets stay out of logs, errors and outputs: one redaction function for every URL.

Example:
    >>> redact("https://acc.blob.core.windows.net/c/a.tif?st=2024&se=2025&sig=abc%2Fdef&sp=r")
    'https://acc.blob.core.windows.net/c/a.tif?st=2024&se=2025&sig=REDACTED&sp=r'
    >>> redact("https://user:hunter2@example.com/x?api_key=k1")
    'https://user:REDACTED@example.com/x?api_key=REDACTED'
"""

from __future__ import annotations

import re

__all__ = ["SECRET_KEYS", "redact"]

#: Query parameters and header names whose values are secrets (compared lower-case).
SECRET_KEYS = frozenset(
    {
        "sig",
        "signature",
        "x-amz-signature",
        "x-amz-security-token",
        "x-amz-credential",
        "token",
        "access_token",
        "api_key",
        "apikey",
        "api-key",
        "key",
        "subscription-key",
        "ocp-apim-subscription-key",
        "authorization",
        "password",
        "secret",
        "client_secret",
        "code",
    }
)

_QUERY = re.compile(r"(?P<sep>[?&;])(?P<key>[^=&#\s]+)=(?P<value>[^&#\s]*)")
_USERINFO = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]+):(?P<pw>[^@/\s]+)@"
)
_HEADER = re.compile(
    r"(?P<key>authorization|x-api-key|api-key|ocp-apim-subscription-key)(?P<sep>\s*[:=]\s*)"
    r"(?P<value>(?:bearer\s+|basic\s+)?[^\s,;'\"]+)",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """Replace secret values in URLs and header-like text by ``REDACTED``.

    Query parameters named in :data:`SECRET_KEYS` (SAS ``sig``, AWS signatures, API keys,
    tokens), passwords in ``user:password@`` and ``Authorization: ...`` style headers.
    """

    def _query(m: re.Match[str]) -> str:
        if m.group("key").lower() in SECRET_KEYS and m.group("value"):
            return f"{m.group('sep')}{m.group('key')}=REDACTED"
        return m.group(0)

    text = _USERINFO.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:REDACTED@", text)
    text = _QUERY.sub(_query, text)
    return _HEADER.sub(lambda m: f"{m.group('key')}{m.group('sep')}REDACTED", text)
