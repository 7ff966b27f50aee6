# The README's two commands: `make demo` and `make test`. Both set everything up on a fresh machine.
SHELL := bash
VENV := .venv
BIN := $(VENV)/bin
PYTHON ?= python3
# Re-install when the dependency list changes.
INSTALLED := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | sha1sum | cut -c1-12)

.PHONY: setup cluster-binaries test demo generate lint bench bench-setup cluster-up cluster-down clean kind-e2e

setup: $(INSTALLED) $(BIN)/kubectl $(BIN)/helm

# Control-plane binaries for the integration tests, built from Go modules and cached in
# ~/.cache/llmops/k8s (a warm run takes seconds; see tests/cluster/README.md).
cluster-binaries:
	tests/cluster/build.sh

$(INSTALLED): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[operator,trainer,serve,dev]'
	PYTHON=$(BIN)/python hack/fetch-corpora.sh
	rm -f $(VENV)/.installed-*
	touch $@

$(BIN)/kubectl $(BIN)/helm: hack/install-kube-tools.sh | $(INSTALLED)
	PYTHON=$(BIN)/python hack/install-kube-tools.sh $(BIN)

# A real Prometheus server for the canary-analysis tests (Debian's package; nothing when already on PATH).
.PHONY: prometheus
prometheus:
	hack/install-prometheus.sh

test: setup cluster-binaries prometheus
	$(BIN)/ruff check operator trainer tests
	$(BIN)/pytest

# The example lifecycle on this machine (local mode): curate, pretrain, fine-tune, evaluate, and serve once the
# gate passed. State and artifacts go to .llmops/ (`llmops get`, `llmops describe NAME` read it); a second
# `make demo` skips what did not change.
demo: setup
	$(BIN)/llmops run -f examples/lifecycle

# Benchmarks: each prints `NAME: ratio=X` last. datatrove (the data_pipeline baseline) needs a newer
# huggingface-hub than transformers allows, so the data benchmark runs from its own venv.
BENCH_VENV := .venv-bench

bench-setup: setup
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet -e '.[data,bench]'

bench: bench-setup cluster-binaries
	$(BENCH_VENV)/bin/python bench/data_pipeline.py --quick
	$(BENCH_VENV)/bin/python bench/data_pipeline.py --scale --quick
	$(BIN)/python bench/train_throughput.py --quick
	$(BIN)/python bench/eval_throughput.py --quick
	$(BIN)/python bench/operator_scale.py --quick
	$(BIN)/python bench/serve_throughput.py --quick
	$(BIN)/python bench/rollback.py --quick
	$(BIN)/python bench/shard_memory.py --quick
	$(BIN)/python bench/compress.py --quick
	$(BIN)/python bench/distill.py --quick

# Regenerate everything derived from the API models: CRDs (and the chart's copy) and the API reference.
generate: setup
	$(BIN)/llmops generate

lint: setup
	$(BIN)/ruff check operator trainer tests

# A cluster for humans: the same one the tests start, kept running; prints its kubeconfig.
cluster-up: setup cluster-binaries
	$(BIN)/python tests/cluster/cluster.py up

cluster-down:
	$(BIN)/python tests/cluster/cluster.py down

# The example lifecycle on a real kind cluster (needs Docker and kind): builds the three images, installs the chart,
# runs the five resources and asks the served model for a completion. `make kind-e2e DRY_RUN=1` prints the commands.
kind-e2e: setup
	HELM=$(BIN)/helm KUBECTL=$(BIN)/kubectl hack/kind-e2e.sh

clean:
	rm -rf $(VENV) build *.egg-info
