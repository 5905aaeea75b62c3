"""Which hrefs a catalog may make geochip read (the href policy), checked before any I/O.

:class:`HrefPolicy` says what a catalog's asset and link hrefs may point to. A catalog from
the network gets :meth:`HrefPolicy.for_remote`: no local paths, no ``file://``, no ``../``
escapes out of allowed roots, no GDAL ``/vsi...`` paths or driver prefixes, no link-local
or cloud-metadata addresses, and no loopback/private addresses unless the catalog itself
lives on one. :meth:`HrefPolicy.check` checks host names as written (including the legacy
IPv4 spellings curl accepts), without DNS. A harmless-looking name can resolve to a blocked
address (DNS rebinding: first a public answer, then ``127.0.0.1``), so
:meth:`HrefPolicy.resolve` resolves a host, checks every address it resolves to, and returns
them: the only addresses a connection may use. geochip's own HTTP connections
(:mod:`geochip.sources.http`) connect only to such a checked address.

Example:
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
import os
import posixpath
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urljoin, urlsplit

from ..errors import HrefPolicyError
from .security import redact

if TYPE_CHECKING:
    import pystac

__all__ = [
    "HrefPolicy",
    "check_item_hrefs",
    "resolve_host",
]

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


def _join_url(base: str, href: str) -> str:
    """``href`` relative to the URL ``base``; urllib joins only the schemes it knows
    (http...), so object-store URLs (``s3://bucket/a/b.json``) are joined here.

    >>> _join_url("s3://bucket/cat/items/a.json", "../../scenes/a.tif")
    's3://bucket/scenes/a.tif'
    """
    scheme = urlsplit(base).scheme.lower()
    if scheme in {"http", "https"}:
        return urljoin(base, href)
    bucket, _, key = base.split("://", 1)[1].partition("/")
    if href.startswith("/"):
        return f"{scheme}://{bucket}{posixpath.normpath(href)}"
    path = posixpath.normpath(posixpath.join(posixpath.dirname("/" + key), href))
    return f"{scheme}://{bucket}{path}"


def resolve_host(host: str, port: int | None = None) -> list[str]:
    """Every address ``host`` resolves to now (``socket.getaddrinfo``: DNS, /etc/hosts, or
    the literal address), in the resolver's order, without repeats. Raises
    :class:`socket.gaierror` (an OSError) when it does not resolve.

    >>> resolve_host("127.0.0.1", 80)
    ['127.0.0.1']
    """
    infos = socket.getaddrinfo(host.strip("[]"), port, proto=socket.IPPROTO_TCP)
    out: list[str] = []
    for *_, sockaddr in infos:
        address = str(sockaddr[0]).split("%", 1)[0]  # an IPv6 zone index is not the address
        if address not in out:
            out.append(address)
    return out


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
        own_hosts: host names the user gave (the catalog's own): they may resolve to
            loopback/private addresses even when ``allow_private`` is False (never to
            link-local or metadata addresses).
    """

    allow_local: bool = True
    local_roots: tuple[str, ...] = ()
    allow_vsi: bool = True
    allow_private: bool = True
    allow_link_local: bool = False
    schemes: frozenset[str] = field(default=_REMOTE_SCHEMES)
    own_hosts: frozenset[str] = frozenset()

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
            own_hosts=frozenset({host.lower().rstrip(".")} if host else ()),
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
                joined = _join_url(base, href)
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

    def resolve(self, host: str, port: int | None = None, href: str | None = None) -> list[str]:
        """Resolve ``host`` and check every address it resolves to; return them (connect
        only to one of these). Raises :class:`~geochip.errors.HrefPolicyError` naming
        ``href`` (or the host), the host and the address when any address is one this
        policy refuses (a harmless name that resolves to ``127.0.0.1`` or
        ``169.254.169.254`` is refused like the address itself), and
        :class:`socket.gaierror` when the host does not resolve.

        >>> "127.0.0.1" in HrefPolicy.trusted().resolve("localhost", 80)
        True
        >>> remote = HrefPolicy.for_remote("https://stac.example.com")
        >>> remote.resolve("localhost", 80)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        geochip.errors.HrefPolicyError: href 'localhost' is on host localhost, which resolves ...
        """
        addresses = resolve_host(host, port)
        what = href if href is not None else host
        name = host.strip("[]").lower().rstrip(".")
        for address in addresses:
            if _is_link_local(address) and not self.allow_link_local:
                raise self._deny(
                    what,
                    f"on host {host}, which resolves to the link-local or cloud-metadata "
                    f"address {address}",
                    "pass href_policy=HrefPolicy(allow_link_local=True) only if you must",
                )
            if (
                _is_private(address)
                and not self.allow_private
                and name not in self.own_hosts
                and not _is_link_local(address)
            ):
                raise self._deny(
                    what,
                    f"on host {host}, which resolves to the loopback or private address {address}",
                    "pass href_policy=HrefPolicy(allow_private=True) if you trust it",
                )
        return addresses

    def resolve_href(self, href: str) -> list[str]:
        """:meth:`resolve` for the host of http(s) ``href`` (the addresses to connect to);
        ``[]`` for other hrefs (local paths, s3://: nothing geochip connects to itself)."""
        parts = urlsplit(href)
        scheme = parts.scheme.lower()
        if scheme not in {"http", "https"} or not parts.hostname:
            return []
        port = parts.port or (443 if scheme == "https" else 80)
        return self.resolve(parts.hostname, port, href)


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
