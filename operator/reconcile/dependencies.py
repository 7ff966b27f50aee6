"""References between resources: is the referenced one ready, still coming, or failed?"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Dependency:
    ready: bool
    failed: bool
    message: str
    artifact_uri: str | None = None


def dependency(kind: str, name: str, body: dict[str, Any] | None) -> Dependency:
    """Pure reading of a referenced resource's status."""
    if body is None:
        return Dependency(False, False, f"{kind} {name} does not exist yet")
    status = body.get("status") or {}
    phase = status.get("phase")
    if phase == "Succeeded" and status.get("artifactUri"):
        return Dependency(True, False, f"{kind} {name} has succeeded", status["artifactUri"])
    if phase == "Failed":
        failed = next((c for c in status.get("conditions", []) if c.get("type") == "Failed"), {})
        return Dependency(False, True, f"{kind} {name} failed: {failed.get('message', 'no reason given')}")
    return Dependency(False, False, f"{kind} {name} is {phase or 'not started'}")
