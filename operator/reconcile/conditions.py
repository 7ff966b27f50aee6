"""Kubernetes-style conditions, updated by a pure function with an injected clock."""

from __future__ import annotations

from datetime import datetime

from llmops.operator.api.v1alpha1.common import Condition, ConditionStatus

MAX_MESSAGE_LENGTH = 4096
"""Long messages (e.g. a stack trace tail) are cut; the schema allows more, readers do not."""


def set_condition(conditions: list[Condition], type: str, status: ConditionStatus | bool, reason: str,
                  message: str, now: datetime, generation: int | None) -> bool:
    """Set condition `type` in place. `lastTransitionTime` changes only when the status flips.

    Returns whether anything changed, so callers can skip a status write that would change nothing.
    """
    if isinstance(status, bool):
        status = ConditionStatus.TRUE if status else ConditionStatus.FALSE
    if len(message) > MAX_MESSAGE_LENGTH:
        message = message[: MAX_MESSAGE_LENGTH - 3] + "..."
    for index, current in enumerate(conditions):
        if current.type != type:
            continue
        flipped = current.status != status
        updated = current.model_copy(update={
            "status": status, "reason": reason, "message": message, "observed_generation": generation,
            "last_transition_time": now if flipped else current.last_transition_time,
        })
        conditions[index] = updated
        return updated != current
    conditions.append(Condition(type=type, status=status, reason=reason, message=message,
                                last_transition_time=now, observed_generation=generation))
    return True


def get_condition(conditions: list[Condition], type: str) -> Condition | None:
    return next((c for c in conditions if c.type == type), None)
