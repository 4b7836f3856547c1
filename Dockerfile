# syntax=docker/dockerfile:1
# choreo-ingest as a long-running service: `choreo-ingest serve` on port 8080.
#
#   docker build -t choreo-ingest .
#   docker run --read-only --tmpfs /tmp -v choreo-ingest:/var/lib/choreo-ingest \
#     -v "$PWD/config.yaml:/etc/choreo-ingest/config.yaml:ro" -p 8080:8080 \
#     -e CHOREO_INGEST_SERVE_TOKEN choreo-ingest
# (0.0.0.0 is not loopback: serve refuses to start without a token, from serve.auth.tokenFile
# or $CHOREO_INGEST_SERVE_TOKEN.) `choreo-ingest run` and the other commands work too:
#   docker run ... choreo-ingest run
#
# Runs as the numeric user 10001 (Kubernetes: runAsUser: 10001, fsGroup: 10001) and writes
# nowhere but /var/lib/choreo-ingest (the state: a VOLUME) and /tmp, so a read-only root
# filesystem works. The config is read from /etc/choreo-ingest/config.yaml (mount it there);
# examples/kubernetes/ shows a Deployment, and a CronJob running `choreo-ingest run` instead.
#
# The base is pinned by tag (Python's full patch version) AND by the digest of that tag's
# multi-platform index (linux/amd64, linux/arm64, ...): the digest decides what is pulled, the
# tag says what it is. The digest is the one published for python:3.12.14-slim-bookworm (taken
# from public pins of that tag); this repository's CI cannot reach a registry to re-resolve it.
# To move to a newer patch release or a rebuilt base, update both together:
#   docker buildx imagetools inspect python:3.12-slim-bookworm     # prints the index digest
ARG PYTHON_IMAGE=python:3.12.14-slim-bookworm@sha256:782412e85d0f0984994c290652577d4018aff08145c85b262bb63dc0c7522254

# --- build: a virtualenv holding choreo-ingest and the `serve` extra (starlette, uvicorn) ----
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/choreo-ingest
WORKDIR /src
# Only what the package is built from (.dockerignore keeps out the rest: tests, state files).
COPY pyproject.toml README.md ./
COPY choreo_ingest ./choreo_ingest
# Dependencies come from PyPI at build time, within pyproject.toml's ranges (no lock file).
# pip itself is then removed (nothing installs at run time). Bytecode is compiled here and
# checked by hash, not mtime: the read-only root filesystem cannot take a __pycache__ later.
# EXTRAS: the package's extras (comma-separated); `serve` is what the image's command needs.
# For a state on PostgreSQL: docker build --build-arg EXTRAS=serve,postgres .
ARG EXTRAS=serve
RUN /opt/choreo-ingest/bin/pip install --no-compile ".[${EXTRAS}]" \
 && /opt/choreo-ingest/bin/pip uninstall --yes pip \
 && /opt/choreo-ingest/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash \
      /opt/choreo-ingest/lib

# --- runtime ---------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="choreo-ingest" \
      org.opencontainers.image.description="Mirrors an OpenChoreo platform into a Backstage catalog" \
      org.opencontainers.image.licenses="Apache-2.0"

# A passwd entry for 10001 (HOME, `id`, log lines); Kubernetes may run any UID, the image does
# not depend on this name. The state directory is the user's own, 0750.
RUN groupadd --gid 10001 choreo-ingest \
 && useradd --uid 10001 --gid 10001 --no-create-home \
      --home-dir /var/lib/choreo-ingest --shell /usr/sbin/nologin choreo-ingest \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/choreo-ingest \
 && install -d -m 0755 /etc/choreo-ingest

COPY --from=build /opt/choreo-ingest /opt/choreo-ingest

# PYTHONDONTWRITEBYTECODE: never try to write __pycache__ on the read-only root filesystem.
# CHOREO_INGEST_CONFIG: `kubectl exec ... choreo-ingest status` finds the same config as the
# service. No CHOREO_INGEST_DB: it would override the config's state.path.
ENV PATH=/opt/choreo-ingest/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CHOREO_INGEST_CONFIG=/etc/choreo-ingest/config.yaml

# state.path: null would put choreo-ingest.db in the working directory: the volume.
WORKDIR /var/lib/choreo-ingest
VOLUME ["/var/lib/choreo-ingest"]
USER 10001:10001
EXPOSE 8080

# SIGTERM: serve finishes the page in flight and exits 0 within burstLength (10 s by default).
STOPSIGNAL SIGTERM
# For docker/podman (Kubernetes ignores it and probes /healthz and /readyz itself). Assumes the
# default port; slim has no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]

ENTRYPOINT ["choreo-ingest"]
CMD ["serve", "--listen", "0.0.0.0:8080", "--config", "/etc/choreo-ingest/config.yaml"]
