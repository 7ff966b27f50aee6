# The operator: Kopf, the Kubernetes client and the API models. No torch.
# Build from the repository root: docker build -f images/operator.Dockerfile -t llmops/operator .
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY trainer ./trainer
RUN /opt/venv/bin/pip install --no-cache-dir ".[operator]"

FROM ${PYTHON_IMAGE}
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A fixed numeric user, so `runAsNonRoot` can verify it without a passwd entry.
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["llmops"]
CMD ["operator", "run"]
