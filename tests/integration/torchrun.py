"""Running a workload entry point as two local processes under torchrun (gloo), as a two-GPU pod would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from llmops.trainer.config.base import WireModel

BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # two processes share the two cores


def command(entrypoint: str, config_file: Path) -> list[str]:
    return [str(BIN / "torchrun"), "--nproc-per-node=2", "--standalone", str(BIN / entrypoint),
            "--config", str(config_file)]


def write_config(config: WireModel, path: Path) -> Path:
    path.write_text(yaml.safe_dump(config.to_wire()))
    return path


def run_two(entrypoint: str, config: WireModel, path: Path) -> list[dict[str, Any]]:
    """Run to the end (it must succeed); the JSON events rank 0 printed."""
    result = subprocess.run(command(entrypoint, write_config(config, path)), capture_output=True, text=True,
                            timeout=600, env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{"event"')]
