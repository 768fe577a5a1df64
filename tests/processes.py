"""Real processes for fault tests: a gateway (`python -m gateway`) and a worker
(`python -m worker`) configured through `JOBWIRE_*` variables, and a redis-server with an
append-only file that can be restarted on the same port.

Each process is stopped (SIGKILL if it will not stop) when the test's `ProcessGroup` closes;
its output goes to a log file (`log()`, `ProcessGroup.logs()`) for assertion messages.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from shared.clients import create_redis
from shared.keys import Keys
from shared.settings import Settings, env_names
from tests.support import RedisServer, free_port, scaled, wait_until
from tests.watchers import TEST_API_KEY, shared_ssl_context

__all__ = [
    "GatewayProcess",
    "ProcessGroup",
    "RestartableRedis",
    "WorkerProcess",
    "open_files",
    "rss_bytes",
    "server_socket_state",
]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# On an idle machine; every bound on waiting here is `scaled`.
_START_TIMEOUT_S = 15.0
_STOP_TIMEOUT_S = 10.0


def rss_bytes(pid: int) -> int:
    """Resident memory of process `pid`, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def open_files(pid: int) -> int:
    """File descriptors process `pid` holds (sockets included), from /proc."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def _auth_env() -> dict[str, str]:
    """The test API key, for a gateway that checks keys (set only where such settings exist)."""
    wanted = {
        "JOBWIRE_API_KEYS": TEST_API_KEY,
        "JOBWIRE_TOKEN_SECRET": "jobwire-fault-tests-secret-" + "0" * 32,
    }
    known = set(env_names())
    return {name: value for name, value in wanted.items() if name in known}


# /proc/net/tcp's `st` column.
_TCP_STATES = {
    "01": "ESTABLISHED",
    "02": "SYN_SENT",
    "03": "SYN_RECV",
    "04": "FIN_WAIT1",
    "05": "FIN_WAIT2",
    "06": "TIME_WAIT",
    "07": "CLOSE",
    "08": "CLOSE_WAIT",
    "09": "LAST_ACK",
    "0A": "LISTEN",
    "0B": "CLOSING",
}


def server_socket_state(server_port: int, client_port: int) -> str | None:
    """The TCP state of the server's end of the connection from local `client_port` to
    `server_port` (from /proc/net/tcp), or None once the server has no such socket."""
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    for line in lines:
        fields = line.split()
        local, remote, state = fields[1], fields[2], fields[3]
        if (
            int(local.split(":")[1], 16) == server_port
            and int(remote.split(":")[1], 16) == client_port
        ):
            return _TCP_STATES.get(state, state)
    return None


@dataclass
class _Child:
    """One `python -m <module>` process with its own log file."""

    module: str
    env: dict[str, str]
    log_path: Path
    process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                self.module,
                cwd=PROJECT_ROOT,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def signal(self, signum: signal.Signals) -> None:
        if self.running:
            assert self.process is not None
            self.process.send_signal(signum)

    async def wait(self, timeout: float = _STOP_TIMEOUT_S) -> int:
        """The exit status, once the process has ended; within `timeout` (`scaled`)."""
        assert self.process is not None
        return await asyncio.wait_for(self.process.wait(), scaled(timeout))

    async def kill(self) -> None:
        """SIGKILL: no cleanup of any kind runs."""
        self.signal(signal.SIGKILL)
        if self.process is not None:
            await self.wait()

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not ended in time."""
        if not self.running:
            return
        self.signal(signal.SIGTERM)
        try:
            await self.wait()
        except TimeoutError:
            await self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class GatewayProcess(_Child):
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> httpx.AsyncClient:
        """A client carrying the test API key."""
        return httpx.AsyncClient(
            base_url=self.url,
            timeout=scaled(10),
            headers={"Authorization": f"Bearer {TEST_API_KEY}"},
            verify=shared_ssl_context(),
        )

    async def wait_ready(self) -> None:
        async def healthy() -> bool:
            if not self.running:
                raise RuntimeError(f"the gateway exited:\n{self.log()}")
            try:
                probe = httpx.AsyncClient(timeout=scaled(1), verify=shared_ssl_context())
                async with probe as client:
                    response = await client.get(f"{self.url}/healthz")
            except httpx.TransportError:
                return False
            return response.status_code == 200

        await wait_until(healthy, timeout=_START_TIMEOUT_S, interval=0.05, message="gateway up")


@dataclass
class WorkerProcess(_Child):
    async def start_and_wait(self, settings: Settings) -> None:
        """Starts the worker and returns once it has marked itself alive (start-up is over)."""
        client = create_redis(settings.events_redis_url)
        key = Keys(settings.key_prefix).workers()
        try:
            # Workers killed outright stay in the set for a while: wait for a new member.
            known = set(await client.zrange(key, 0, -1))
            await self.start()

            async def alive() -> bool:
                if not self.running:
                    raise RuntimeError(f"the worker exited:\n{self.log()}")
                return bool(set(await client.zrange(key, 0, -1)) - known)

            await wait_until(alive, timeout=_START_TIMEOUT_S, interval=0.05, message="worker up")
        finally:
            await client.aclose()


@dataclass
class RestartableRedis:
    """A redis-server with `appendonly yes` whose data survives a restart on the same port."""

    server: RedisServer

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def port(self) -> int:
        return self.server.port

    def stop(self) -> None:
        """SIGTERM: Redis writes its append-only file and exits."""
        self.server.stop()

    def start(self) -> None:
        self.server.start()

    async def restart(self, downtime_s: float) -> None:
        """Stops the server, keeps it down for `downtime_s`, and starts it on the same port."""
        await asyncio.to_thread(self.stop)
        await asyncio.sleep(downtime_s)  # the outage itself is the fault under test
        await asyncio.to_thread(self.start)


@dataclass
class ProcessGroup:
    """The processes of one test; all are stopped when it ends."""

    directory: Path
    children: list[_Child] = field(default_factory=list)
    redis_servers: list[RedisServer] = field(default_factory=list)

    def _env(self, settings: Settings, extra: Mapping[str, str]) -> dict[str, str]:
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("JOBWIRE_")}
        return {
            **inherited,
            **_auth_env(),
            **settings.to_env(),
            "PYTHONUNBUFFERED": "1",
            **extra,
        }

    async def gateway(self, settings: Settings, **env: str) -> GatewayProcess:
        """A gateway process on a free port, ready to serve."""
        port = free_port()
        name = f"gateway-{len(self.children)}"
        gateway = GatewayProcess(
            "gateway",
            self._env(settings, {"JOBWIRE_HOST": "127.0.0.1", "JOBWIRE_PORT": str(port), **env}),
            self.directory / f"{name}.log",
            port=port,
        )
        self.children.append(gateway)
        await gateway.start()
        await gateway.wait_ready()
        return gateway

    async def worker(self, settings: Settings, **env: str) -> WorkerProcess:
        """A worker process running the demo jobs, alive in Redis."""
        name = f"worker-{len(self.children)}"
        worker = WorkerProcess("worker", self._env(settings, env), self.directory / f"{name}.log")
        self.children.append(worker)
        await worker.start_and_wait(settings)
        return worker

    def redis(self) -> RestartableRedis:
        """A private redis-server with an append-only file, on a free port."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        data_dir = self.directory / f"redis-{len(self.redis_servers)}"
        data_dir.mkdir()
        server = RedisServer(binary, free_port(), data_dir, appendonly=True)
        server.start()
        self.redis_servers.append(server)
        return RestartableRedis(server)

    def logs(self) -> str:
        return "\n".join(f"--- {child.log_path.name}\n{child.log()}" for child in self.children)

    async def close(self) -> None:
        await asyncio.gather(*(child.stop() for child in self.children))
        for server in self.redis_servers:
            server.stop()

    @classmethod
    @asynccontextmanager
    async def open(cls) -> AsyncIterator[ProcessGroup]:
        with tempfile.TemporaryDirectory(prefix="jobwire-processes-") as directory:
            group = cls(Path(directory))
            try:
                yield group
            except BaseException:
                print(group.logs(), file=sys.stderr)
                raise
            finally:
                await group.close()
