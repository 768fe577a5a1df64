"""`jobwire up`: the whole stack on one machine, for trying Jobwire and for development.

It starts a private redis-server on a free port (unless JOBWIRE_REDIS_URL names one), one
worker and the gateway as child processes, waits until the gateway is ready, prints what to
try, and on Ctrl-C or SIGTERM stops every process it started: gateway first (so clients
reconnect elsewhere), then the worker (which re-queues what it was running), then Redis.

Auth stays on: without JOBWIRE_API_KEYS it makes an API key for this run and prints it once
(in the page's URL fragment too, which never reaches a server or its logs); without
JOBWIRE_TOKEN_SECRET it makes one, so watch tokens last as long as the run.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from jobwire.client.target import API_KEY_ENV, DEFAULT_URL
from shared.environ import env_name
from shared.settings import Settings

__all__ = ["StackError", "run_stack"]

STOP_TIMEOUT_S = 15.0
READY_TIMEOUT_S = 30.0
DEV_KEY_NAME = "dev"

logger = logging.getLogger("jobwire.up")
# Set by run_stack with JOBWIRE_LOG_FORMAT=json: how `say` writes.
_JSON_LOGS = threading.Event()


class StackError(RuntimeError):
    """A part of the stack could not start."""


def run_stack(settings: Settings, job_names: Sequence[str] = ()) -> int:
    """Runs the stack until SIGINT or SIGTERM; its worker runs the jobs `settings.jobs` names
    (else the demo jobs), and the banner shows how to submit the first of `job_names`."""
    if settings.log_format == "json":
        _JSON_LOGS.set()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    settings, made_key = _with_dev_credentials(settings)
    _check_port_free(settings.host, settings.port)
    with ExitStack() as stack:
        redis_url = settings.redis_url or stack.enter_context(_private_redis())
        env = {**os.environ, **settings.to_env(), "JOBWIRE_REDIS_URL": redis_url}
        # -P: the working directory, where the user's job modules are, must not hide ours
        # (a `worker.py` there); `jobwire worker` puts it on the path after our own imports.
        worker_command = [sys.executable, "-P", "-m", "jobwire", "worker"]
        worker = stack.enter_context(_child("worker", worker_command, env))
        gateway_command = [sys.executable, "-P", "-m", "gateway"]
        gateway = stack.enter_context(_child("gateway", gateway_command, env))
        base_url = f"http://{_display_host(settings.host)}:{settings.port}"
        _wait_ready(base_url, [worker, gateway])
        if _JSON_LOGS.is_set():
            _log_banner(base_url, redis_url, made_key)
        else:
            print(_banner(base_url, redis_url, settings, made_key, job_names), flush=True)
        while not stop.wait(0.2):
            for name, child in (("worker", worker), ("gateway", gateway)):
                if child.poll() is not None:
                    say(f"the {name} exited ({child.returncode}); stopping", logging.ERROR)
                    return 1
        say("stopping…")
    return 0


def say(message: str, level: int = logging.INFO) -> None:
    """A line about the stack itself: `jobwire: …` on stdout for people, or with JSON logs a
    line of the `jobwire.up` logger, one JSON object like every other line of the stack."""
    if _JSON_LOGS.is_set():
        logger.log(level, message)
    else:
        print(f"jobwire: {message}", flush=True)


def _log_banner(base_url: str, redis_url: str, made_key: str | None) -> None:
    """The banner as one JSON log line: its facts as fields, the key made for the run
    included (printed once, as the text banner does)."""
    facts = {"url": f"{base_url}/", "docs": f"{base_url}/docs", "redis": _redacted(redis_url)}
    if made_key is not None:
        facts["api_key"] = made_key
    logger.info("Jobwire is up: %s", facts["url"], extra=facts)


def _with_dev_credentials(settings: Settings) -> tuple[Settings, str | None]:
    """`settings` with an API key and a token secret made for this run where none is set,
    and the key made (None if none was), to print once."""
    if not settings.auth_enabled:
        return settings, None
    made_key = None if settings.api_keys else secrets.token_urlsafe(32)
    changes = {}
    if made_key is not None:
        changes["api_keys"] = f"{DEV_KEY_NAME}:{made_key}"
    if not settings.token_secret:
        changes["token_secret"] = secrets.token_urlsafe(48)
    return settings.replace(**changes), made_key


@contextmanager
def _private_redis() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise StackError("redis-server is not installed; install it or set JOBWIRE_REDIS_URL")
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="jobwire-redis-") as data_dir:
        command = [
            binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", data_dir,
            "--appendonly", "yes",
            "--save", "",
            "--loglevel", "warning",
            # Its notices (memory overcommit, shutdown) would bury the banner; errors stay there.
            "--logfile", str(Path(data_dir) / "redis.log"),
        ]  # fmt: skip
        with _child("redis-server", command, dict(os.environ)):
            _wait_for_port(port)
            yield f"redis://127.0.0.1:{port}/0"


@contextmanager
def _child(name: str, command: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    # Own process group: the terminal's Ctrl-C reaches only us, and we stop children in order.
    process = subprocess.Popen(command, env=env, start_new_session=True)
    try:
        yield process
    finally:
        _stop(name, process)


def _stop(name: str, process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        say(f"{name} did not stop in {STOP_TIMEOUT_S:.0f}s; killing it", logging.WARNING)
        process.kill()
        process.wait()


def _wait_ready(base_url: str, children: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if any(child.poll() is not None for child in children):
            raise StackError("a process of the stack exited during start-up")
        try:
            with urllib.request.urlopen(f"{base_url}/readyz", timeout=1) as response:
                if response.status == 200 and b'"workers":0' not in response.read():
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise StackError(f"the gateway was not ready at {base_url} within {READY_TIMEOUT_S:.0f}s")


def _wait_for_port(port: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise StackError(f"redis-server did not listen on port {port}")


def _check_port_free(host: str, port: int) -> None:
    """Refuses a port something already listens on, before anything starts: the readiness
    check would otherwise be answered by whatever holds the port (another stack, say), and the
    banner printed for a gateway that then fails to bind it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As uvicorn binds: a port whose last connections are in TIME_WAIT is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise StackError(
                    f"port {port} on {host} is already in use (another `jobwire up`?);"
                    f" set {env_name('port')} to a free port"
                ) from None
            raise StackError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _display_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "") else host


def _redacted(url: str) -> str:
    """`url` with its password, if any, replaced by `***` (in the user part or, as Redis URLs
    allow, in a `password=` query parameter): fit to print."""
    # Edited as text: a round trip through urlunsplit would rewrite `unix:///path` URLs.
    head, mark, query = url.partition("?")
    credentials, at, _ = urlsplit(head).netloc.rpartition("@")
    if at and ":" in credentials:
        head = head.replace(credentials + at, credentials.partition(":")[0] + ":***@", 1)
    fields = query.split("&")
    query = "&".join("password=***" if field.startswith("password=") else field for field in fields)
    return head + mark + query


def _banner(
    base_url: str,
    redis_url: str,
    settings: Settings,
    made_key: str | None,
    job_names: Sequence[str] = (),
) -> str:
    page = f"{base_url}/#key={made_key}" if made_key else f"{base_url}/"
    name, args, cli_args = "demo.countdown", '{"seconds":10}', " seconds=10"
    jobs = ""
    if settings.job_paths and job_names:
        # Their arguments are the user's to know: the example submits the first with none.
        name, args, cli_args = job_names[0], "{}", ""
        jobs = f"\n  Jobs served: {', '.join(job_names)} (add their arguments to args)\n"
    key, token = "", ""
    if settings.auth_enabled:
        key = f' -H "Authorization: Bearer ${API_KEY_ENV}"'
        token = ' -H "Authorization: Bearer WATCH_TOKEN"'
    # The jobwire command's own default is DEFAULT_URL: any other address must be named.
    url = "" if base_url == DEFAULT_URL else f" --url {base_url}"
    return f"""
Jobwire is up: {page}   (the web page; events and state in {_redacted(redis_url)})
{_key_notice(settings, made_key)}{jobs}
  Submit a job:
    curl -i -X POST {base_url}/jobs{key} -H 'Content-Type: application/json' \\
      -d '{{"name":"{name}","args":{args}}}'
  Watch it (use the job_id{" and watch_token" if token else ""} from the answer):
    curl -N {base_url}/jobs/JOB_ID/events{token}
  Cut it with Ctrl-C, then resume from the last id you saw:
    curl -N {base_url}/jobs/JOB_ID/events{token} -H 'Last-Event-ID: LAST_ID'
  State, cancel, health:
    curl {base_url}/jobs/JOB_ID{key}
    curl -X DELETE {base_url}/jobs/JOB_ID{key}
    curl {base_url}/readyz
  The same from the command line:
    jobwire submit {name}{cli_args} --watch{url}

Press Ctrl-C to stop everything.
"""


def _key_notice(settings: Settings, made_key: str | None) -> str:
    if not settings.auth_enabled:
        return "\n  Authentication is OFF (JOBWIRE_AUTH_DISABLED=true): anyone here may use it.\n"
    if made_key is None:
        return f"\n  API keys: JOBWIRE_API_KEYS (export {API_KEY_ENV}=<one of them>)\n"
    return f"""
  API key made for this run (set JOBWIRE_API_KEYS to choose your own):
    export {API_KEY_ENV}={made_key}
"""
