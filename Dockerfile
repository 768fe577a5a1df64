# One image for both roles: `jobwire gateway` (the default) and `jobwire worker`. It exposes no
# port of its own: it runs workers too, and the compose file publishes the gateway's.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    JOBWIRE_HOST=0.0.0.0 \
    JOBWIRE_PORT=8000

WORKDIR /src
# The exact, hash-checked releases of every dependency (pip-compile; see its header), then
# Jobwire itself without resolving anything again.
COPY pyproject.toml README.md requirements.lock ./
COPY shared ./shared
COPY worker ./worker
COPY gateway ./gateway
COPY jobwire ./jobwire
RUN pip install --require-hashes -r requirements.lock \
    && pip install . --no-deps \
    && rm -rf /src \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin jobwire

WORKDIR /home/jobwire
USER jobwire
CMD ["jobwire", "gateway"]
