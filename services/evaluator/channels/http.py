"""POSTing JSON to a receiver and turning its answer into delivered / retry / give up."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from services.evaluator.channels.base import USER_AGENT, DeliveryError, Transport

# 408 and 429 say "not now", not "never": retried like a 5xx.
_RETRYABLE_4XX = frozenset({408, 429})
# Enough of an error body to say what the receiver disliked, not a page of HTML.
_BODY_EXCERPT = 200
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]+")


async def post_json(
    transport: Transport,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    timeout_seconds: float,
) -> None:
    """POST `body` (JSON) to `url`; return when the receiver answered 2xx, else raise
    DeliveryError: permanent for a refusal (3xx, 4xx other than 408/429, a URL that
    cannot be requested), retryable for 5xx, 408, 429, timeouts and connection errors."""
    timeout = min(timeout_seconds, transport.deadline_seconds)
    request_headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers}
    try:
        # httpx's timeout bounds each phase (connect, each read); a receiver trickling
        # bytes could outlast it, so the whole exchange gets the same bound too.
        async with asyncio.timeout(timeout):
            async with transport.http.stream(
                "POST", url, content=body, headers=request_headers, timeout=timeout
            ) as response:
                if response.is_success:
                    return
                excerpt = await _excerpt(response)
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        raise DeliveryError(f"the URL cannot be requested: {exc}", permanent=True) from exc
    except (TimeoutError, httpx.TimeoutException) as exc:
        raise DeliveryError(f"no answer within {timeout:g} s") from exc
    except httpx.TransportError as exc:
        # The exception's text names the socket error, never the URL's path or query.
        raise DeliveryError(f"connection failed: {type(exc).__name__}: {exc}") from exc
    raise _refusal(response, excerpt)


def _refusal(response: httpx.Response, excerpt: str) -> DeliveryError:
    status = response.status_code
    reason = f"HTTP {status} {response.reason_phrase}".rstrip()
    if excerpt:
        reason += f": {excerpt}"
    if status >= 500 or status in _RETRYABLE_4XX:
        return DeliveryError(reason, retry_after=_retry_after(response))
    if 300 <= status < 400:
        reason += " (redirects are not followed: configure the final URL)"
    return DeliveryError(reason, permanent=True)


async def _excerpt(response: httpx.Response) -> str:
    data = b""
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) >= _BODY_EXCERPT:
            break
    text = data[:_BODY_EXCERPT].decode("utf-8", errors="replace")
    return _UNPRINTABLE.sub(" ", text).strip()


def _retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds, given as seconds or as an HTTP date; None if absent."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
