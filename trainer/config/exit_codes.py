"""Exit codes of the workload processes: the contract between the trainer and the operator's retry policy.

Values follow BSD sysexits where one fits. The operator's Job `podFailurePolicy` reads them: a preempted
run is retried without counting against `backoffLimit`; a configuration or data error fails at once.
"""

from __future__ import annotations

SUCCESS = 0
NON_FINITE_LOSS = 65  # EX_DATAERR: the loss became NaN/inf; the last good checkpoint is kept
OUT_OF_MEMORY = 71  # EX_OSERR (the system could not give a resource): a batch did not fit; the same batch would not
PREEMPTED = 75  # EX_TEMPFAIL: stopped by SIGTERM after writing a checkpoint; retry
CONFIG_ERROR = 78  # EX_CONFIG: the spec cannot work (bad source, unloadable model, missing bucket); do not retry

DO_NOT_RETRY = (NON_FINITE_LOSS, OUT_OF_MEMORY, CONFIG_ERROR)
RETRY_FREE = (PREEMPTED,)
REASONS = {NON_FINITE_LOSS: "NonFiniteLoss", OUT_OF_MEMORY: "OutOfMemory", CONFIG_ERROR: "ConfigError"}
"""The condition reason a run that ended with one of these codes fails with (either backend)."""
