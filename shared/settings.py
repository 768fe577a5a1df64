"""One frozen settings object, built once from `JOBWIRE_*` environment variables.

Every process builds it at start-up and passes it down; nothing reads the environment later.
Tests build their own with `Settings.from_env({...})`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from shared.apikeys import parse_api_keys
from shared.environ import ENV_PREFIX, SettingsError, env_name, read_env
from shared.events import ENVELOPE_BYTES
from shared.redisurl import is_cluster_url

# Re-exported: what a caller of the settings catches, and how it reads `api_keys`.
__all__ = [
    "DEFAULT_REDIS_URL",
    "LOG_FORMATS",
    "Settings",
    "SettingsError",
    "describe",
    "env_names",
    "parse_api_keys",
]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
MIN_SECRET_CHARS = 32
MIN_METRICS_KEY_CHARS = 16
LOG_FORMATS = ("text", "json")
_ORIGIN = re.compile(r"https?://[^/\s?#,]+")


def _setting(default: Any, doc: str, *, secret: bool = False) -> Any:
    # A secret stays out of repr(), so logging the settings never prints it.
    return field(default=default, repr=not secret, metadata={"doc": doc})


@dataclass(frozen=True, slots=True)
class Settings:
    redis_url: str = _setting(
        "",
        "Redis holding the event streams and job state. Empty: `jobwire up` starts a private "
        f"redis-server; `jobwire gateway` / `jobwire worker` use {DEFAULT_REDIS_URL}.",
    )
    queue_redis_url: str = _setting(
        "",
        "Redis holding arq's queue: one Redis (or Sentinel), never a cluster. Empty: the same "
        "as JOBWIRE_REDIS_URL, which must then be one Redis too.",
    )
    key_prefix: str = _setting("jobwire", "Prefix of every Redis key Jobwire writes.")
    queue_name: str = _setting("jobwire:queue", "arq queue name.")
    stream_maxlen: int = _setting(
        10_000, "Events kept per job stream (XADD MAXLEN ~); older ones are trimmed."
    )
    retention_s: int = _setting(86_400, "How long a finished job's events and state stay in Redis.")
    jobs_listed_per_key: int = _setting(
        10_000,
        "Jobs `GET /jobs` can list per API key, newest first; older ones drop off the list "
        "(they stay readable by their id until they expire).",
    )
    heartbeat_s: float = _setting(
        15.0, "A running job writes a heartbeat after this long without any other event."
    )
    progress_interval_s: float = _setting(
        0.1, "Progress updates closer together than this are coalesced (latest value wins)."
    )
    ping_s: float = _setting(
        15.0, "An idle SSE stream gets a comment ping this often, to keep proxies from cutting it."
    )
    sse_retry_ms: int = _setting(2_000, "The `retry:` reconnect delay sent to SSE clients.")
    send_timeout_s: float = _setting(
        30.0, "A client that has not taken a frame for this long is cut off (it may resume)."
    )
    max_buffer_bytes: int = _setting(
        262_144,
        "A subscriber with more than this unsent is cut off; it resumes from its Last-Event-ID.",
    )
    hub_ring_size: int = _setting(
        256, "Recent events the hub keeps framed per watched job, to serve reconnects from memory."
    )
    hub_ring_bytes: int = _setting(
        1_048_576,
        "Most bytes of recent events the hub keeps per watched job (with JOBWIRE_HUB_RING_SIZE, "
        "whichever bound is reached first); the gateway's ring memory is at most this times "
        "the jobs it watches.",
    )
    hub_linger_s: float = _setting(
        5.0, "How long the hub keeps watching a job after its last subscriber left."
    )
    gc_full_collect_s: float = _setting(
        3_600.0,
        "How often `jobwire gateway` runs a full garbage collection over the streams it holds "
        "(a pause of about 45 ms per 1,000 open streams); between them they are frozen out of "
        "collections. 0: never.",
    )
    gateway_processes: int = _setting(
        1,
        "Processes `jobwire gateway` runs on its port (SO_REUSEPORT), each with its own hub and "
        "Redis connections; about one per core.",
    )
    head_timeout_s: float = _setting(
        20.0,
        "A request's head (its line and headers) must arrive within this long of the "
        "connection opening, or of its first byte on a kept-alive connection; a late one gets "
        "408 and the connection is closed (a connection that never sent a byte is just "
        "closed). Bounds slow-header (slowloris) connections; an event stream, once its "
        "request is in, is never cut by it.",
    )
    host: str = _setting("127.0.0.1", "Address the gateway listens on.")
    port: int = _setting(8000, "Port the gateway listens on.")
    max_body_bytes: int = _setting(65_536, "Largest accepted request body (413 above it).")
    max_result_bytes: int = _setting(
        65_536, "Largest encoded job result put in the `completed` event; larger ones are cut."
    )
    max_event_bytes: int = _setting(
        131_072,
        "Largest encoded event a worker stores; a larger one keeps its type and its data is "
        'replaced by `{"truncated": true, "bytes": n}`. At least JOBWIRE_MAX_RESULT_BYTES '
        f"+ {ENVELOPE_BYTES}; keep it below JOBWIRE_MAX_BUFFER_BYTES, or one event cuts off "
        "every subscriber.",
    )
    job_timeout_s: float = _setting(3_600.0, "A job running longer than this fails.")
    max_tries: int = _setting(3, "Attempts a retryable job gets before it fails.")
    retry_delay_s: float = _setting(1.0, "Delay before a retryable job runs again.")
    jobs: str = _setting(
        "",
        "The jobs a worker runs: `module:attribute` paths to JobRegistry objects, comma- or "
        "space-separated (`myapp.jobs:jobs other.mod:registry`), imported from the working "
        "directory or the installed packages. Paths given to `jobwire worker` or `jobwire up` "
        "take its place. Empty: the demo jobs.",
    )
    worker_concurrency: int = _setting(10, "Jobs one worker runs at the same time.")
    worker_poll_s: float = _setting(
        0.5, "How often a worker polls for new jobs and aborts (cancel latency)."
    )
    publish_replicas: int = _setting(
        0,
        "Replicas that must have each event before its publish returns (WAIT after the "
        "script): an event the worker saw written then survives its master's loss. 0: none.",
    )
    publish_replicas_timeout_ms: int = _setting(
        1_000,
        "How long a publish waits for JOBWIRE_PUBLISH_REPLICAS; past it the event stays "
        "written and the shortfall is logged.",
    )
    publish_retry_s: float = _setting(
        30.0,
        "How long a worker keeps retrying an event while Redis is unreachable (the job waits); "
        "a closing event still unwritten after this is logged as an error. 0: one attempt.",
    )
    shutdown_grace_s: float = _setting(
        5.0,
        "On SIGTERM a worker lets running jobs finish for this long, then cancels them and "
        "puts them back in the queue (`retrying`). Keep it below the orchestrator's stop timeout.",
    )
    log_level: str = _setting("INFO", "Log level of the gateway and worker.")
    metrics_key: str = _setting(
        "",
        "A bearer token that opens the gateway's GET /metrics (and nothing else) from any "
        "address, for a Prometheus elsewhere; 16+ characters. Peers on loopback need no "
        "token, and an API key opens it too.",
        secret=True,
    )
    worker_metrics_port: int = _setting(
        0, "Port of each worker's Prometheus listener (GET /metrics); 0: no listener."
    )
    worker_metrics_host: str = _setting(
        "127.0.0.1", "Address a worker's Prometheus listener binds (0.0.0.0: every interface)."
    )
    log_format: str = _setting(
        "text",
        "`text`: lines for people; `json`: one JSON object per line from every process "
        "(time, level, logger, message, and job_id, request_id, key where known).",
    )
    auth_disabled: bool = _setting(
        False,
        "true: the gateway checks no API key or watch token, so anyone who reaches it may "
        "submit, watch and cancel any job; it logs a warning at start. Only for a gateway "
        "nobody else can reach.",
    )
    api_keys: str = _setting(
        "",
        "API keys clients send as `Authorization: Bearer <key>`, comma-separated; each may be "
        "`name:key`, the name standing for the key in logs, limits and tokens (else an id "
        "keyed with JOBWIRE_TOKEN_SECRET does). 16+ characters each. "
        "Needed unless auth is disabled (`jobwire up` makes one).",
        secret=True,
    )
    token_secret: str = _setting(
        "",
        "Signs watch tokens (HMAC-SHA256); 32+ characters, the same on every gateway replica. "
        "Changing it voids the tokens issued and gives unnamed API keys new ids, so the jobs "
        "they submitted are no longer theirs. Needed unless auth is disabled (`jobwire up` "
        "makes one).",
        secret=True,
    )
    token_ttl_s: float = _setting(
        86_400.0, "How long a watch token, issued at submit, stays valid."
    )
    cors_origins: str = _setting(
        "",
        "Origins whose web pages may call the gateway, comma-separated "
        "(`https://app.example.com`; `*`: any). Empty: only the gateway's own page.",
    )
    max_streams_per_key: int = _setting(
        1_000,
        "Event streams one API key may hold open at once, per gateway process (429 above it); "
        "0: no limit.",
    )
    max_streams_per_token: int = _setting(
        100,
        "Event streams the watch tokens of one job may hold open at once, per gateway process "
        "(429 above it); counted apart from the key's own streams, so whoever holds a token "
        "cannot use up the key's. 0: no limit.",
    )
    submits_per_minute: int = _setting(
        600,
        "Jobs one API key may submit per minute, per gateway process, in bursts of up to as "
        "many (429 with Retry-After above it); 0: no limit.",
    )
    stream_opens_per_minute: int = _setting(
        6_000,
        "Event-stream requests (GET or HEAD) one API key may make per minute, per gateway "
        "process, in bursts of up to as many (429 with Retry-After above it): each reads Redis "
        "for up to 50 jobs. The default lets a key's streams all reconnect at once several "
        "times over (a deploy); 0: no limit.",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from `JOBWIRE_*` names; unknown names are warned about."""
        environ = os.environ if environ is None else environ
        values = read_env(environ, {f.name: f.type for f in fields(cls)})
        settings = cls(**values)
        settings.validate()
        return settings

    def replace(self, **changes: Any) -> Settings:
        settings = dataclasses.replace(self, **changes)
        settings.validate()
        return settings

    def validate(self) -> None:
        positive = (
            "stream_maxlen",
            "retention_s",
            "jobs_listed_per_key",
            "heartbeat_s",
            "progress_interval_s",
            "ping_s",
            "send_timeout_s",
            "max_buffer_bytes",
            "hub_ring_size",
            "hub_ring_bytes",
            "max_body_bytes",
            "max_result_bytes",
            "max_event_bytes",
            "job_timeout_s",
            "max_tries",
            "worker_concurrency",
            "worker_poll_s",
            "token_ttl_s",
            "gateway_processes",
            "head_timeout_s",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise SettingsError(f"{env_name(name)} must be > 0")
        non_negative = (
            "retry_delay_s",
            "sse_retry_ms",
            "publish_retry_s",
            "publish_replicas",
            "publish_replicas_timeout_ms",
            "shutdown_grace_s",
            "hub_linger_s",
            "gc_full_collect_s",
            "max_streams_per_key",
            "max_streams_per_token",
            "submits_per_minute",
            "stream_opens_per_minute",
        )
        for name in non_negative:
            if getattr(self, name) < 0:
                raise SettingsError(f"{env_name(name)} must be >= 0")
        if self.max_event_bytes < self.max_result_bytes + ENVELOPE_BYTES:
            raise SettingsError(
                f"{ENV_PREFIX}MAX_EVENT_BYTES must be at least {ENV_PREFIX}MAX_RESULT_BYTES + "
                f"{ENVELOPE_BYTES}, so a `completed` event carries its whole result"
            )
        if self.log_format not in LOG_FORMATS:
            raise SettingsError(
                f"{ENV_PREFIX}LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, "
                f"got {self.log_format!r}"
            )
        for name in ("port", "worker_metrics_port"):
            if not 0 <= getattr(self, name) <= 65_535:
                raise SettingsError(
                    f"{env_name(name)} must be a TCP port, got {getattr(self, name)}"
                )
        if self.metrics_key and len(self.metrics_key) < MIN_METRICS_KEY_CHARS:
            raise SettingsError(
                f"{ENV_PREFIX}METRICS_KEY must be at least {MIN_METRICS_KEY_CHARS} characters"
            )
        if is_cluster_url(self.queue_redis_url):
            raise SettingsError(
                f"{ENV_PREFIX}QUEUE_REDIS_URL must name one Redis (or Sentinel): arq's queue "
                "cannot live on a cluster"
            )
        if is_cluster_url(self.redis_url) and not self.queue_redis_url:
            raise SettingsError(
                f"{ENV_PREFIX}REDIS_URL names a Redis Cluster: set {ENV_PREFIX}QUEUE_REDIS_URL "
                "too (the queue: one Redis (or Sentinel); the events: a cluster)"
            )
        if not self.key_prefix or "{" in self.key_prefix or "}" in self.key_prefix:
            raise SettingsError(f"{ENV_PREFIX}KEY_PREFIX must be non-empty, without braces")
        parse_api_keys(self.api_keys, id_secret=self.token_secret)
        if self.token_secret and len(self.token_secret) < MIN_SECRET_CHARS:
            raise SettingsError(
                f"{ENV_PREFIX}TOKEN_SECRET must be at least {MIN_SECRET_CHARS} characters"
            )
        for origin in self.cors_origin_list:
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise SettingsError(
                    f"{ENV_PREFIX}CORS_ORIGINS: {origin!r} is not an origin such as "
                    "https://app.example.com (scheme and host, an optional port, no path)"
                )

    @property
    def auth_enabled(self) -> bool:
        return not self.auth_disabled

    @property
    def cors_origin_list(self) -> list[str]:
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]

    @property
    def job_paths(self) -> list[str]:
        return [path for path in re.split(r"[\s,]+", self.jobs) if path]

    @property
    def events_redis_url(self) -> str:
        return self.redis_url or DEFAULT_REDIS_URL

    @property
    def arq_redis_url(self) -> str:
        return self.queue_redis_url or self.events_redis_url

    def to_env(self) -> dict[str, str]:
        """The `JOBWIRE_*` variables that rebuild these settings in a child process."""
        return {
            env_name(f.name): str(getattr(self, f.name))
            for f in fields(self)
            if getattr(self, f.name) != f.default
        }


def env_names() -> list[str]:
    return [env_name(f.name) for f in fields(Settings)]


def describe() -> list[tuple[str, str, str]]:
    """(env name, default, doc) for every setting: the README's settings table."""
    return [(env_name(f.name), repr(f.default), f.metadata["doc"]) for f in fields(Settings)]
