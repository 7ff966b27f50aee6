"""Training metrics: JSON lines on stdout (the operator reads them into .status) and Prometheus on rank 0."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

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
    """Writes one JSON line per report; keeps the history for the model card."""

    stream: TextIO = field(default_factory=lambda: sys.stdout)
    enabled: bool = True
    history: list[dict[str, Any]] = field(default_factory=list)
    port: int | None = None
    _gauges: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.enabled and self.port:
            from prometheus_client import Gauge, start_http_server

            start_http_server(self.port)
            for name in ("step", "loss", "learning_rate", "grad_norm", "tokens_per_second", "mfu"):
                self._gauges[name] = Gauge(f"llmops_train_{name}", f"Latest training {name.replace('_', ' ')}")

    def report(self, **values: Any) -> None:
        if not self.enabled:
            return
        event = {"event": "train", "time": round(time.time(), 3), **values}
        self.history.append(event)
        self.stream.write(json.dumps(event) + "\n")
        self.stream.flush()
        for name, gauge in self._gauges.items():
            camel = "".join(w.capitalize() if i else w for i, w in enumerate(name.split("_")))
            if values.get(camel) is not None:
                gauge.set(values[camel])
