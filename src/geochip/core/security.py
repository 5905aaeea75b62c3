"""Secrets: redaction, the names of credential options, and signing.

* :func:`redact` is the one function used wherever a URL, a header or a message that may
  hold one is printed (logs, exception messages, reprs, CLI output). It removes SAS
  signatures, AWS signatures, API keys and tokens from query strings, passwords from
  ``user:password@``, the values of ``Authorization``/``X-Api-Key``-like headers and of
  GDAL credential options in any of the forms they get printed in (``Name: value``,
  ``'Name': 'value'``, JSON, ``NAME=value``). Values registered with
  :func:`register_secret` (API keys given to :func:`geochip.open_catalog`) are removed
  wherever they appear.
* :data:`CREDENTIAL_OPTIONS` / :func:`is_credential_option`: the GDAL options that hold
  credentials. One list for every check: a build config refuses them, tasks never carry
  them, :class:`~geochip.core.env.GdalEnv` never shows their values.
* :func:`install_log_redaction` makes every log record go through :func:`redact`, so a
  library that logs request headers at DEBUG (pystac-client does) cannot leak a key.
* Request headers that carry secrets come from environment variables, named by the user
  (:func:`headers_from_env`: header name -> NAME of the variable): configs, task graphs and
  output files hold the names, never the values; :func:`check_headers` refuses a secret
  header given by value where it would be stored.
* A **signer** (``planetary_computer.sign`` or any ``href -> href`` callable) is applied by
  :func:`sign_href` just before a read and never stored: plans, selection tables and logs
  keep unsigned hrefs (:func:`unsign_href` strips a signature that a server put in).

What a catalog's hrefs may point to is :mod:`geochip.core.hrefs`.

Example:
    >>> redact("https://acc.blob.core.windows.net/c/a.tif?st=2024&se=2025&sig=abc%2Fdef&sp=r")
    'https://acc.blob.core.windows.net/c/a.tif?st=2024&se=2025&sig=REDACTED&sp=r'
    >>> redact("https://user:hunter2@example.com/x?api_key=k1")
    'https://user:REDACTED@example.com/x?api_key=REDACTED'
    >>> redact("Headers: {'X-Api-Key': 's3cr3t-key', 'Accept': 'application/json'}")
    "Headers: {'X-Api-Key': 'REDACTED', 'Accept': 'application/json'}"
    >>> redact("rasterio.Env(AWS_SECRET_ACCESS_KEY=abc123xyz, AWS_REGION=eu-west-1)")
    'rasterio.Env(AWS_SECRET_ACCESS_KEY=REDACTED, AWS_REGION=eu-west-1)'
"""

from __future__ import annotations

import logging
import os
import re
import threading
import traceback
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from ..errors import ConfigError, InputError

__all__ = [
    "CREDENTIAL_OPTIONS",
    "SECRET_HEADERS",
    "SECRET_KEYS",
    "Signer",
    "check_headers",
    "headers_from_env",
    "install_log_redaction",
    "is_credential_option",
    "redact",
    "register_secret",
    "register_secret_headers",
    "sign_href",
    "unsign_href",
]

#: Query parameters and JSON keys whose values are secrets (compared lower-case).
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

#: Header names whose values are secrets (compared lower-case).
SECRET_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "api-key",
        "apikey",
        "ocp-apim-subscription-key",
        "x-amz-security-token",
        "x-auth-token",
        "x-access-token",
        "private-token",
        "cookie",
        "set-cookie",
    }
)

#: GDAL configuration options whose value is a credential (GDAL's HTTP options and its
#: network file systems: /vsis3, /vsigs, /vsiaz, /vsioss, /vsiswift, /vsiwebhdfs). One list
#: for every check: they never go into a config or a task (:func:`is_credential_option`)
#: and their values are redacted wherever they are printed (:func:`redact`).
CREDENTIAL_OPTIONS = frozenset(
    {
        "GDAL_HTTP_USERPWD",
        "GDAL_HTTP_PROXYUSERPWD",
        "GDAL_HTTP_BEARER",
        "GDAL_HTTP_HEADERS",
        "GDAL_HTTP_COOKIE",
        "GDAL_HTTP_KEYPASSWD",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        "AZURE_STORAGE_ACCESS_KEY",
        "AZURE_STORAGE_ACCOUNT_KEY",  # adlfs's and obstore's name of GDAL's ACCESS_KEY
        "AZURE_STORAGE_KEY",  # the Azure CLI's
        "AZURE_STORAGE_ACCESS_TOKEN",
        "AZURE_STORAGE_CONNECTION_STRING",
        "AZURE_STORAGE_SAS_TOKEN",
        "AZURE_SAS",
        "GS_ACCESS_KEY_ID",
        "GS_SECRET_ACCESS_KEY",
        "GS_OAUTH2_CLIENT_SECRET",
        "GS_OAUTH2_PRIVATE_KEY",
        "GS_OAUTH2_REFRESH_TOKEN",
        "OSS_ACCESS_KEY_ID",
        "OSS_SECRET_ACCESS_KEY",
        "OS_PASSWORD",
        "OS_APPLICATION_CREDENTIAL_SECRET",
        "SWIFT_KEY",
        "SWIFT_AUTH_TOKEN",
        "WEBHDFS_DELEGATION",
    }
)
# Names GDAL may add later, by the words credentials are named with; a path to a file that
# holds a credential (..._FILE, cookie files) is not itself one.
_CREDENTIAL_WORDS = re.compile(
    r"SECRET|TOKEN|PASSWORD|PASSWD|USERPWD|BEARER|COOKIE|HEADERS|ACCESS_KEY|ACCOUNT_KEY|KEY_ID|SAS|"
    r"CONNECTION_STRING|PRIVATE_KEY"
)
_CREDENTIAL_FILE = re.compile(r"(FILE|JAR|DIR)$")


def is_credential_option(name: str) -> bool:
    """Whether the GDAL option ``name`` holds a credential (see :data:`CREDENTIAL_OPTIONS`).

    >>> is_credential_option("GDAL_HTTP_BEARER"), is_credential_option("GDAL_HTTP_TIMEOUT")
    (True, False)
    >>> is_credential_option("AWS_WEB_IDENTITY_TOKEN_FILE")  # a path, not the token
    False
    """
    name = name.upper()
    if name in CREDENTIAL_OPTIONS:
        return True
    return bool(_CREDENTIAL_WORDS.search(name)) and not _CREDENTIAL_FILE.search(name)


_REDACTED = "REDACTED"

_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_headers(
    headers: Mapping[str, str] | None = None,
    headers_env: Mapping[str, str] | None = None,
    *,
    option: str = "headers",
) -> None:
    """Refuse request headers that would put a secret where it is stored or shipped:
    ``headers`` (sent as given) must not name a secret header (:data:`SECRET_HEADERS`);
    ``headers_env`` maps header names to the NAMES of environment variables, not values.

    >>> check_headers({"Accept": "application/json"}, {"X-Api-Key": "MY_KEY"})
    >>> try:
    ...     check_headers({"X-Api-Key": "sk-live-1"})
    ... except ConfigError as err:
    ...     print(str(err)[:33])
    headers: X-Api-Key holds a secret
    """
    for name in headers or {}:
        if not _HEADER_NAME.fullmatch(name):
            raise ConfigError(f"{option}: {name!r} is not an HTTP header name")
        if name.lower() in SECRET_HEADERS:
            raise ConfigError(
                f"{option}: {name} holds a secret; take it from the environment "
                f"(headers_env: {{{name!r}: 'VARIABLE'}}, or --header-env {name}=VARIABLE / "
                "--api-key-env VARIABLE)"
            )
    env_option = option + ("-env" if option.startswith("--") else "_env")
    for name, env in (headers_env or {}).items():
        if not _HEADER_NAME.fullmatch(name):
            raise ConfigError(f"{env_option}: {name!r} is not an HTTP header name")
        if not isinstance(env, str) or not _ENV_NAME.fullmatch(env):
            raise ConfigError(
                f"{env_option}: the value of header {name!r} must be the NAME of an "
                "environment variable (letters, digits, _), not the secret itself"
            )


def headers_from_env(names: Mapping[str, str], *, option: str = "headers_env") -> dict[str, str]:
    """The headers ``names`` describes (header name -> NAME of an environment variable),
    with their values read from the environment now. Every value is registered as a
    secret (:func:`register_secret`). An unset or empty variable is a
    :class:`~geochip.errors.ConfigError` naming the variable and the header (not a value).
    """
    out: dict[str, str] = {}
    for header, env in names.items():
        value = os.environ.get(env)
        if not value:
            raise ConfigError(
                f"{option}: the environment variable {env} (for header {header}) is not set "
                "or empty; export it first"
            )
        register_secret(value)
        out[header] = value
    return out


_QUERY = re.compile(r"(?P<sep>^|[?&;\s])(?P<key>[^=&#\s?;]+)=(?P<value>[^&#\s;'\",]*)")

_USERINFO = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]+):(?P<pw>[^@/\s]+)@"
)

_HEADER_NAMES = "|".join(re.escape(h) for h in sorted(SECRET_HEADERS, key=len, reverse=True))

# Name: value / Name=value / 'Name': 'value' / "Name": "value" (dict reprs and JSON)
_HEADER = re.compile(
    rf"(?P<q1>['\"]?)(?P<key>{_HEADER_NAMES})(?P=q1)(?P<sep>\s*[:=]\s*)(?P<q2>['\"]?)"
    r"(?P<value>(?:bearer\s+|basic\s+|token\s+|sharedaccesssignature\s+)?[^\s,;'\"}&]+)",
    re.IGNORECASE,
)

_SECRET_NAMES = SECRET_KEYS | {n.lower() for n in CREDENTIAL_OPTIONS}
_KEY_NAMES = "|".join(re.escape(k) for k in sorted(_SECRET_NAMES, key=len, reverse=True))

_CREDENTIAL_NAMES = "|".join(sorted(CREDENTIAL_OPTIONS, key=len, reverse=True))
# NAME=value, NAME='value' (rasterio.Env and dict reprs, command lines, environment dumps)
_OPTION = re.compile(
    rf"(?P<key>\b(?:{_CREDENTIAL_NAMES}))(?P<sep>\s*=\s*)(?P<q>['\"]?)(?P<value>[^'\"\s,)&;]+)",
    re.IGNORECASE,
)
_JSON_KEY = re.compile(
    rf"(?P<q1>['\"])(?P<key>{_KEY_NAMES})(?P=q1)(?P<sep>\s*:\s*)(?P<q2>['\"])"
    r"(?P<value>[^'\"]+)(?P=q2)",
    re.IGNORECASE,
)

_SECRETS: set[str] = set()

_SECRETS_LOCK = threading.Lock()

_MIN_SECRET_LENGTH = 6


def register_secret(value: str | None) -> None:
    """Remember ``value`` as a secret: :func:`redact` removes it wherever it appears.

    Values shorter than 6 characters are not registered (they would redact ordinary
    words); they are still removed where they stand as the value of a known secret key.
    The key or signature in an Azure connection string is registered on its own too (an
    SDK's error may quote it without the rest).

    >>> register_secret("my-private-api-key-123")
    >>> redact("the key my-private-api-key-123 leaked")
    'the key REDACTED leaked'
    >>> register_secret("AccountName=me;AccountKey=c2VjcmV0LWtleS1ieXRlcw==;BlobEndpoint=x")
    >>> redact("signed with c2VjcmV0LWtleS1ieXRlcw==")
    'signed with REDACTED'
    """
    if not value or len(value) < _MIN_SECRET_LENGTH:
        return
    with _SECRETS_LOCK:
        _SECRETS.add(value)
        _SECRETS.add(quote(value, safe=""))
    if ";" in value:
        for part in value.split(";"):
            key, sep, secret = part.partition("=")
            if sep and key.strip().lower() in {"accountkey", "sharedaccesssignature"}:
                register_secret(secret)


def register_secret_headers(headers: Mapping[str, str] | None) -> None:
    """Register the values of the secret-looking headers in ``headers`` (see
    :data:`SECRET_HEADERS`), including the token after ``Bearer``/``Basic``."""
    for name, value in (headers or {}).items():
        if name.lower() in SECRET_HEADERS and value:
            register_secret(value)
            parts = value.split(None, 1)
            if len(parts) == 2:
                register_secret(parts[1])


def redact(text: str) -> str:
    """Replace secret values in URLs, headers and messages by ``REDACTED``.

    Query parameters and JSON keys named in :data:`SECRET_KEYS` (SAS ``sig``, AWS
    signatures, API keys, tokens) or :data:`CREDENTIAL_OPTIONS` (``NAME=value``),
    passwords in ``user:password@``, values of the headers in :data:`SECRET_HEADERS` in
    every printed form, and every value given to :func:`register_secret`.
    """
    if not text:
        return text
    with _SECRETS_LOCK:
        secrets = sorted(_SECRETS, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, _REDACTED)

    def _query(m: re.Match[str]) -> str:
        if m.group("key").lower() in _SECRET_NAMES and m.group("value"):
            return f"{m.group('sep')}{m.group('key')}={_REDACTED}"
        return m.group(0)

    text = _USERINFO.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:{_REDACTED}@", text)
    text = _HEADER.sub(
        lambda m: (
            f"{m.group('q1')}{m.group('key')}{m.group('q1')}{m.group('sep')}"
            f"{m.group('q2')}{_REDACTED}"
        ),
        text,
    )
    text = _JSON_KEY.sub(
        lambda m: (
            f"{m.group('q1')}{m.group('key')}{m.group('q1')}{m.group('sep')}"
            f"{m.group('q2')}{_REDACTED}{m.group('q2')}"
        ),
        text,
    )
    text = _OPTION.sub(lambda m: f"{m.group('key')}{m.group('sep')}{m.group('q')}{_REDACTED}", text)
    return _QUERY.sub(_query, text)


_factory_lock = threading.Lock()

_installed: list[bool] = []  # a flag that needs no `global`


def install_log_redaction() -> None:
    """Pass every log record through :func:`redact` (idempotent, process-wide).

    Installs a log-record factory: the message (with its arguments) and any attached
    traceback text are redacted when the record is created, whichever library logs it
    (pystac-client logs request headers and bodies at DEBUG, urllib3 logs URLs, rasterio
    logs paths). Only records that are actually emitted pay the cost. geochip calls this
    when it opens a catalog over the network or reads with a signer.
    """
    with _factory_lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            try:
                message = record.getMessage()
            except Exception:  # a bad format string: leave it to logging to report
                return record
            clean = redact(message)
            if clean != message:
                record.msg = clean
                record.args = None
            if record.exc_info and record.exc_info[1] is not None:
                record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)))
            return record

        logging.setLogRecordFactory(factory)
        _installed.append(True)


#: A signer: called with an unsigned href just before a read, returns the href to read
#: (e.g. with a SAS token appended). ``planetary_computer.sign`` is one.
Signer = Callable[[str], Any]

# Query parameters that make up an Azure SAS token or an AWS pre-signed URL.
_SAS_KEYS = frozenset(
    {
        "sv",
        "ss",
        "srt",
        "sp",
        "se",
        "st",
        "spr",
        "sig",
        "sr",
        "si",
        "sdd",
        "skoid",
        "sktid",
        "skt",
        "ske",
        "sks",
        "skv",
        "saoid",
        "suoid",
        "scid",
        "rscc",
        "rscd",
        "rsce",
        "rscl",
        "rsct",
    }
)


def sign_href(href: str, signer: Signer | None) -> str:
    """The href to read: ``signer(href)``, or ``href`` itself without a signer.

    The signer may return a string or an object with an ``href`` attribute
    (``planetary_computer.sign`` returns the same type it is given). The result is never
    logged unredacted and never stored by geochip.

    >>> sign_href("https://a.example/x.tif", lambda h: h + "?sv=1&sig=abc")
    'https://a.example/x.tif?sv=1&sig=abc'
    """
    if signer is None:
        return href
    install_log_redaction()
    signed = signer(href)
    if isinstance(signed, str):
        return signed
    inner = getattr(signed, "href", None)
    if isinstance(inner, str):
        return inner
    raise InputError(
        f"the signer {getattr(signer, '__name__', signer)!r} returned a "
        f"{type(signed).__name__} for {redact(href)!r}; a signer must return the signed href "
        "as a string"
    )


def unsign_href(href: str) -> str:
    """``href`` without signatures: SAS tokens, AWS pre-signed parameters and secret keys
    are removed from its query string (other parameters are kept, in order).

    >>> unsign_href("https://a.blob.core.windows.net/c/x.tif?sv=2021&se=2030&sig=abc&v=2")
    'https://a.blob.core.windows.net/c/x.tif?v=2'
    >>> unsign_href("s3://bucket/x.tif")
    's3://bucket/x.tif'
    """
    parts = urlsplit(href)
    if not parts.query:
        return href
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    names = {k.lower() for k, _ in pairs}
    is_sas = "sig" in names
    is_aws = "x-amz-signature" in names

    def secret(key: str) -> bool:
        low = key.lower()
        return (
            low in SECRET_KEYS
            or (is_sas and low in _SAS_KEYS)
            or (is_aws and low.startswith("x-amz-"))
        )

    kept = [(k, v) for k, v in pairs if not secret(k)]
    if len(kept) == len(pairs):
        return href
    return urlunsplit(parts._replace(query=urlencode(kept)))
