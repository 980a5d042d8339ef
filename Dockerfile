# syntax=docker/dockerfile:1
# Two images from one file (build from the repository root):
#   docker build --target gateway -t fluxgate-gateway .                          # no torch: small, CPU only
#   docker build --target worker --build-arg DEVICE=cpu   -t fluxgate-worker:cpu .
#   docker build --target worker --build-arg DEVICE=cu128 -t fluxgate-worker:cuda .
# DEVICE names the PyTorch wheel index (cpu, cu126, cu128, ...): the CUDA wheels bundle their CUDA
# runtime, so one slim base serves both; the host needs only the NVIDIA driver + container toolkit.
ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app
RUN useradd --create-home --uid 10001 fluxgate
WORKDIR /app

FROM base AS gateway
COPY deploy/requirements-gateway.txt /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt
# Only the torch-free packages: the gateway must start without torch (a test asserts it).
COPY store ./store
COPY app ./app
COPY cli ./cli
COPY client ./client
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["python", "-m", "cli.main"]
CMD ["gateway", "--host", "0.0.0.0", "--port", "8000"]

FROM base AS worker
ARG DEVICE=cpu
ARG TORCH_VERSION=2.13.0
# torch first from its own index, so the CPU image never pulls a multi-GB CUDA build.
RUN pip install --index-url "https://download.pytorch.org/whl/${DEVICE}" "torch==${TORCH_VERSION}"
COPY deploy/requirements-worker.txt /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt
COPY store ./store
COPY models ./models
COPY workers ./workers
COPY cli ./cli
# Real checkpoints are mounted here (see docs/operations.md), never baked into the image.
RUN mkdir -p /models && chown 10001 /models
VOLUME ["/models"]
USER 10001
ENV FLUXGATE_DEVICE=cpu
ENTRYPOINT ["python", "-m", "cli.main"]
CMD ["worker"]
