"""HTTP plumbing shared by every connector: one session per account, timeouts, retries, errors.

Retries happen here, inside one call, for short outages (429 and 5xx, honouring Retry-After
up to ``MAX_INLINE_RETRY_AFTER`` seconds). The loop is ours rather than urllib3's so that the
Retry-After policy is explicit and testable with ``responses``. A vendor that asks for a longer
pause gets a ``RateLimitedError`` carrying its Retry-After, and the pipeline reschedules the job
in the database instead of holding a worker. Non-idempotent calls (POST) are retried only on 429,
where the vendor has said it did not process the request.
"""

from __future__ import annotations

import ipaddress
import json
import random
import socket
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, BinaryIO
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from . import base

USER_AGENT = "DSAR-Case-Manager/1.0 (+GDPR data subject requests)"
DEFAULT_TIMEOUT = (5.0, 30.0)  # (connect, read) seconds
MAX_INLINE_RETRY_AFTER = 30.0
CHUNK_SIZE = 1024 * 1024
MAX_REDIRECTS = 3
RETRY_STATUSES = frozenset({500, 502, 503, 504})
_sleep = time.sleep  # tests replace this to run retries instantly


def build_session(*, connect_retries: int = 3) -> requests.Session:
    """A session with a product User-Agent; urllib3 retries only failed connects (always safe)."""
    adapter = HTTPAdapter(
        max_retries=Retry(
            total=connect_retries,
            connect=connect_retries,
            read=0,
            status=0,
            other=0,
            backoff_factor=0.5,
            raise_on_status=False,
        )
    )
    session = requests.Session()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    # Never pick up proxies or .netrc credentials from the worker's environment by surprise.
    session.trust_env = False
    return session


def backoff_delay(attempt: int, *, base_delay: float = 0.5, cap: float = 20.0) -> float:
    """Exponential backoff with full jitter: attempt 1 → up to 0.5 s, 2 → 1 s, 3 → 2 s…"""
    return random.uniform(0, min(cap, base_delay * 2 ** (attempt - 1)))


def describe(method: str, url: str) -> str:
    """``GET /v1/gdpr/profiles``: the path only. Query strings carry emails and tokens."""
    return f"{method.upper()} {urlsplit(url).path}"


def send(
    session: requests.Session,
    vendor: str,
    method: str,
    url: str,
    *,
    attempts: int = 4,
    idempotent: bool | None = None,
    timeout: tuple[float, float] = DEFAULT_TIMEOUT,
    **kwargs: Any,
) -> requests.Response:
    """Perform one vendor call with retries; transport failures become typed ConnectorErrors.

    429 is retried for every method (the vendor did not process it); 5xx and timeouts only for
    idempotent methods, since a POST that failed half-way may have been processed. A Retry-After
    longer than MAX_INLINE_RETRY_AFTER is not slept on here: the response is returned and
    ``raise_for_status`` turns it into a RateLimitedError carrying the delay. Pass
    ``idempotent=False`` for a non-POST call that must not be repeated either.

    Redirects are not followed unless asked for: requests keeps custom headers such as
    ``x-api-token`` when a redirect leads to another host.
    """
    what = describe(method, url)
    if idempotent is None:
        idempotent = method.upper() != "POST"
    kwargs.setdefault("allow_redirects", False)
    for attempt in range(1, attempts + 1):
        last = attempt == attempts
        try:
            response = session.request(method, url, timeout=timeout, **kwargs)
        except requests.Timeout:
            if idempotent and not last:
                _sleep(backoff_delay(attempt))
                continue
            raise base.VendorUnavailableError(f"{vendor} did not answer {what} in time") from None
        except requests.ConnectionError:
            if idempotent and not last:
                _sleep(backoff_delay(attempt))
                continue
            raise base.VendorUnavailableError(f"{vendor} unreachable for {what}") from None
        except requests.RequestException as exc:
            raise base.VendorUnavailableError(
                f"{vendor} request {what} failed: {type(exc).__name__}"
            ) from None
        status = response.status_code
        retryable = status == 429 or (idempotent and status in RETRY_STATUSES)
        if not retryable or last:
            return response
        delay = parse_retry_after(response.headers.get("Retry-After"))
        if delay is not None and delay > MAX_INLINE_RETRY_AFTER:
            return response
        response.close()
        _sleep(backoff_delay(attempt) if delay is None else delay)
    raise AssertionError("unreachable")  # pragma: no cover


def raise_for_status(response: requests.Response, vendor: str, detail: str = "") -> None:
    """Map an HTTP error status to the typed error the pipeline understands."""
    status = response.status_code
    if status < 400:
        return
    what = describe(response.request.method or "GET", response.request.url or "")
    suffix = f": {detail}" if detail else ""
    if status in (401, 403):
        raise base.AuthenticationError(
            f"{vendor} refused the credentials on {what} (HTTP {status}){suffix}",
            status_code=status,
        )
    if status == 404:
        raise base.NotFoundError(
            f"{vendor} found nothing at {what} (HTTP 404){suffix}", status_code=404
        )
    if status == 429:
        raise base.RateLimitedError(
            f"{vendor} rate limited {what} (HTTP 429){suffix}",
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
            status_code=429,
        )
    if status >= 500:
        raise base.VendorUnavailableError(
            f"{vendor} failed on {what} (HTTP {status}){suffix}", status_code=status
        )
    raise base.VendorError(f"{vendor} rejected {what} (HTTP {status}){suffix}", status_code=status)


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, (when - datetime.now(UTC)).total_seconds())


def json_body(response: requests.Response, vendor: str) -> Any:
    """The decoded JSON body, or MalformedResponseError (HTML error pages, truncated bodies)."""
    what = describe(response.request.method or "GET", response.request.url or "")
    content_type = response.headers.get("Content-Type", "")
    try:
        return response.json()
    except (ValueError, json.JSONDecodeError):
        kind = content_type.split(";")[0] or "an unknown content type"
        raise base.MalformedResponseError(
            f"{vendor} answered {what} with unreadable content "
            f"({kind}, HTTP {response.status_code})"
        ) from None


def require_same_host(url: str, allowed_base_url: str, vendor: str) -> None:
    """Refuse archive URLs that are not on the account's own host (SSRF guard)."""
    target, allowed = urlsplit(url), urlsplit(allowed_base_url)
    if target.scheme not in ("http", "https") or not target.hostname:
        raise base.DownloadRefusedError(f"{vendor} archive location is not an http(s) URL")
    if (
        target.scheme != allowed.scheme
        or (target.hostname or "").lower() != (allowed.hostname or "").lower()
    ):
        raise base.DownloadRefusedError(
            f"{vendor} archive location is on host {target.hostname!r}, "
            f"not the account's host {allowed.hostname!r}: refused"
        )
    if (target.port or _default_port(target.scheme)) != (
        allowed.port or _default_port(allowed.scheme)
    ):
        raise base.DownloadRefusedError(f"{vendor} archive location is on another port: refused")


def require_public_address(url: str, vendor: str) -> None:
    """Refuse hosts resolving to loopback, link-local or private ranges (production only)."""
    host = urlsplit(url).hostname or ""
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        raise base.VendorUnavailableError(f"{vendor} archive host could not be resolved") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if (
            address.is_private
            or address.is_loopback
            or address.is_link_local
            or address.is_reserved
        ):
            raise base.DownloadRefusedError(
                f"{vendor} archive host resolves to a non-public address: refused"
            )


def get_archive(
    session: requests.Session,
    vendor: str,
    url: str,
    *,
    allowed_base_url: str,
    allow_private_hosts: bool,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> requests.Response:
    """GET an archive location as a stream, following redirects by hand.

    Every hop must pass the same-host check (and, in production, resolve to a public
    address) before anything is sent to it, so credentials in ``headers`` never leave the
    vendor's own host. The caller checks the final response's status.
    """
    for _hop in range(MAX_REDIRECTS + 1):
        require_same_host(url, allowed_base_url, vendor)
        if not allow_private_hosts:
            require_public_address(url, vendor)
        response = send(
            session,
            vendor,
            "GET",
            url,
            stream=True,
            headers=headers,
            allow_redirects=False,
            **kwargs,
        )
        if not response.is_redirect:
            return response
        location = response.headers.get("Location", "")
        response.close()
        url = urljoin(url, location)
    raise base.DownloadRefusedError(f"{vendor} archive download redirected too many times")


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def stream_to(
    response: requests.Response,
    sink: BinaryIO,
    *,
    vendor: str,
    max_bytes: int | None,
) -> int:
    """Copy a streamed response body into ``sink`` chunk by chunk; return the byte count.

    One thread on purpose: receiving on a second thread while this one hashed and wrote
    measured no faster (docs/benchmarks.md, 2026-11-24), so the simpler loop stays.
    """
    announced = response.headers.get("Content-Length", "")
    if _content_encoded(response):
        announced = ""  # the encoded size: urllib3 checks it, and the limit counts decoded bytes
    if max_bytes is not None and announced.isdigit() and int(announced) > max_bytes:
        response.close()
        raise base.DownloadRefusedError(
            f"{vendor} archive is {int(announced)} bytes, over the {max_bytes}-byte limit: refused"
        )
    written = 0
    try:
        for chunk in _chunks(response):
            written += len(chunk)
            if max_bytes is not None and written > max_bytes:
                raise base.DownloadRefusedError(
                    f"{vendor} archive exceeds the {max_bytes}-byte limit: refused"
                )
            sink.write(chunk)
    except requests.RequestException:
        raise base.VendorUnavailableError(f"{vendor} archive download was interrupted") from None
    finally:
        response.close()
    if announced.isdigit() and written != int(announced):
        raise base.VendorUnavailableError(
            f"{vendor} archive download was truncated ({written} of {announced} bytes)"
        )
    return written


def _content_encoded(response: requests.Response) -> bool:
    return response.headers.get("Content-Encoding", "").strip().lower() not in ("", "identity")


def _chunks(response: requests.Response) -> Iterable[bytes]:
    for chunk in response.iter_content(chunk_size=CHUNK_SIZE):
        if chunk:
            yield chunk
