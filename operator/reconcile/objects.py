"""Names, labels and owner references of the children we create (deterministic, so re-applying is safe)."""

from __future__ import annotations

from typing import Any

from llmops.operator.api.v1alpha1.common import API_VERSION, Resource

MANAGED_BY = "llmops-operator"
FIELD_MANAGER = "llmops-operator"
LABEL_KIND = "llmops.dev/kind"
LABEL_NAME = "llmops.dev/name"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"


def child_name(owner: Resource, suffix: str) -> str:
    """`<owner>-<suffix>`; owner names are at most 50 characters (a CRD rule), so this fits 63."""
    return f"{owner.metadata.name}-{suffix}"


def labels(owner: Resource) -> dict[str, str]:
    return {LABEL_MANAGED_BY: MANAGED_BY, LABEL_KIND: owner.kind, LABEL_NAME: owner.metadata.name}


def owner_reference(owner: Resource) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": owner.kind, "name": owner.metadata.name,
            "uid": owner.metadata.uid, "controller": True, "blockOwnerDeletion": True}


def metadata(owner: Resource, suffix: str) -> dict[str, Any]:
    """Metadata of a child: deterministic name, our labels, and a controller owner reference."""
    return {"name": child_name(owner, suffix), "namespace": owner.metadata.namespace, "labels": labels(owner),
            "ownerReferences": [owner_reference(owner)]}
