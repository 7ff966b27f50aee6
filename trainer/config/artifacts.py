"""What the artifact-cleanup workload deletes when a resource with `output.retainArtifacts: false` is deleted."""

from __future__ import annotations

from pydantic import Field

from .base import ApiModel


class ArtifactCleanupConfig(ApiModel):
    """Locations to delete, whole (a missing one counts as deleted, so a retried cleanup succeeds)."""

    uris: list[str] = Field(min_length=1, max_length=16)
    """Local paths (pvc:// already mapped to the mount) or fsspec URIs."""


def is_root(uri: str) -> bool:
    """A filesystem root or a bucket: never deleted whole, whatever the spec says."""
    path = uri.split("://", 1)[1] if "://" in uri else uri
    return len([part for part in path.split("/") if part not in ("", ".")]) <= (1 if "://" in uri else 0)
