"""Training metrics: JSON lines on stdout (the operator reads them into .status) and Prometheus on rank 0."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from llmops.trainer.config.progress import TrainLine

GAUGES = ("step", "loss", "learning_rate", "grad_norm", "tokens_per_second", "mfu")
"""TrainLine fields exported as `llmops_train_<name>`."""

_FIGURES = {info.alias or name for name, info in TrainLine.model_fields.items()} - {"event", "time"}
"""What a report may set, by wire name; the log adds `event` and `time`."""

# Dense bf16 peak FLOP/s by GPU name fragment, for model FLOPs utilisation.
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "L4": 121e12}


def peak_flops(device_name: str | None) -> float | None:
    if not device_name:
        return None
    return next((flops for key, flops in PEAK_FLOPS.items() if key in device_name), None)


def flops_per_token(parameters: int, layers: int, hidden: int, context: int) -> float:
    """Training FLOPs per token: 6N for the weights plus the attention term (PaLM appendix B)."""
    return 6 * parameters + 12 * layers * hidden * context


@dataclass
class MetricsLog:
    """Writes one TrainLine per report; keeps the history (wire form) for the model card and the result."""

    stream: TextIO = field(default_factory=lambda: sys.stdout)
    enabled: bool = True
    history: list[dict[str, Any]] = field(default_factory=list)
    port: int | None = None
    _gauges: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.enabled and self.port:
            from prometheus_client import Gauge, start_http_server

            start_http_server(self.port)
            for name in GAUGES:
                self._gauges[name] = Gauge(f"llmops_train_{name}", f"Latest training {name.replace('_', ' ')}")

    def report(self, **values: Any) -> None:
        """Print one report; `values` are TrainLine fields by wire name (`step`, `loss`, `gradNorm`, ...)."""
        if not self.enabled:
            return
        unknown = sorted(set(values) - _FIGURES)
        if unknown:  # a figure the operator would never see: say where it has to be declared
            raise TypeError(f"MetricsLog.report: {', '.join(unknown)} is not a TrainLine field; "
                            "declare it in llmops.trainer.config.progress.TrainLine")
        line = TrainLine.model_validate({"time": round(time.time(), 3), **values})
        self.history.append(line.to_wire())
        self.stream.write(line.to_line() + "\n")
        self.stream.flush()
        for name, gauge in self._gauges.items():
            value = getattr(line, name)
            if value is not None:
                gauge.set(value)
