"""Compare desired and stored objects, and build merge patches, so unchanged state costs no write."""

from __future__ import annotations

from typing import Any


def is_subset(desired: Any, stored: Any) -> bool:
    """True when every field we set has that value in the stored object (the server may add more)."""
    if isinstance(desired, dict):
        return isinstance(stored, dict) and all(k in stored and is_subset(v, stored[k]) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(stored, list) and len(desired) == len(stored) and all(
            is_subset(d, s) for d, s in zip(desired, stored, strict=True))
    return desired == stored or str(desired) == str(stored)  # quantities: 2 and "2" are the same


def merge_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch (RFC 7386) turning `old` into `new`: removed keys become null."""
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(old.get(key), dict):
            nested = merge_patch(old[key], value)
            if nested:
                patch[key] = nested
        elif old.get(key) != value:
            patch[key] = value
    return patch
