"""The events client on a Redis Cluster (`EventsCluster`): redis-py's asyncio `RedisCluster`,
made to behave like a single Redis's client where redis-py 5's does not.

Deliberate oddities (each relies on redis-py 5 internals; tests/cluster/ exercises them):
- A command waits for a free connection. redis-py's cluster pools do not wait (past their
  bound a command fails with MaxConnectionsError), so the client holds a semaphore of
  `commands_in_flight` permits: a command or a pipeline holds one while it runs and uses at
  most one connection per node, so no node ever has more connections busy than there are
  permits; a burst queues for up to `POOL_WAIT_S`, as on a single Redis's blocking pool.
- The cluster's transient states are "Redis unavailable for now", like a lost connection: a
  refusal (CLUSTERDOWN, MASTERDOWN, TRYAGAIN), a MOVED/ASK storm that ran out redis-py's
  redirections, a slot no node serves, a slot map that cannot be read. Such a command was not
  run, so it is tried again with the same backoff as a single Redis's reconnects
  (`shared.clients.retry_policy`), then raised as `ClusterUnavailable` — a ConnectionError,
  so every caller that rides out a single Redis restart rides out a failover the same way.
  Anything else (CROSSSLOT, a script error) is raised at once.
- Nodes redis-py replaces when it reads the slot map again are closed once idle (redis-py
  drops them while a command may still be reconnecting one of their connections).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import Any, TypeVar

from redis.asyncio import RedisCluster
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, NodesManager, PipelineCommand
from redis.backoff import ExponentialBackoff
from redis.exceptions import (
    AskError,
    ClusterError,
    ConnectionError,
    MaxConnectionsError,
    RedisClusterException,
    SlotNotCoveredError,
    TryAgainError,
)

__all__ = ["POOL_WAIT_S", "ClusterUnavailable", "EventsCluster"]

# How long a command waits for a free connection before failing (a single Redis's bounded
# pool waits as long: shared.clients).
POOL_WAIT_S = 30.0
# Refusals are tried again this many times, backing off like a connection's retries.
_REFUSAL_RETRIES = 5
# ClusterError covers CLUSTERDOWN and MASTERDOWN (ClusterDownError) and redis-py's "TTL
# exhausted" after too many MOVED, ASK or TRYAGAIN replies; AskError covers MOVED.
_REFUSALS = (ClusterError, TryAgainError, AskError, SlotNotCoveredError)

_T = TypeVar("_T")
# Set while a task holds a permit: a pipeline's redirected commands run under its permit.
_holding: ContextVar[bool] = ContextVar("jobwire_cluster_permit", default=False)


class ClusterUnavailable(ConnectionError):
    """The cluster stayed in a transient state (failing over, slots moving) through every
    retry, or its slot map could not be read."""


class EventsCluster(RedisCluster):
    def __init__(self, *args: Any, commands_in_flight: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._permits = asyncio.Semaphore(commands_in_flight)
        self._backoff = ExponentialBackoff(cap=2.0, base=0.05)
        manager = self.nodes_manager
        self.nodes_manager = _RetiringNodesManager(
            list(manager.startup_nodes.values()),
            manager.require_full_coverage,
            manager.connection_kwargs,
            address_remap=manager.address_remap,
            event_dispatcher=manager._event_dispatcher,
        )

    async def aclose(self) -> None:
        await super().aclose()
        manager = self.nodes_manager
        if isinstance(manager, _RetiringNodesManager):
            await manager.close_retired(idle_only=False)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        run = super().execute_command
        return await self.ride_out(lambda: run(*args, **kwargs))

    def pipeline(
        self, transaction: Any | None = None, shard_hint: Any | None = None
    ) -> ClusterPipeline:
        if transaction or shard_hint:
            raise RedisClusterException("a cluster pipeline has no transaction nor shard hint")
        return _Pipeline(self)  # type: ignore[abstract]  # as redis-py makes its own

    async def ride_out(self, run: Callable[[], Awaitable[_T]]) -> _T:
        """`run` holding a permit; tried again while the cluster refuses it."""
        for attempt in range(_REFUSAL_RETRIES + 1):
            try:
                async with self._permit():
                    return await run()
            except ClusterUnavailable:  # the slot map could not be read
                if attempt == _REFUSAL_RETRIES:
                    raise
            except _REFUSALS as exc:
                if attempt == _REFUSAL_RETRIES:
                    raise ClusterUnavailable(f"{type(exc).__name__}: {exc}") from exc
            await asyncio.sleep(self._backoff.compute(attempt + 1))
        raise AssertionError("unreachable")

    @contextlib.asynccontextmanager
    async def _permit(self) -> AsyncIterator[None]:
        if _holding.get():
            yield
            return
        try:
            async with asyncio.timeout(POOL_WAIT_S):
                await self._permits.acquire()
        except TimeoutError:
            raise MaxConnectionsError(
                f"no free connection to the cluster within {POOL_WAIT_S:.0f} s"
            ) from None
        token = _holding.set(True)
        try:
            yield
        finally:
            _holding.reset(token)
            self._permits.release()


class _Pipeline(ClusterPipeline):
    """A pipeline that holds one permit of its client and rides out refusals as it does: a
    refused command, even with `raise_on_error=False`, makes the whole pipeline run again (as a
    lost connection does), so its commands are run at least once."""

    async def execute(
        self, raise_on_error: bool = True, allow_redirections: bool = True
    ) -> list[Any]:
        client = self._client
        assert isinstance(client, EventsCluster)
        # redis-py empties the stack and pops each command's target_nodes as it runs them.
        commands = [(command.args, dict(command.kwargs)) for command in self._command_stack]

        async def run() -> list[Any]:
            self._command_stack = [
                PipelineCommand(position, *args, **dict(kwargs))
                for position, (args, kwargs) in enumerate(commands)
            ]
            results = await ClusterPipeline.execute(self, raise_on_error, allow_redirections)
            refused = next((r for r in results if isinstance(r, _REFUSALS)), None)
            if refused is not None:
                raise refused
            return results

        return await client.ride_out(run)


class _RetiringNodesManager(NodesManager):
    """Keeps each node that a new slot map replaced until it is idle, then closes it."""

    __slots__ = ("_retired",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._retired: dict[int, ClusterNode] = {}

    async def initialize(self) -> None:
        """Read the slot map again; ClusterUnavailable if no node answers for all of it."""
        try:
            await super().initialize()
        except RedisClusterException as exc:
            if isinstance(exc.__cause__, RedisClusterException):  # not a cluster at all
                raise
            raise ClusterUnavailable(f"the cluster's slot map cannot be read: {exc}") from exc
        await self.close_retired(idle_only=True)

    def set_nodes(
        self, old: dict[str, ClusterNode], new: dict[str, ClusterNode], remove_old: bool = False
    ) -> None:
        for name, node in old.items():
            if (name in new or remove_old) and new.get(name) is not node:
                self._retired[id(node)] = node
        super().set_nodes(old, new, remove_old)
        for node in self.nodes_cache.values():  # in use again
            self._retired.pop(id(node), None)

    async def close_retired(self, *, idle_only: bool) -> None:
        """Close the retired nodes (those no command uses, if `idle_only`); the busy ones are
        kept for the next time."""
        closing = [node for node in self._retired.values() if not idle_only or _idle(node)]
        for node in closing:
            if idle_only:
                del self._retired[id(node)]
        await asyncio.gather(*(node.disconnect() for node in closing), return_exceptions=True)


def _idle(node: ClusterNode) -> bool:
    """Every connection of `node` is back in its free list: no command is using one, nor
    connecting one (a connection lost to a cancelled command never comes back, and keeps its
    node listed, closed, until the client closes)."""
    return len(node._free) == len(node._connections)
