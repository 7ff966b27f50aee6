"""Operator at scale on the test cluster: N PretrainJobs created at once.

Measures, with the operator running as a separate process (leader election on): time from each create to its
Job appearing (p50, p99), API writes per resource until every PretrainJob is Running (the operator's own counter,
llmops_api_writes_total), and the operator's resident memory at N. Goals (issue 7): p99 <= 2 s, <= 6 writes
per resource to reach Running, RSS <= 250 MB. Last line `operator_scale: ratio=X.XX` = 2 s / measured p99
(higher is better; >= 1 meets the goal).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import ssl
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "cluster"))
from cluster import TestCluster  # noqa: E402
from machine import free_port  # noqa: E402


def metric_sum(port: int, prefix: str) -> float:
    """Sum of the samples whose line starts with `prefix` (a metric name and the start of its labels)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pretrainjob(name: str) -> dict:
    return {"apiVersion": "llmops.dev/v1alpha1", "kind": "PretrainJob", "metadata": {"name": name},
            "spec": {"data": {"uri": "s3://bench/shards"},
                     "training": {"maxSteps": 100, "schedule": {"warmupSteps": 1}},
                     "output": {"uri": f"s3://bench/out/{name}"}}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50 PretrainJobs instead of 200")
    args = parser.parse_args()
    count = 50 if args.quick else 200
    bin_dir = Path(sys.executable).parent
    with TestCluster() as cluster:
        subprocess.run([str(bin_dir / "kubectl"), f"--kubeconfig={cluster.kubeconfig}", "apply", "--server-side",
                        "-f", str(ROOT / "crds")], check=True, capture_output=True)
        subprocess.run([str(bin_dir / "kubectl"), f"--kubeconfig={cluster.kubeconfig}", "wait",
                        "--for=condition=Established", "crd", "--all", "--timeout=60s"], check=True,
                       capture_output=True)
        cluster.request("POST", "/api/v1/namespaces", {"metadata": {"name": "bench"}})
        metrics_port, health_port = free_port(), free_port()
        env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "LLMOPS_METRICS_PORT": str(metrics_port),
               "LLMOPS_HEALTH_PORT": str(health_port), "LLMOPS_LEASE_NAMESPACE": "default",
               "LLMOPS_ARTIFACT_ROOT": "s3://bench", "LLMOPS_LOG_LEVEL": "warning"}
        operator = subprocess.Popen([str(bin_dir / "llmops"), "operator", "run"], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/")
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if urllib.request.urlopen(f"http://127.0.0.1:{health_port}/readyz", timeout=2).read() == b"leader":
                        break
                except OSError:
                    pass
                time.sleep(0.2)
            time.sleep(2)  # let Kopf finish its initial listing

            seen: dict[str, float] = {}
            stop = threading.Event()

            def watch_jobs() -> None:
                context = ssl.create_default_context(cafile=str(cluster.ca_file))
                cert = cluster.workdir / "pki"
                context.load_cert_chain(cert / "admin.crt", cert / "admin.key")
                url = f"{cluster.server}/apis/batch/v1/namespaces/bench/jobs?watch=true"
                with urllib.request.urlopen(url, context=context, timeout=300) as stream:
                    for line in stream:
                        event = json.loads(line)
                        name = event["object"]["metadata"]["labels"].get("llmops.dev/name")
                        if event["type"] == "ADDED" and name and name not in seen:
                            seen[name] = time.monotonic()
                        if stop.is_set() or len(seen) >= count:
                            return

            watcher = threading.Thread(target=watch_jobs, daemon=True)
            watcher.start()
            time.sleep(0.5)
            created: dict[str, float] = {}
            for i in range(count):
                name = f"ptj-{i:04d}"
                cluster.request("POST", "/apis/llmops.dev/v1alpha1/namespaces/bench/pretrainjobs", pretrainjob(name))
                created[name] = time.monotonic()
            watcher.join(timeout=120)
            stop.set()
            # Writes are counted once every PretrainJob is Running (kwok starts the pods), as the goal says.
            deadline, running = time.monotonic() + 120, 0
            while time.monotonic() < deadline:
                items = cluster.request("GET", "/apis/llmops.dev/v1alpha1/namespaces/bench/pretrainjobs")["items"]
                running = sum(1 for item in items if item.get("status", {}).get("phase") == "Running")
                if running == count:
                    break
                time.sleep(0.5)
            time.sleep(2)  # a last status or Event write in flight
            writes = metric_sum(metrics_port, "llmops_api_writes_total{")
            by_write = {w: metric_sum(metrics_port, f'llmops_api_writes_total{{write="{w}"') for w in
                        ("patch", "status", "event", "delete")}
            memory = rss_mb(operator.pid)
        finally:
            operator.send_signal(signal.SIGTERM)
            try:
                operator.wait(30)
            except subprocess.TimeoutExpired:
                operator.kill()
    latencies = sorted(seen[n] - created[n] for n in created if n in seen)
    missing = count - len(latencies)
    p50 = statistics.median(latencies) if latencies else float("nan")
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else float("nan")
    print(f"PretrainJobs: {count} ({missing} without a Job after 120 s)")
    print(f"create -> Job: p50 {p50:.3f} s, p99 {p99:.3f} s (goal p99 <= 2 s)")
    print(f"Running: {running} of {count}")
    print(f"API writes per resource to reach Running: {writes / count:.2f} (goal <= 6; children, status, events): "
          + ", ".join(f"{k} {v / count:.2f}" for k, v in by_write.items()))
    print(f"operator RSS at N: {memory:.0f} MB (goal <= 250 MB)")
    print(f"operator_scale: ratio={2.0 / p99 if p99 > 0 else 0:.2f} p99_s={p99:.3f} p50_s={p50:.3f} "
          f"writes_per_resource={writes / count:.2f} rss_mb={memory:.0f}")


if __name__ == "__main__":
    main()
