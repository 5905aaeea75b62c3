"""The HTTP session STAC APIs and catalogs over HTTP are read through: retries with backoff
on 429/5xx and resets (``Retry-After`` honoured, capped), a bound on open requests, a
timeout, the href policy checked before each request, secrets redacted from every error.

Every connection is pinned: it resolves the host, checks every address against the href
policy (:meth:`geochip.core.hrefs.HrefPolicy.resolve`) and connects to a checked address,
while TLS (SNI, certificate) and the ``Host`` header keep the name. A name that resolved to
a public address when checked cannot send the connection to ``127.0.0.1`` or a metadata
address later (DNS rebinding), and a redirect is checked the same way. Through a proxy
(``HTTP(S)_PROXY``) the proxy resolves the names: only the names are checked then.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import pystac
import requests
import urllib3.connection
import urllib3.connectionpool
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from ..core.hrefs import HrefPolicy
from ..core.security import redact
from ..errors import CatalogError, CatalogUnreachableError, HrefPolicyError, InputError
from .items import CheckedStacIO

log = logging.getLogger(__name__)

_RETRY_STATUS = (429, 500, 502, 503, 504)


class _CappedRetry:
    """Factory of urllib3 ``Retry`` objects whose ``Retry-After`` wait is capped."""

    @staticmethod
    def make(retries: int, backoff: float, max_wait: float) -> Any:
        class CappedRetry(Retry):
            MAX_RETRY_AFTER = max_wait

            def get_retry_after(self, response: Any) -> float | None:
                value = super().get_retry_after(response)
                return None if value is None else min(value, self.MAX_RETRY_AFTER)

        return CappedRetry(
            total=retries,
            connect=retries,
            read=retries,
            status=retries,
            other=0,
            backoff_factor=backoff,
            backoff_max=max_wait,
            status_forcelist=_RETRY_STATUS,
            allowed_methods=None,  # search by POST is idempotent
            respect_retry_after_header=True,
            raise_on_status=False,
        )


class _Refused(Exception):
    """An address the policy refuses, raised inside a connection. Not an OSError, so urllib3
    neither retries it nor wraps it; :meth:`HttpSession.send` raises the error it carries."""

    def __init__(self, error: HrefPolicyError) -> None:
        super().__init__(str(error))
        self.error = error


class _PinnedConnection(urllib3.connection.HTTPConnection):
    """Connects only to an address of the host that the policy checked (module doc)."""

    policy: HrefPolicy = HrefPolicy.trusted()

    def _new_conn(self) -> Any:
        name = self._dns_host
        try:
            addresses = self.policy.resolve(name, self.port, f"{name}:{self.port}")
        except HrefPolicyError as err:
            raise _Refused(err) from None
        except OSError as err:  # fail closed: a name not checked is not connected to
            raise urllib3.exceptions.NameResolutionError(self.host, self, err) from err  # type: ignore[arg-type]
        last: Exception | None = None
        for address in addresses:
            self._dns_host = address  # the socket goes to the checked address...
            try:
                return super()._new_conn()
            except (urllib3.exceptions.NewConnectionError, urllib3.exceptions.TimeoutError) as e:
                last = e
            finally:
                self._dns_host = name  # ...TLS and the Host header keep the name
        assert last is not None
        raise last


class _PinnedHTTPSConnection(_PinnedConnection, urllib3.connection.HTTPSConnection):
    pass


def _pinned_adapter(policy: HrefPolicy, **kw: Any) -> HTTPAdapter:
    """A requests adapter whose direct connections are pinned to checked addresses."""
    http_conn = type("PinnedConnection", (_PinnedConnection,), {"policy": policy})
    https_conn = type("PinnedHTTPSConnection", (_PinnedHTTPSConnection,), {"policy": policy})
    http_pool = type(
        "PinnedPool", (urllib3.connectionpool.HTTPConnectionPool,), {"ConnectionCls": http_conn}
    )
    https_pool = type(
        "PinnedHTTPSPool",
        (urllib3.connectionpool.HTTPSConnectionPool,),
        {"ConnectionCls": https_conn},
    )

    class PinnedAdapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = {"http": http_pool, "https": https_pool}

    return PinnedAdapter(**kw)


class HttpSession:
    """Shared by the API and static-over-HTTP readers of one catalog."""

    def __init__(
        self,
        *,
        headers: Mapping[str, str],
        timeout: float,
        retries: int,
        backoff: float,
        max_requests: int,
        policy: HrefPolicy,
    ) -> None:
        if max_requests < 1:
            raise InputError(f"max_requests must be at least 1, got {max_requests}")
        if retries < 0:
            raise InputError(f"retries must be 0 or more, got {retries}")
        self.session = requests.Session()
        self.session.headers.update(dict(headers))
        retry = _CappedRetry.make(retries, backoff, max_wait=max(backoff * 2**retries, 1.0) * 4)
        adapter = _pinned_adapter(
            policy, max_retries=retry, pool_connections=max_requests, pool_maxsize=max_requests
        )
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.timeout = timeout
        self.retries = retries
        self.slots = threading.BoundedSemaphore(max_requests)
        self.policy = policy
        self.in_flight = 0
        self.max_in_flight = 0
        self._count_lock = threading.Lock()

    def send(
        self, method: str, url: str, *, json_body: Any = None, params: Any = None
    ) -> requests.Response:
        """One request (with retries), within the bound on open requests."""
        self.policy.check(url)
        log.debug(
            "%s %s%s",
            method,
            redact(url),
            f" {redact(json.dumps(json_body))}" if json_body is not None else "",
        )
        with self.slots:
            with self._count_lock:
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                response = self.session.request(
                    method, url, json=json_body, params=params, timeout=self.timeout
                )
            except _Refused as refused:
                raise HrefPolicyError(f"{method} {redact(url)}: {refused.error}") from None
            except requests.exceptions.RequestException as err:
                raise CatalogUnreachableError(
                    f"cannot reach {redact(url)} after {self.retries + 1} attempts: "
                    f"{redact(_short(err))}; check the URL and the network, or raise "
                    "retries/timeout"
                ) from None
            finally:
                with self._count_lock:
                    self.in_flight -= 1
        if not 200 <= response.status_code < 300:
            body = redact(response.text[:300].strip())
            retried = (
                f" after {self.retries + 1} attempts"
                if response.status_code in _RETRY_STATUS
                else ""
            )
            raise CatalogError(
                f"{method} {redact(url)} answered HTTP {response.status_code}{retried}: "
                f"{body or response.reason}"
            )
        return response

    def get_json(self, url: str) -> Any:
        response = self.send("GET", url)
        try:
            return response.json()
        except ValueError:
            raise CatalogError(
                f"{redact(url)} did not answer JSON (content-type "
                f"{response.headers.get('content-type')!r}); is it a STAC catalog or API?"
            ) from None


def _short(err: BaseException) -> str:
    text = str(err)
    reason = getattr(err, "args", [None])[0]
    inner = getattr(reason, "reason", None)
    if inner is not None:
        text = f"{type(inner).__name__}: {inner}"
    return text[:300]


def policy_io(http: HttpSession) -> pystac.StacIO:
    """A pystac StacIO that reads through ``http`` and refuses what the policy refuses."""

    class PolicyStacIO(CheckedStacIO):
        def read_text(self, source: Any, *args: Any, **kwargs: Any) -> str:
            href = str(source.href if isinstance(source, pystac.Link) else source)
            checked = http.policy.check(href)
            if urlsplit(checked).scheme in {"http", "https"}:
                return str(http.send("GET", checked).text)
            return str(super().read_text(checked, *args, **kwargs))

    return PolicyStacIO()
