"""How the model server runs: dtype, port and the limits it enforces per request."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from .base import ApiModel


class Dtype(StrEnum):
    AUTO = "auto"
    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"
    FLOAT16 = "float16"


class ServerLimits(ApiModel):
    """Per-request and per-server limits; a request over a limit gets a 4xx that names it."""

    max_prompt_tokens: int = Field(default=2048, ge=1, le=1048576)
    """Longest prompt accepted, in tokens."""

    max_new_tokens: int = Field(default=512, ge=1, le=1048576)
    """Largest max_tokens a request may ask for."""

    max_concurrent_requests: int = Field(default=64, ge=1, le=100000)
    """Requests in flight; beyond it the server answers 429 with Retry-After."""

    max_request_bytes: int = Field(default=1 << 20, ge=1024, le=1 << 30)
    """Largest request body."""

    max_batch_size: int = Field(default=32, ge=1, le=4096)
    """Sequences decoded together by continuous batching."""


class ServerConfig(ApiModel):
    """Model server settings."""

    dtype: Dtype = Dtype.AUTO
    """Weights and compute dtype. `auto`: bfloat16 on GPU, float32 on CPU."""

    port: int = Field(default=8000, ge=1024, le=65535)
    """Container port of the HTTP API."""

    served_model_name: str | None = Field(default=None, min_length=1, max_length=253)
    """Model name clients send. Unset: the Deployment's name."""

    limits: ServerLimits = Field(default_factory=ServerLimits)
    """Request limits."""

    drain_seconds: int = Field(default=25, ge=0, le=3600)
    """Seconds in-flight requests may run after SIGTERM; keep it below the pod's terminationGracePeriodSeconds."""
