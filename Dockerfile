# The operator image.
#   docker build --build-arg IMAGE_SOURCE=https://<repository URL> -t rightsizer:0.1.0 .
# Multi-stage: the build stage turns the source into wheels (the package and its dependencies); the final stage
# installs those wheels and nothing else, with no index, no compiler and no package manager run. It runs as a
# numeric non-root user and writes nothing outside /tmp, so it works with readOnlyRootFilesystem and an
# emptyDir on /tmp (manifests/manager/manager.yaml).
# The base is pinned by its exact version tag; pin it by digest too (python:3.11.14-slim-bookworm@sha256:...)
# with --build-arg PYTHON_IMAGE=... where builds must be reproducible.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
# operator/rightsizer/data/rightsizejobs.yaml and fraud-local.yaml are symlinks to ../../../crds/ and
# ../../../manifests/samples/: those trees are needed, or the wheel would have no CRD and no demo job in it.
COPY crds/ crds/
COPY manifests/samples/ manifests/samples/
COPY operator/ operator/
# Every dependency is published as a wheel for this platform, so no compiler is needed. Had one been needed,
# build-essential would be installed here and never in the final stage.
RUN pip wheel --no-cache-dir --wheel-dir /wheels . \
 && test -s operator/rightsizer/data/rightsizejobs.yaml

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
ARG IMAGE_SOURCE=<REPOSITORY_URL>
# What the image is built from (a commit, or the harness's digest of the build context). Besides labelling the
# image, it keys the layer cache of the RUN below: a builder that does not hash bind mounts into its cache key
# (buildah 1.28 --layers) would otherwise reuse the wheels of an earlier build.
ARG REVISION=unknown
LABEL org.opencontainers.image.title="rightsizer" \
      org.opencontainers.image.description="Kubernetes operator: the cheapest model-serving configuration that meets an SLA" \
      org.opencontainers.image.source="${IMAGE_SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# The wheels are bind-mounted from the build stage, not copied: no layer of this image keeps them.
# --no-index: everything comes from the build stage's wheels, nothing from an index.
# pip, setuptools and wheel are removed afterwards: nothing needs them at run time (hdrhistogram declares
# setuptools and pbr, but imports neither).
# The reference fraud model and its payload (made from a fixed seed, under 1 MB) are baked in, so that the kubernetes
# backend's sample serves and load-tests them with this image alone.
# The user gets a passwd entry: kopf names the operator by getpass.getuser(), which fails for a uid without one
# ("getpwuid(): uid not found: 65532", seen on the first kubelet this image met).
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-compile --no-index --find-links=/wheels "rightsizer==${VERSION}" \
 && python -m pip uninstall --yes pip setuptools wheel \
 && rightsizer example fraud-model /opt/rightsizer/models/fraud \
 && groupadd --gid 65532 rightsizer \
 && useradd --uid 65532 --gid 65532 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin rightsizer
WORKDIR /tmp
USER 65532:65532
ENTRYPOINT ["rightsizer", "operator"]
