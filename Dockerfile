# One image for both roles: `jobwire gateway` (the default) and `jobwire worker`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    JOBWIRE_HOST=0.0.0.0 \
    JOBWIRE_PORT=8000

WORKDIR /src
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY worker ./worker
COPY gateway ./gateway
COPY jobwire ./jobwire
RUN pip install . \
    && rm -rf /src \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin jobwire

WORKDIR /home/jobwire
USER jobwire
EXPOSE 8000
CMD ["jobwire", "gateway"]
