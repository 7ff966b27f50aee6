"""Constrained scalar types shared by the config models. Their constraints land in the CRD schemas."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

# DNS-1123 label: what Kubernetes accepts as a name of most objects and what we use as a key in lists.
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
Name = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN)]

# A location readable through fsspec (`s3://`, `gs://`, `file://`, a local path), `pvc://CLAIM/PATH` for a
# PersistentVolumeClaim, or `builtin://NAME` for a corpus shipped with the trainer image.
Uri = Annotated[str, Field(min_length=1, max_length=2048)]

# Ratios and probabilities.
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
