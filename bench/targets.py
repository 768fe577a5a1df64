"""The servers the bench compares, each started with a private redis-server on a free port.

- `jobwire`: the product, `jobwire gateway` (uvicorn picks uvloop + httptools when installed).
- `jobwire*<n>`: the same with `JOBWIRE_GATEWAY_PROCESSES=<n>`: n processes on one port.
- `jobwire@<git ref>`: the gateway as committed at that ref (exported with `git archive`, run
  from the export with this venv), to compare a change against what it replaces.
- `naive`: bench/naive_gateway.py, one blocking XREAD per connection.
- `nchan`: nginx + Nchan with Redis storage, one worker.
- `cluster*<n>` (`cluster*<n>@<git ref>`): n `jobwire gateway` processes, each on a port of
  its own, behind HAProxy (bench/balancer.py, the repository's balancer/haproxy.cfg; two
  processes on one port, see BALANCERS); the events on a local Redis
  Cluster of 3 masters (bench/cluster.py, no replicas), arq's queue on the private Redis.
- `<any Jobwire target>-ws`, `nchan-ws`: the same server, its subscribers on WebSocket
  (Jobwire's `/jobs/<id>/ws` and `/events/ws`; Nchan's `nchan_subscriber websocket`).

Every one serves `GET /jobs/<id>/events` on 127.0.0.1 and resumes from `Last-Event-ID`; the
Jobwire ones also serve several jobs on one stream, `GET /events?job=a&job=b`.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from bench.balancer import balancer
from bench.cluster import LocalCluster
from bench.nchan import nchan
from bench.processes import (
    REPO_ROOT,
    ServiceFailed,
    free_port,
    service,
    wait_for_http,
    wait_for_listeners,
    wait_for_port,
)

__all__ = [
    "EVENTS_PATH",
    "MULTI_EVENTS_PATH",
    "TARGETS",
    "RedisServer",
    "Target",
    "redis_server",
    "reference_of",
    "serves_multi_job_streams",
    "start_target",
]

TARGETS = ("jobwire", "jobwire*2", "naive", "nchan")
# `jobwire gateway` from a source tree other than the installed one (every tree since the
# first gateway has `gateway/__main__.py`).
_GATEWAY_FROM_TREE = "import runpy; runpy.run_module('gateway', run_name='__main__')"
EVENTS_PATH = "/jobs/{job}/events"
MULTI_EVENTS_PATH = "/events"
# Nchan's multiplexed channels (bench/nginx.conf.template), for the multi-job shapes.
NCHAN_MULTI = "/multi?jobs={jobs}"
SOCKET_PATH = "/jobs/{job}/ws"  # Jobwire's and (bench/nginx.conf.template) Nchan's
MULTI_SOCKET_PATH = "/events/ws"
WEBSOCKET_SUFFIX = "-ws"
KEY_PREFIX = "jobwire"
# Redis keeps 32 descriptors for itself below the 20,000 open-file limit.
REDIS_MAX_CLIENTS = 19_900
# HAProxy holds two descriptors per stream (the client's and the gateway's), and this
# machine's hard open-file limit is 20,000 a process (not raisable, even as root): one HAProxy
# carries 9,990 streams at most. So the balancer is two HAProxy processes on one port
# (SO_REUSEPORT, HAProxy's default: the kernel splits the connections between them), as a
# deployment runs several balancers behind one address; together they carry the largest
# shape, 18,000 subscribers.
BALANCERS = 2
BALANCER_MAX_CONNECTIONS = 9_900  # each: 2 x 9,900 + 20 descriptors fit under 20,000
BALANCER_READY_S = 30.0


@dataclass(frozen=True, slots=True)
class RedisServer:
    port: int
    pid: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    port: int
    pid: int  # root of the process tree whose CPU and memory are the target's
    redis: RedisServer
    publisher: dict[str, Any]  # how bench.publishers reaches it
    events_path: str = EVENTS_PATH
    multi_events_path: str | None = None  # None: no multi-job stream
    notes: list[str] = field(default_factory=list)
    wire: str = "sse"  # the subscribers' format, of bench.subscribers.WIRES
    more_pids: tuple[int, ...] = ()  # more gateway processes, each a tree of its own
    balancer_pids: tuple[int, ...] = ()  # the balancer in front of the gateways, measured apart
    redis_nodes: tuple[RedisServer, ...] = ()  # every node of a cluster; (): only `redis`
    # Where the publisher runs from: a folder whose `shared` is the gateway's own (a gateway
    # as committed at a ref listens for what that ref's publish script sends). None: this tree.
    publisher_root: Path | None = None

    @property
    def pids(self) -> tuple[int, ...]:
        """The roots of every process tree that is the target's (its gateways)."""
        return (self.pid, *self.more_pids)

    @property
    def redis_servers(self) -> tuple[RedisServer, ...]:
        """Every redis-server holding the target's events."""
        return self.redis_nodes or (self.redis,)


@contextmanager
def redis_server(run_dir: Path) -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServiceFailed("redis-server is not installed")
    port = free_port()
    command = [
        binary,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "no",
        "--maxclients", str(REDIS_MAX_CLIENTS),
        "--dir", str(run_dir),
        "--loglevel", "warning",
        "--logfile", str(run_dir / "redis.log"),
    ]  # fmt: skip
    with service("redis-server", command) as process:
        wait_for_port("redis-server", port, process)
        yield RedisServer(port, process.pid)


@contextmanager
def start_target(
    name: str, gateway_env: Mapping[str, str] | None = None, log_dir: Path | None = None
) -> Iterator[Target]:
    """Start `name` and its Redis; both are stopped on exit. Gateway logs go to `log_dir`."""
    server_name, websocket = _server_of(name)
    if websocket and not (_is_jobwire(server_name) or server_name == "nchan"):
        raise ValueError(f"{server_name} has no WebSocket stream")
    with _start_server(server_name, gateway_env, log_dir, label=name) as target:
        if not websocket:
            yield target
        elif _is_jobwire(server_name):
            yield replace(
                target,
                name=name,
                events_path=SOCKET_PATH,
                multi_events_path=MULTI_SOCKET_PATH,
                wire="ws",
            )
        else:
            yield replace(target, name=name, events_path=SOCKET_PATH, wire="ws-nchan")


@contextmanager
def _start_server(
    name: str, gateway_env: Mapping[str, str] | None, log_dir: Path | None, label: str
) -> Iterator[Target]:
    with ExitStack() as stack:
        run_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"bench-{name}-")))
        logs = log_dir or run_dir
        logs.mkdir(parents=True, exist_ok=True)
        redis = stack.enter_context(redis_server(run_dir))
        redis_publisher = {"kind": "redis", "redis_url": redis.url, "key_prefix": KEY_PREFIX}
        port = free_port()
        if _is_cluster(name):
            yield stack.enter_context(
                _behind_balancer(name, port, redis, gateway_env, logs, run_dir, label)
            )
        elif _is_jobwire(name):
            processes = int(name.partition("*")[2].partition("@")[0] or 1)
            env = _gateway_env({"JOBWIRE_REDIS_URL": redis.url}, port, gateway_env)
            if processes > 1:
                env["JOBWIRE_GATEWAY_PROCESSES"] = str(processes)
            command, tree = _gateway_command(name, run_dir)
            if tree != REPO_ROOT:
                env["PYTHONPATH"] = str(tree)
            publisher_root = _publisher_root(tree, run_dir)
            log = logs / f"{label.replace('@', '-').replace('*', 'x')}-gateway.log"
            process = stack.enter_context(service(name, command, env, log=log, cwd=tree))
            _ready(lambda: wait_for_http(name, port, "/healthz", process), log)
            _ready(lambda: wait_for_listeners(name, port, processes, process), log)
            yield Target(
                name,
                port,
                process.pid,
                redis,
                redis_publisher,
                multi_events_path=MULTI_EVENTS_PATH,
                publisher_root=publisher_root,
            )
        elif name == "naive":
            env = {"JOBWIRE_REDIS_URL": redis.url, "JOBWIRE_KEY_PREFIX": KEY_PREFIX}
            command = [sys.executable, "-m", "bench.naive_gateway", "--port", str(port)]
            log = logs / "naive-gateway.log"
            process = stack.enter_context(service("naive gateway", command, env, log=log))
            _ready(lambda: wait_for_port("naive gateway", port, process), log)
            yield Target(name, port, process.pid, redis, redis_publisher)
        elif name == "nchan":
            server = stack.enter_context(nchan(redis.url, port))
            publisher = {"kind": "nchan", "publish_url": server.publish_url}
            yield Target(name, port, server.pid, redis, publisher, multi_events_path=NCHAN_MULTI)
        else:
            raise ValueError(f"unknown target {name!r}; known: {', '.join(TARGETS)}")


def _gateway_env(
    redis: Mapping[str, str], port: int, gateway_env: Mapping[str, str] | None
) -> dict[str, str]:
    return {
        **redis,
        "JOBWIRE_HOST": "127.0.0.1",
        "JOBWIRE_PORT": str(port),
        "JOBWIRE_KEY_PREFIX": KEY_PREFIX,
        "JOBWIRE_LOG_LEVEL": "WARNING",
        # Like Nchan and the naive gateway here: no credentials on 127.0.0.1. (A gateway from
        # before authentication existed warns about the name, harmlessly.)
        "JOBWIRE_AUTH_DISABLED": "true",
        **(gateway_env or {}),
    }


@contextmanager
def _behind_balancer(
    name: str,
    port: int,
    queue: RedisServer,
    gateway_env: Mapping[str, str] | None,
    logs: Path,
    run_dir: Path,
    label: str,
) -> Iterator[Target]:
    """`cluster*<n>`: n gateways behind HAProxy on `port`, the events on a 3-master cluster,
    arq's queue on `queue` (the gateway needs one beside a cluster; nothing is queued here)."""
    gateways = int(name.partition("*")[2].partition("@")[0] or 1)
    command, tree = _gateway_command(name, run_dir)
    with ExitStack() as stack:
        cluster = stack.enter_context(_local_cluster(run_dir / "cluster"))
        redis = {"JOBWIRE_REDIS_URL": cluster.url, "JOBWIRE_QUEUE_REDIS_URL": queue.url}
        ports = [free_port() for _ in range(gateways)]
        processes = []
        for index, gateway_port in enumerate(ports):
            log = logs / f"{label.replace('@', '-').replace('*', 'x')}-gateway-{index}.log"
            env = _gateway_env(redis, gateway_port, gateway_env)
            if tree != REPO_ROOT:
                env["PYTHONPATH"] = str(tree)
            gateway = f"{name} gateway {index}"
            process = stack.enter_context(service(gateway, command, env, log, cwd=tree))
            _ready(partial(wait_for_http, name, gateway_port, "/readyz", process), log)
            processes.append(process)
        addresses = [f"127.0.0.1:{gateway_port}" for gateway_port in ports]
        fronts = [
            stack.enter_context(balancer(addresses, port, BALANCER_MAX_CONNECTIONS))
            for _ in range(BALANCERS)
        ]
        for front in fronts:
            _wait_all_up(front.servers, len(ports))
        nodes = tuple(RedisServer(node, pid) for node, pid in cluster.pids().items())
        publisher = {"kind": "redis", "redis_url": cluster.url, "key_prefix": KEY_PREFIX}
        yield Target(
            name,
            port,
            processes[0].pid,
            nodes[0],
            {**publisher, "queue_redis_url": queue.url},
            multi_events_path=MULTI_EVENTS_PATH,
            more_pids=tuple(process.pid for process in processes[1:]),
            balancer_pids=tuple(front.process.pid for front in fronts),
            redis_nodes=nodes,
            publisher_root=_publisher_root(tree, run_dir),
        )


def _gateway_command(name: str, run_dir: Path) -> tuple[list[str], Path]:
    """How to run the gateway of target `name`, and from which tree: this one, or with
    `@<git ref>` the files at that ref exported into `run_dir`."""
    ref = name.partition("@")[2]
    if not ref:
        return [_jobwire_command(), "gateway"], REPO_ROOT
    tree = run_dir / "tree"
    _export(ref, tree)
    return [sys.executable, "-c", _GATEWAY_FROM_TREE], tree


def _publisher_root(tree: Path, run_dir: Path) -> Path | None:
    """For a gateway from an exported `tree`: a folder holding this repository's `bench` and
    the tree's `shared`, for the publisher to run from (its working directory comes first on
    its import path). None for this tree."""
    if tree == REPO_ROOT:
        return None
    root = run_dir / "publisher"
    root.mkdir()
    (root / "bench").symlink_to(REPO_ROOT / "bench")
    (root / "shared").symlink_to(tree / "shared")
    return root


@contextmanager
def _local_cluster(data_dir: Path) -> Iterator[LocalCluster]:
    """3 masters and no replicas: the single-Redis targets have none either."""
    data_dir.mkdir()
    cluster = LocalCluster(data_dir, replicas=0)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def _wait_all_up(servers: Callable[[], Mapping[str, Any]], count: int) -> None:
    """Until HAProxy's checks found `count` gateways up."""
    deadline = time.monotonic() + BALANCER_READY_S
    while time.monotonic() < deadline:
        states = servers()
        if sum(1 for state in states.values() if state.status == "UP") == count:
            return
        time.sleep(0.1)
    raise ServiceFailed(f"the balancer did not see {count} gateways up: {servers()}")


def serves_multi_job_streams(name: str) -> bool:
    """Whether target `name` serves several jobs on one stream: Jobwire (`GET /events?job=…`,
    both transports), Nchan over SSE (multiplexed channels)."""
    server, websocket = _server_of(name)
    return _is_jobwire(server) or (server == "nchan" and not websocket)


def reference_of(name: str) -> str:
    """The Nchan target a target's figures are compared with: the one on its transport."""
    return "nchan" + WEBSOCKET_SUFFIX if _server_of(name)[1] else "nchan"


def _server_of(name: str) -> tuple[str, bool]:
    """The server a target name starts, and whether its subscribers are on WebSocket."""
    if name.endswith(WEBSOCKET_SUFFIX):
        return name.removesuffix(WEBSOCKET_SUFFIX), True
    return name, False


def _is_jobwire(name: str) -> bool:
    return name.startswith(("jobwire*", "jobwire@")) or name == "jobwire" or _is_cluster(name)


def _is_cluster(name: str) -> bool:
    return name.startswith(("cluster*", "cluster@")) or name == "cluster"


def _export(ref: str, tree: Path) -> None:
    """The repository's files at `ref`, written to `tree` (reads git, changes nothing there)."""
    tree.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "archive", "--format=tar", ref],
        check=True,
        capture_output=True,
    )
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)


def _jobwire_command() -> str:
    beside_python = Path(sys.executable).with_name("jobwire")
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("jobwire")
    if found is None:
        raise ServiceFailed("the `jobwire` command is not installed (pip install -e .)")
    return found


def _ready(wait: Callable[[], None], log: Path) -> None:
    try:
        wait()
    except ServiceFailed:
        tail = log.read_text(errors="replace")[-4000:]
        print(f"--- {log}\n{tail}", file=sys.stderr, flush=True)
        raise
