"""What the operator does when the API server answers a write with an error: a pure decision.

Two kinds of answer. A conflict (409), a throttle (429), a server error (5xx, e.g. a failing admission webhook)
or a connection failure may pass by itself: the resource is reconciled again soon, after a backoff that doubles
per consecutive failure of that resource (1 s up to 60 s; a success starts again at 1 s), or after the server's
Retry-After. Every other 4xx (an invalid child, a write the operator may not do) will not pass by itself: it is
shown in the resource's Ready condition with the server's own message, and tried again only at the slow resync.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 60.0
# 408 (the server timed the request out) passes by itself like a 5xx does.
TRANSIENT_STATUSES = frozenset({408, 409, 429})
# Condition reasons by status code, as the API server names them in its Status object.
REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
           410: "Gone", 413: "RequestEntityTooLarge", 415: "UnsupportedMediaType", 422: "Invalid"}


@dataclass(frozen=True)
class Retry:
    """Reconcile the resource again after `delay` seconds."""

    delay: float


@dataclass(frozen=True)
class Refused:
    """Show `reason` and `message` in the Ready condition; retry at the resync only."""

    reason: str
    message: str


def backoff(failures: int) -> float:
    """The delay after the `failures`-th consecutive transient failure (1, 2, 4, ... seconds, capped)."""
    return min(BACKOFF_BASE_SECONDS * 2 ** max(failures - 1, 0), BACKOFF_CAP_SECONDS)


def retry_after(header: str | None) -> float | None:
    """Seconds from a Retry-After header (the API server sends whole seconds); None if absent or a date."""
    try:
        return max(float(header), 0.0) if header is not None else None
    except ValueError:
        return None


def server_message(body: str | bytes | None, fallback: str) -> str:
    """The human part of the API server's Status body ("Deployment.apps \"x\" is invalid: ..."), else the body
    itself, else `fallback` (the HTTP reason phrase)."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    if not body:
        return fallback
    try:
        status = json.loads(body)
    except ValueError:
        return body
    message = status.get("message") if isinstance(status, dict) else None
    return message if isinstance(message, str) and message else body


def decide(status: int | None, failures: int, *, retry_after_header: str | None = None,
           body: str | bytes | None = None, reason: str = "") -> Retry | Refused:
    """The answer to an API error with HTTP `status` (None: no answer at all, a connection failure), the
    `failures`-th transient failure of this resource in a row."""
    if status is None or status >= 500 or status in TRANSIENT_STATUSES:
        delay = retry_after(retry_after_header)
        return Retry(delay if delay is not None else backoff(failures))
    name = REASONS.get(status, "Refused")
    message = f"the API server refused a write (HTTP {status} {name}): {server_message(body, reason)}"
    return Refused(f"Child{name}", message)
