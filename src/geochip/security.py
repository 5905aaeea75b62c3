"""Secrets and untrusted catalogs: redaction, signing, API keys and the href policy.

* :func:`redact` is the one function used wherever a URL, a header or a message that may
  hold one is printed (logs, exception messages, reprs, CLI output). It removes SAS
  signatures, AWS signatures, API keys and tokens from query strings, passwords from
  ``user:password@`` and the values of ``Authorization``/``X-Api-Key``-like headers in any
  of the forms they get printed in (``Name: value``, ``'Name': 'value'``, JSON). Values
  registered with :func:`register_secret` (API keys given to :func:`geochip.open_catalog`)
  are removed wherever they appear.
* :func:`install_log_redaction` makes every log record go through :func:`redact`, so a
  library that logs request headers at DEBUG (pystac-client does) cannot leak a key.
* A **signer** (``planetary_computer.sign`` or any ``href -> href`` callable) is applied by
  :func:`sign_href` just before a read and never stored: plans, selection tables and logs
  keep unsigned hrefs (:func:`unsign_href` strips a signature that a server put in).
* :class:`HrefPolicy` says which hrefs a catalog may make geochip read. A catalog from the
  network gets :meth:`HrefPolicy.for_remote`: no local paths, no ``file://``, no ``../``
  escapes out of allowed roots, no GDAL ``/vsi...`` paths or driver prefixes, no link-local
  or cloud-metadata addresses, and no loopback/private addresses unless the catalog itself
  lives on one. :meth:`HrefPolicy.check` runs before any I/O.

Example:
    >>> redact("https://acc.blob.core.windows.net/c/a.tif?st=2024&se=2025&sig=abc%2Fdef&sp=r")
    'https://acc.blob.core.windows.net/c/a.tif?st=2024&se=2025&sig=REDACTED&sp=r'
    >>> redact("https://user:hunter2@example.com/x?api_key=k1")
    'https://user:REDACTED@example.com/x?api_key=REDACTED'
    >>> redact("Headers: {'X-Api-Key': 's3cr3t-key', 'Accept': 'application/json'}")
    "Headers: {'X-Api-Key': 'REDACTED', 'Accept': 'application/json'}"
    >>> policy = HrefPolicy.for_remote("https://earth-search.example.com/v1")
    >>> policy.check("https://data.example.com/scene/B04.tif")
    'https://data.example.com/scene/B04.tif'
    >>> policy.check("/etc/passwd")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    geochip.errors.HrefPolicyError: href '/etc/passwd' is a local path, which this ...
"""

from __future__ import annotations

import ipaddress
import logging
import os
import posixpath
import re
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urljoin, urlsplit, urlunsplit

from .errors import HrefPolicyError, InputError

if TYPE_CHECKING:
    import pystac

__all__ = [
    "SECRET_HEADERS",
    "SECRET_KEYS",
    "HrefPolicy",
    "Signer",
    "check_item_hrefs",
    "install_log_redaction",
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

_REDACTED = "REDACTED"
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
_KEY_NAMES = "|".join(re.escape(k) for k in sorted(SECRET_KEYS, key=len, reverse=True))
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

    >>> register_secret("my-private-api-key-123")
    >>> redact("the key my-private-api-key-123 leaked")
    'the key REDACTED leaked'
    """
    if not value or len(value) < _MIN_SECRET_LENGTH:
        return
    with _SECRETS_LOCK:
        _SECRETS.add(value)
        _SECRETS.add(quote(value, safe=""))


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
    signatures, API keys, tokens), passwords in ``user:password@``, values of the headers
    in :data:`SECRET_HEADERS` in every printed form, and every value given to
    :func:`register_secret`.
    """
    if not text:
        return text
    with _SECRETS_LOCK:
        secrets = sorted(_SECRETS, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, _REDACTED)

    def _query(m: re.Match[str]) -> str:
        if m.group("key").lower() in SECRET_KEYS and m.group("value"):
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
    return _QUERY.sub(_query, text)


# --------------------------------------------------------------------------------------
# Logs


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
                import traceback

                record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)))
            return record

        logging.setLogRecordFactory(factory)
        _installed.append(True)


# --------------------------------------------------------------------------------------
# Signing

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


# --------------------------------------------------------------------------------------
# Href policy

_REMOTE_SCHEMES = frozenset({"http", "https", "s3", "gs", "gcs", "az", "azure", "abfs", "abfss"})
_METADATA_HOSTS = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.azure.com",
        "169.254.169.254",
        "100.100.100.200",  # Alibaba Cloud metadata
        "fd00:ec2::254",  # AWS IPv6 metadata
    }
)
# GDAL "driver prefix" syntax that opens local files: HDF5:/path, GTIFF_RAW:/path, ...
_GDAL_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9_]*:(?!//)")


def _host_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address a host name stands for literally (no DNS), including the legacy
    IPv4 spellings curl and libc accept (``2852039166``, ``0xA9FEA9FE``, ``0251.0376...``);
    an IPv4-mapped IPv6 address gives its IPv4 address."""
    host = host.strip("[]").lower().rstrip(".")
    try:
        addr: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(host)
    except ValueError:
        if not (re.fullmatch(r"[0-9a-fx.]+", host) and re.search(r"\d", host)):
            return None
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _is_link_local(host: str) -> bool:
    if host.strip("[]").lower().rstrip(".") in _METADATA_HOSTS:
        return True
    addr = _host_address(host)
    return addr is not None and (addr.is_link_local or str(addr) in _METADATA_HOSTS)


def _is_private(host: str) -> bool:
    name = host.strip("[]").lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    addr = _host_address(host)
    return addr is not None and bool(
        addr.is_private
        or addr.is_loopback
        or addr.is_unspecified
        or addr.is_reserved
        or addr.is_multicast
    )


@dataclass(frozen=True)
class HrefPolicy:
    """Which hrefs geochip may read for a catalog.

    Attributes:
        allow_local: plain paths and ``file://`` URLs.
        local_roots: when not empty, local paths must resolve (``..`` and symlinks
            followed) inside one of these folders.
        allow_vsi: GDAL ``/vsi...`` paths and driver prefixes such as ``HDF5:/path``.
        allow_private: loopback, private (RFC 1918, unique-local) and unspecified hosts.
        allow_link_local: link-local addresses (``169.254.0.0/16``, ``fe80::/10``) and
            cloud metadata hosts (``169.254.169.254``, ``metadata.google.internal``...).
        schemes: URL schemes that are allowed for remote objects.
    """

    allow_local: bool = True
    local_roots: tuple[str, ...] = ()
    allow_vsi: bool = True
    allow_private: bool = True
    allow_link_local: bool = False
    schemes: frozenset[str] = field(default=_REMOTE_SCHEMES)

    @classmethod
    def trusted(cls) -> HrefPolicy:
        """For catalogs the user gave from local disk: anything but link-local/metadata."""
        return cls()

    @classmethod
    def for_remote(cls, base_url: str) -> HrefPolicy:
        """For catalogs from the network: remote objects only; loopback and private hosts
        only when ``base_url`` itself is on one (a catalog cannot reach further in)."""
        host = urlsplit(base_url).hostname or ""
        return cls(
            allow_local=False,
            allow_vsi=False,
            allow_private=_is_private(host),
            allow_link_local=False,
        )

    def _deny(self, href: str, why: str, fix: str) -> HrefPolicyError:
        return HrefPolicyError(
            f"href {redact(href)!r} is {why}, which this catalog may not make geochip read"
            f"{' (it came from the network)' if not self.allow_local else ''}; {fix}"
        )

    def check(self, href: str, base: str | None = None) -> str:
        """Resolve ``href`` (relative to ``base``, a URL or a file path) and return it, or
        raise :class:`~geochip.errors.HrefPolicyError` naming it and the way to allow it.

        >>> HrefPolicy.for_remote("http://127.0.0.1:8080/").check("items/a.json",
        ...     base="http://127.0.0.1:8080/collections/x")
        'http://127.0.0.1:8080/collections/items/a.json'
        """
        if not isinstance(href, str) or not href.strip():
            raise HrefPolicyError(f"empty or non-string href {href!r}")
        href = href.strip()
        if href.lower().startswith("/vsi"):
            return href if self.allow_vsi else self._raise_vsi(href)
        parts = urlsplit(href)
        scheme = parts.scheme.lower()
        drive = re.match(r"^[A-Za-z]:[\\/]", href) is not None
        if scheme == "file":
            return self._check_local(href, unquote(parts.path))
        if len(scheme) > 1 and scheme in self.schemes:
            return self._check_url(href, parts)
        if len(scheme) > 1 and href[len(scheme) + 1 :].startswith("//"):
            raise self._deny(
                href,
                f"a {scheme}: URL",
                f"allowed schemes are {', '.join(sorted(self.schemes))}",
            )
        if not drive and _GDAL_PREFIX.match(href):
            return href if self.allow_vsi else self._raise_vsi(href)
        if base is not None and not drive:
            base_parts = urlsplit(base)
            if base_parts.scheme.lower() in self.schemes:  # "/x" is root-relative on a URL
                joined = urljoin(base, href)
                return self._check_url(joined, urlsplit(joined))
        if base is not None and not os.path.isabs(href) and not drive:
            base_parts = urlsplit(base)
            base_path = unquote(base_parts.path) if base_parts.scheme == "file" else base
            return self._check_local(href, os.path.join(os.path.dirname(base_path), href))
        return self._check_local(href, href)

    def _raise_vsi(self, href: str) -> str:
        raise self._deny(
            href,
            "a GDAL /vsi path or driver prefix",
            "pass href_policy=HrefPolicy(allow_vsi=True) if you trust it",
        )

    def _check_local(self, href: str, local: str) -> str:
        if not self.allow_local:
            raise self._deny(
                href,
                "a local path",
                "pass href_policy=HrefPolicy(allow_local=True) if you trust it",
            )
        normal = posixpath.normpath(local) if "\\" not in local else os.path.normpath(local)
        if self.local_roots:
            real = os.path.realpath(normal)
            for root in self.local_roots:
                root_real = os.path.realpath(root)
                if os.path.commonpath([real, root_real]) == root_real:
                    return normal
            raise self._deny(
                href,
                f"outside the allowed folders {list(self.local_roots)} (resolved to {real!r})",
                "move the files under an allowed folder or add it to local_roots",
            )
        return normal

    def _check_url(self, href: str, parts: Any) -> str:
        scheme = parts.scheme.lower()
        if scheme not in self.schemes:
            raise self._deny(
                href,
                f"a {scheme}: URL",
                f"allowed schemes are {', '.join(sorted(self.schemes))}",
            )
        if scheme in {"http", "https"}:
            host = parts.hostname or ""
            if not host:
                raise HrefPolicyError(f"href {redact(href)!r} has no host")
            if _is_link_local(host) and not self.allow_link_local:
                raise self._deny(
                    href,
                    f"on a link-local or cloud-metadata address ({host})",
                    "pass href_policy=HrefPolicy(allow_link_local=True) only if you must",
                )
            if _is_private(host) and not self.allow_private and not _is_link_local(host):
                raise self._deny(
                    href,
                    f"on a loopback or private address ({host}) while the catalog is not",
                    "pass href_policy=HrefPolicy(allow_private=True) if you trust it",
                )
        return href


def check_item_hrefs(
    item: pystac.Item,
    policy: HrefPolicy,
    *,
    assets: Iterable[str] | None = None,
    base: str | None = None,
) -> None:
    """Check every asset href of ``item`` (or only ``assets``) against ``policy``; the error
    names the item and the asset. Hrefs are resolved against the item's self link, else
    ``base`` (the URL the item came from)."""
    base = item.get_self_href() or base
    for key, asset in item.assets.items():
        if assets is not None and key not in assets:
            continue
        try:
            policy.check(asset.href, base=base)
        except HrefPolicyError as err:
            raise HrefPolicyError(f"item {item.id!r}, asset {key!r}: {err}") from None
