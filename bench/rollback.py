"""Automatic rollback of a bad canary, end to end: how fast its traffic goes, and what the stable loses meanwhile.

Runs the real-server scenario of tests/integration/test_canary_analysis.py (a real operator, real `llmops-serve`
pods at their pod addresses, a load generator splitting requests by the HTTPRoute's weights, a canary whose time
to first token breaks a limit) N times and reads the figures the test records:
- detection: from the canary receiving its share to weight 0 at the route; bound: analysis interval x failureLimit
  plus one interval (the goal set for it: failureLimit failed checks, and one interval of slack);
- reaction: from the failing check (the operator's own timestamp, status.history[].endedAt) to weight 0;
- requests sent to and failed on the stable meanwhile (the goal: 0 failed).
Last line `rollback: ratio=X.XX` = bound / median detection (higher is better; >= 1 meets the goal), then the
other figures. Needs what `make test` sets up (the venv, the control-plane binaries, Prometheus not needed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from machine import cpu_description  # bench/machine.py (scripts run with bench/ on sys.path)

ROOT = Path(__file__).resolve().parent.parent
TEST = "tests/integration/test_canary_analysis.py::test_a_slow_canary_is_rolled_back_by_its_live_metrics_while_the_" \
       "stable_answers_every_request"




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one run instead of three")
    parser.add_argument("--runs", type=int, default=None)
    args = parser.parse_args()
    runs = args.runs or (1 if args.quick else 3)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.jsonl"
        # One pytest session per run: a fresh cluster and operator each time, as a user would meet them.
        for _ in range(runs):
            subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", TEST], cwd=ROOT,
                           env={**os.environ, "LLMOPS_ROLLBACK_REPORT": str(out)}, check=True,
                           stdout=subprocess.DEVNULL)
        figures = [json.loads(line) for line in out.read_text().splitlines()]
    detection = statistics.median(f["detection_seconds"] for f in figures)
    reaction = statistics.median(f["failing_check_to_weight_zero_seconds"] for f in figures)
    bound = figures[0]["bound_seconds"]
    stable_sent = sum(f["stable_requests"] for f in figures)
    stable_failed = sum(f["stable_failed"] for f in figures)
    print(f"cpu: {cpu_description()}")
    for i, f in enumerate(figures, 1):
        print(f"run {i}: detection {f['detection_seconds']:.2f} s (bound {bound:.0f} s), failing check -> weight 0 "
              f"{f['failing_check_to_weight_zero_seconds']:.3f} s, stable {f['stable_failed']}/{f['stable_requests']}"
              f" failed, canary {f['canary_failed']}/{f['canary_requests']} failed")
    print(f"rollback: ratio={bound / detection:.2f} detection_s={detection:.2f} bound_s={bound:.0f} "
          f"check_to_weight_zero_s={reaction:.3f} stable_requests={stable_sent} stable_failed={stable_failed}")


if __name__ == "__main__":
    main()
