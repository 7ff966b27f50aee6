"""`pvc://CLAIM/PATH` URIs: mount the claim into the pod and hand the workload a plain path."""

from __future__ import annotations

from typing import Any

PVC_SCHEME = "pvc://"
MOUNT_ROOT = "/mnt/pvc"


def split_pvc(uri: str) -> tuple[str, str] | None:
    """("claim", "sub/path") for a pvc:// URI, else None."""
    if not uri.startswith(PVC_SCHEME):
        return None
    claim, _, path = uri.removeprefix(PVC_SCHEME).partition("/")
    return claim, path


def local_path(uri: str) -> str:
    """What the workload sees: pvc://claim/x -> /mnt/pvc/claim/x; other URIs unchanged."""
    parts = split_pvc(uri)
    if parts is None:
        return uri
    claim, path = parts
    return f"{MOUNT_ROOT}/{claim}/{path}".rstrip("/")


def pvc_volumes(uris: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Volumes and mounts for every claim the URIs name, each once, in a stable order."""
    claims = sorted({parts[0] for uri in uris if (parts := split_pvc(uri))})
    volumes = [{"name": f"pvc-{claim}", "persistentVolumeClaim": {"claimName": claim}} for claim in claims]
    mounts = [{"name": f"pvc-{claim}", "mountPath": f"{MOUNT_ROOT}/{claim}"} for claim in claims]
    return volumes, mounts
