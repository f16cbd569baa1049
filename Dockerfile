# hermes-container: many Hermes agent profiles in one container, s6-overlay v3 as PID 1.
#
# Build (online):   docker build -t hermes-container .
# Build (offline):  see docs/offline-builds.md -- an s6-overlay mirror and a wheels directory:
#   docker build --network host \
#     --build-arg S6_OVERLAY_MIRROR=http://127.0.0.1:8765 \
#     --build-arg PIP_NO_INDEX=1 --build-arg PIP_FIND_LINKS=/tmp/wheels \
#     --build-arg WHEELS_DIR=.wheels -t hermes-container .
ARG BASE_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------------------------------
# builder: fetch + verify s6-overlay, build the venv at /opt/hermes/.venv
# ---------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS builder
SHELL ["/bin/sh", "-eu", "-c"]

# Versions come from the Debian release of BASE_IMAGE; pinning them would break every
# point release, so DL3008 is ignored on purpose.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        binutils ca-certificates curl xz-utils python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*

ARG S6_OVERLAY_VERSION=3.2.3.2
ARG S6_OVERLAY_MIRROR=https://github.com/just-containers/s6-overlay/releases/download
# Optional pins (lowercase hex); empty = verify against <asset>.sha256 on the mirror.
ARG S6_OVERLAY_SHA256_NOARCH=""
ARG S6_OVERLAY_SHA256_SYMLINKS_NOARCH=""
ARG S6_OVERLAY_SHA256_SYMLINKS_ARCH=""
ARG S6_OVERLAY_SHA256_X86_64=""
ARG S6_OVERLAY_SHA256_AARCH64=""
# Set by BuildKit; the classic builder leaves it empty and `uname -m` decides.
ARG TARGETARCH=""
COPY docker/fetch-s6-overlay /usr/local/bin/fetch-s6-overlay
RUN fetch-s6-overlay /s6root

# Python dependencies. Default: from the package index. Offline: put wheels in the build
# context and pass WHEELS_DIR=<dir> PIP_NO_INDEX=1 PIP_FIND_LINKS=/tmp/wheels.
ARG WHEELS_DIR=docker/no-wheels
ARG PIP_NO_INDEX=""
ARG PIP_FIND_LINKS=""
ARG PIP_INDEX_URL=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
COPY ${WHEELS_DIR}/ /tmp/wheels/
COPY pyproject.toml /src/pyproject.toml
# Dependencies first (read from pyproject.toml) so code changes do not reinstall them.
RUN [ -n "${PIP_INDEX_URL}" ] || unset PIP_INDEX_URL; \
    [ -n "${PIP_NO_INDEX}" ] || unset PIP_NO_INDEX; \
    [ -n "${PIP_FIND_LINKS}" ] || unset PIP_FIND_LINKS; \
    python3 -m venv /opt/hermes/.venv \
 && python3 -c 'import tomllib; print("\n".join(tomllib.load(open("/src/pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /tmp/requirements.txt \
 && /opt/hermes/.venv/bin/pip install --quiet -r /tmp/requirements.txt
COPY README.md /src/README.md
COPY docker/trim-venv /usr/local/bin/trim-venv
COPY hermes_container /src/hermes_container
RUN [ -n "${PIP_INDEX_URL}" ] || unset PIP_INDEX_URL; \
    [ -n "${PIP_NO_INDEX}" ] || unset PIP_NO_INDEX; \
    [ -n "${PIP_FIND_LINKS}" ] || unset PIP_FIND_LINKS; \
    /opt/hermes/.venv/bin/pip install --quiet --no-deps /src \
 && /opt/hermes/.venv/bin/pip uninstall --quiet --yes pip setuptools \
 && trim-venv /opt/hermes/.venv \
 && /opt/hermes/.venv/bin/hermes --version

# ---------------------------------------------------------------------------------------
# runtime: the base image with Debian's Python and the hermes user, trimmed
# ---------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS runtime
SHELL ["/bin/sh", "-eu", "-c"]

COPY docker/trim-runtime /tmp/trim-runtime
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/* \
 && /tmp/trim-runtime \
 && rm /tmp/trim-runtime \
 && groupadd --gid 10000 hermes \
 && useradd --uid 10000 --gid 10000 --home-dir /opt/data --no-create-home \
        --shell /usr/sbin/nologin hermes \
 && install -d -o hermes -g hermes -m 0755 /opt/data

# ---------------------------------------------------------------------------------------
# final image
# ---------------------------------------------------------------------------------------
# The runtime stage's filesystem is copied as one layer rather than built on top of the
# base image's layers: what trim-runtime removes from the base (and the copies of the
# package database that apt-get rewrites) would otherwise still be shipped underneath.
FROM scratch
SHELL ["/bin/sh", "-eu", "-c"]

LABEL org.opencontainers.image.title="hermes-container" \
      org.opencontainers.image.description="Many Hermes agent profiles in one s6-supervised container"

# Copying a whole filesystem is the point here (see above), hence DL3067.
# hadolint ignore=DL3067
COPY --from=runtime / /
COPY --from=builder /s6root/ /
COPY --from=builder /opt/hermes/.venv /opt/hermes/.venv
# The image's own files, laid out in root/ as the filesystem they become: the exec shim,
# the entrypoint and main wrapper, the shared shell helpers, and the s6-rc services with
# their scripts beside them. The `user` bundle is in user-bundles.d, where s6-overlay
# >= 3.2.3 reads it (no deprecation warning).
COPY root/ /

ENV HERMES_HOME=/opt/data \
    PATH=/opt/hermes/bin:/command:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HERMES_BIN=/opt/hermes/.venv/bin/hermes \
    HERMES_S6_SCANDIR=/run/hermes/service \
    HERMES_GATEWAY_HOST=0.0.0.0 \
    HERMES_DASHBOARD_HOST=0.0.0.0 \
    HERMES_DASHBOARD_PORT=9119 \
    HERMES_GATEWAY_ZYGOTE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    S6_BEHAVIOUR_IF_STAGE2_FAILS=2 \
    S6_CMD_WAIT_FOR_SERVICES_MAXTIME=0 \
    S6_KILL_GRACETIME=3000 \
    S6_SERVICES_GRACETIME=5000 \
    S6_VERBOSITY=1

# COPY keeps the directory modes of the checkout, which follow the cloner's umask: only
# root may write where the scripts root runs live, whatever that umask was. Then every
# native piece the product loads is imported with all its symbols bound now, so a library
# trim-runtime or trim-venv took away fails the build instead of a container.
RUN chmod go-w /etc /opt /opt/hermes \
 && chmod -R go-w /etc/s6-overlay /opt/hermes/bin /opt/hermes/libexec \
 && LD_BIND_NOW=1 PSYCOPG_IMPL=binary /opt/hermes/.venv/bin/python -c 'if True: \
        import decimal, hashlib, sqlite3, ssl, zoneinfo; \
        import psycopg, argon2, pydantic_core, uvloop, httptools, yaml, _cffi_backend; \
        from cryptography.hazmat.bindings import _rust; \
        assert psycopg.pq.__impl__ == "binary" and psycopg.pq.version() > 0; \
        assert yaml.__with_libyaml__; \
        zoneinfo.ZoneInfo("Europe/Paris")' \
 && /opt/hermes/.venv/bin/hermes --version

VOLUME /opt/data
WORKDIR /opt/data
EXPOSE 8640 8642 9119

HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["hermes", "healthcheck"]

ENTRYPOINT ["/opt/hermes/libexec/entrypoint"]
