"""A real Redis Cluster from the `redis-server` binary, for the bench and the tests: by default
six processes on free loopback ports (3 masters, one replica each, a short
`cluster-node-timeout` so a lost master is replaced within a few seconds), joined with
`redis-cli --cluster create`. Files live in `data_dir`; `stop` ends every process it started.

    cluster = LocalCluster(data_dir, replicas=0)   # the bench: 3 masters, nothing else
    cluster.start()
    ...  # JOBWIRE_REDIS_URL=cluster.url
    cluster.stop()

Waits are bounded; `timeout_scale` stretches every bound (the tests pass theirs, for slow
machines)."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from bench.processes import free_port

__all__ = ["LocalCluster", "NODE_TIMEOUT_MS"]

NODE_TIMEOUT_MS = 1000
# A node also listens on its port + 10000 (the cluster bus): both must be free.
_BUS_OFFSET = 10_000


@dataclass
class LocalCluster:
    data_dir: Path
    masters_count: int = 3
    replicas: int = 1  # per master
    timeout_scale: float = 1.0
    ports: list[int] = field(default_factory=list)
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    _clients: dict[int, redis.Redis] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """What JOBWIRE_REDIS_URL names it by: one seed node."""
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def start(self, timeout: float = 30.0) -> None:
        binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if binary is None or cli is None:
            raise RuntimeError("redis-server and redis-cli are needed (.ci/run installs them)")
        count = self.masters_count * (1 + self.replicas)
        self.ports = [self._start_on_a_free_port(binary, timeout) for _ in range(count)]
        nodes = [f"127.0.0.1:{port}" for port in self.ports]
        replicas = ["--cluster-replicas", str(self.replicas)]
        subprocess.run(
            [cli, "--cluster", "create", *nodes, *replicas, "--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=self._scaled(timeout),
        )
        self.wait_healthy(timeout)

    def stop(self) -> None:
        for client in self._clients.values():
            client.close()
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=self._scaled(10))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def kill(self, port: int) -> None:
        """SIGKILL the node on `port` (as a crash would)."""
        process = self.processes[port]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=self._scaled(10))

    def restart(self, port: int) -> None:
        """Start the node on `port` again: its nodes.conf brings it back into the cluster."""
        binary = shutil.which("redis-server")
        assert binary is not None
        self._start_node(binary, port)

    def masters(self) -> dict[int, list[int]]:
        """Master port -> its replicas' ports, as the first node that answers sees it."""
        for port in self.live_ports():
            try:
                nodes = self.command(port, "CLUSTER NODES")
            except redis.RedisError:
                continue
            return _masters(nodes)
        raise RuntimeError("no node of the cluster answers")

    def live_ports(self) -> list[int]:
        return [port for port, process in self.processes.items() if process.poll() is None]

    def healthy(self) -> bool:
        """Every live node says the cluster is ok and sees the same masters, each with its
        replicas, and each replica's link to its master is up."""
        views = set()
        for port in self.live_ports():
            try:
                info = self.command(port, "CLUSTER INFO")
                nodes = self.command(port, "CLUSTER NODES")
            except redis.RedisError:
                return False
            if info.get("cluster_state") != "ok" or int(info["cluster_known_nodes"]) < len(
                self.ports
            ):
                return False
            masters = _masters(nodes)
            if len(masters) != self.masters_count or any(
                len(replicas) < self.replicas for replicas in masters.values()
            ):
                return False
            views.add(frozenset((port, tuple(sorted(r))) for port, r in masters.items()))
        if len(views) != 1:
            return False
        (view,) = views
        return all(self._replica_synced(replica) for _, replicas in view for replica in replicas)

    def wait_healthy(self, timeout: float = 30.0) -> None:
        self._wait(self.healthy, "the cluster healthy", timeout)

    def pids(self) -> dict[int, int]:
        """Port -> pid of every node started."""
        return {port: process.pid for port, process in self.processes.items()}

    def client(self, port: int) -> redis.Redis:
        return self._client(port)

    def command(self, port: int, *args: str) -> Any:
        """A command on the node at `port` (redis-py leaves `execute_command` untyped)."""
        return self._client(port).execute_command(*args)  # type: ignore[no-untyped-call]

    def _replica_synced(self, port: int) -> bool:
        try:
            info: dict[str, Any] = self._client(port).info("replication")  # type: ignore[assignment]
        except redis.RedisError:
            return False
        return bool(info.get("master_link_status") == "up")

    def _start_on_a_free_port(self, binary: str, timeout: float) -> int:
        """A node up on a port that was free when chosen; another process may take a port
        between the check and the node's bind (the node then exits), so a few are tried."""
        for _ in range(_PORT_TRIES):
            port = _node_port()
            self._start_node(binary, port)
            process = self.processes[port]

            def up(port: int = port, process: subprocess.Popen[bytes] = process) -> bool:
                if process.poll() is not None:
                    raise _NodeExited
                return bool(self._client(port).ping())

            try:
                self._wait(up, f"node {port} up", timeout)
            except _NodeExited:
                del self.processes[port]
                client = self._clients.pop(port, None)
                if client is not None:
                    client.close()
                continue
            return port
        raise RuntimeError(f"no redis-server node started in {_PORT_TRIES} tries (see its log)")

    def _start_node(self, binary: str, port: int) -> None:
        self.processes[port] = subprocess.Popen(
            [
                binary,
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--cluster-enabled", "yes",
                "--cluster-config-file", f"nodes-{port}.conf",
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                # A replica syncs at once, not after the 5 s default that gathers replicas.
                "--repl-diskless-sync-delay", "0",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.data_dir),
                "--loglevel", "warning",
                "--logfile", str(self.data_dir / f"redis-{port}.log"),
            ],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip

    def _client(self, port: int) -> redis.Redis:
        client = self._clients.get(port)
        if client is None:
            client = self._clients[port] = redis.Redis(
                port=port, socket_connect_timeout=0.5, socket_timeout=2
            )
        return client

    def _scaled(self, seconds: float) -> float:
        return seconds * self.timeout_scale

    def _wait(self, condition: object, what: str, timeout: float) -> None:
        assert callable(condition)
        deadline = time.monotonic() + self._scaled(timeout)
        while True:
            try:
                if condition():
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: not within {self._scaled(timeout):.3g}s")
            time.sleep(0.05)


_PORT_TRIES = 5


class _NodeExited(Exception):
    """The node's process ended before it answered: most likely its port was taken."""


def _node_port() -> int:
    """A free port whose cluster bus port is free too."""
    while True:
        port = free_port()
        if port + _BUS_OFFSET > 65_535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as bus:
            try:
                bus.bind(("127.0.0.1", port + _BUS_OFFSET))
            except OSError:
                continue
        return port


def _masters(nodes: dict[str, dict[str, Any]]) -> dict[int, list[int]]:
    """Master port -> live replica ports, from redis-py's parsed CLUSTER NODES."""

    def port_of(address: str) -> int:
        return int(address.split("@")[0].rsplit(":", 1)[1])

    masters = {
        node["node_id"]: port_of(address)
        for address, node in nodes.items()
        if "master" in node["flags"] and "fail" not in node["flags"] and node["slots"]
    }
    replicas: dict[int, list[int]] = {port: [] for port in masters.values()}
    for address, node in nodes.items():
        if "slave" in node["flags"] and "fail" not in node["flags"]:
            master = masters.get(node["master_id"])
            if master is not None:
                replicas[master].append(port_of(address))
    return replicas
