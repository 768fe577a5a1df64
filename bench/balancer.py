"""HAProxy in front of several gateways, run from the repository's own balancer/haproxy.cfg
(the file docker-compose.yml's `cluster` profile mounts) plus a second file, written here,
naming the gateways by address and opening HAProxy's statistics on a port of its own.

    with balancer(["127.0.0.1:8001", "127.0.0.1:8002"]) as lb:
        ...  # clients use lb.url; lb.servers() says which gateways HAProxy sends to

HAProxy runs in the foreground as whoever starts it: no root, its pid file and configuration
in a temporary folder, its log on stdout (to a file there).
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.processes import REPO_ROOT, ServiceFailed, free_port, service, wait_for_http

__all__ = ["CONFIG", "Balancer", "ServerState", "balancer", "find_haproxy", "render_gateways"]

CONFIG = REPO_ROOT / "balancer" / "haproxy.cfg"
# Debian installs it outside a normal user's PATH.
_HAPROXY_PATHS = ("haproxy", "/usr/sbin/haproxy")


def find_haproxy() -> str:
    for candidate in _HAPROXY_PATHS:
        found = shutil.which(candidate)
        if found:
            return found
    raise ServiceFailed("haproxy is not installed (apt-get install haproxy)")


def render_gateways(
    addresses: Sequence[str], stats_port: int, max_connections: int | None = None
) -> str:
    """The second configuration file: `backend gateways` with one server per `host:port`
    (named `gateway-<index>`), and the statistics page on loopback `stats_port`; with
    `max_connections`, HAProxy's global bound on connections (it raises its own open-file
    limit to fit, when allowed to)."""
    servers = [f"    server gateway-{index} {address}" for index, address in enumerate(addresses)]
    bound = ["global", f"    maxconn {max_connections}", ""] if max_connections else []
    return "\n".join(
        [
            *bound,
            "backend gateways",
            *servers,
            "",
            "frontend stats",
            f"    bind 127.0.0.1:{stats_port}",
            "    stats enable",
            "    stats uri /stats",
            "",
        ]
    )


@dataclass(frozen=True)
class ServerState:
    """One gateway as HAProxy sees it."""

    status: str  # UP, DOWN, "UP 1/2" (going up), "DOWN 1/2" (going down), MAINT, no check
    current: int  # connections open to it now
    total: int  # connections it was sent so far


@dataclass(frozen=True)
class Balancer:
    port: int
    stats_port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def servers(self) -> dict[str, ServerState]:
        """Every gateway of the backend, by name, from HAProxy's statistics (blocking)."""
        url = f"http://127.0.0.1:{self.stats_port}/stats;csv"
        with urllib.request.urlopen(url, timeout=5) as reply:
            text = reply.read().decode().removeprefix("# ")
        return {
            row["svname"]: ServerState(row["status"], int(row["scur"]), int(row["stot"]))
            for row in csv.DictReader(io.StringIO(text))
            if row["pxname"] == "gateways" and row["svname"] not in ("FRONTEND", "BACKEND")
        }


@contextmanager
def balancer(
    gateways: Sequence[str], port: int | None = None, max_connections: int | None = None
) -> Iterator[Balancer]:
    """HAProxy on loopback `port` (a free one by default) balancing `gateways` (`host:port`
    each), at most `max_connections` clients at once when given; stopped when the block
    ends."""
    port = port or free_port()
    stats_port = free_port()
    with tempfile.TemporaryDirectory(prefix="jobwire-haproxy-") as tmp:
        run_dir = Path(tmp)
        gateways_cfg = run_dir / "gateways.cfg"
        gateways_cfg.write_text(render_gateways(gateways, stats_port, max_connections))
        command = [
            find_haproxy(),
            "-db",
            "-f", str(CONFIG),
            "-f", str(gateways_cfg),
            "-p", str(run_dir / "haproxy.pid"),
        ]  # fmt: skip
        log = run_dir / "haproxy.log"
        env = {"BALANCER_BIND": f"127.0.0.1:{port}"}
        with service("haproxy", command, env=env, log=log) as process:
            try:
                wait_for_http("haproxy", stats_port, "/stats", process)
            except ServiceFailed:
                print(log.read_text(errors="replace"), flush=True)
                raise
            yield Balancer(port, stats_port, process, log)
