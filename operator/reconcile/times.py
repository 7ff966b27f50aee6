"""Timestamps as the API server writes them (RFC 3339, `Z` for UTC), read in one place."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp (or a datetime, as YAML loads one) as an aware datetime, naive ones taken as UTC;
    None for an absent value or one that is not a timestamp (status written by hand, a store edited)."""
    if not value:
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
