# The operator image. Multi-stage: the wheel is built with the build tools, the final stage has only the
# runtime, runs as a non-root user and writes nothing outside /tmp (readOnlyRootFilesystem-friendly).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY crds/ crds/
COPY operator/ operator/
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="rightsizer" \
      org.opencontainers.image.description="Kubernetes operator: the cheapest model-serving configuration that meets an SLA" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-compile /wheels/*.whl && rm -rf /wheels
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp
USER 65532:65532
ENTRYPOINT ["rightsizer", "operator"]
