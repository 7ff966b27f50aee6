# The model server behind the llmops.dev Deployment kind (OpenAI-compatible HTTP API).
#   docker build -f images/server.Dockerfile --build-arg VARIANT=cuda -t llmops/server .
#   docker run -p 8000:8000 -v $PWD/model:/model:ro llmops/server /model [--config FILE] [--api-key-file FILE]
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG VARIANT=cuda
ARG TORCH_VERSION=2.9.1
WORKDIR /src
RUN python -m venv /opt/venv
RUN if [ "$VARIANT" = "cpu" ]; then \
      /opt/venv/bin/pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url https://download.pytorch.org/whl/cpu; \
    elif [ "$VARIANT" != "cuda" ]; then echo "VARIANT must be cpu or cuda, not $VARIANT" >&2; exit 1; fi
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY trainer ./trainer
RUN /opt/venv/bin/pip install --no-cache-dir ".[serve]"

FROM ${PYTHON_IMAGE}
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    LLMOPS_CACHE=/tmp/llmops
# Remote models (s3://, gs://...) are copied under $LLMOPS_CACHE: mount an emptyDir there in Kubernetes.
USER 65532:65532
EXPOSE 8000
ENTRYPOINT ["llmops", "serve"]
