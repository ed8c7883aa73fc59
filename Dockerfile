# syntax=docker/dockerfile:1
# The gateway image: a wheel built in one stage, installed into a pip-less venv in the next.
# tests/test_image.py runs this file's build and install commands, and its HEALTHCHECK, without Docker.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Dependencies first, from the runtime lock alone (exact versions, hash-checked; `make lock`
# writes it): editing the source or pyproject.toml reuses this layer.
COPY requirements.txt ./
RUN python -m venv --without-pip /venv \
 && python -m pip --python /venv/bin/python install -r requirements.txt --require-hashes
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m pip --python /venv/bin/python install --no-deps /wheels/*.whl

FROM ${PYTHON_IMAGE}
# C.UTF-8 means English to the gateway; set LANG in .env to answer in another language.
ENV LANG=C.UTF-8 \
    PATH=/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 gateway \
 && useradd --system --uid 10001 --gid gateway --no-create-home --shell /usr/sbin/nologin gateway
COPY --from=builder /venv /venv
# An empty working directory: the gateway reads .env from here, and there is none in the image.
WORKDIR /app
USER gateway:gateway
EXPOSE 5000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 CMD ["python", "-m", "gateway.probe"]
CMD ["python", "-m", "gateway"]
