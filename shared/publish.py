"""The one way an event enters Redis: an atomic server-side script.

In one step it appends the event to the job's stream (trimmed with MAXLEN ~), updates the state
hash, announces `<id> <event json>` on the job's live channel and, for a terminal event, sets
both keys to expire after the retention period. The live channel is a shard channel
(SPUBLISH, Redis 7): on a Redis Cluster only the job's own shard carries the announcement, as
its keys, and on one Redis it is an ordinary channel. Nothing is appended after a terminal event, so
a stream always ends at its first terminal event, whoever raced to write it. Creating a job
also writes its owner and a new incarnation into the state hash, in the same step.

Revoking a job's watch tokens is a second script: it counts one more token generation in the
state hash and announces `revoked <generation>` on the live channel, so every gateway ends the
streams those tokens opened.
"""

from __future__ import annotations

import logging
import string
from collections.abc import Iterable
from string import Template
from typing import Any, NamedTuple, cast

from redis.asyncio import RedisCluster
from redis.asyncio.client import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from shared.clients import EventsRedis
from shared.events import Event, EventType, encode_event
from shared.keys import Keys
from shared.settings import Settings
from shared.state import (
    INCARNATION,
    OWNER,
    TERMINAL_STATUSES,
    TOKEN_GENERATION,
    JobStatus,
    new_incarnation,
    state_changes,
)
from shared.streamid import StreamId

__all__ = ["PUBLISH_SCRIPT", "REVOKED_NOTICE", "REVOKE_SCRIPT", "PublishResult", "Publisher"]

logger = logging.getLogger("jobwire.publish")

# A job that never finishes (its worker and queue lost) must not stay in Redis forever; every
# event refreshes this longer lifetime, and a terminal event shortens it to the retention.
_ACTIVE_TTL_FACTOR = 7
_LUA_PLAIN = frozenset((string.ascii_letters + string.digits + "_").encode())


def _lua_string(text: str) -> str:
    """`text` as a Lua string literal: every byte but a letter, digit or `_` is written as a
    three-digit decimal escape, so no value can end the literal or the line early."""
    body = "".join(chr(byte) if byte in _LUA_PLAIN else f"\\{byte:03d}" for byte in text.encode())
    return f"'{body}'"


def _is_any_of(variable: str, values: Iterable[str]) -> str:
    return " or ".join(f"{variable} == {_lua_string(value)}" for value in values)


# The statuses that end a job are Python's, written into the script when it is built: it stays
# one atomic step with no extra argument. JobStatus's order, not the set's, keeps the script's
# text (and so its SHA) the same in every process.
_ENDED = _is_any_of("status", [status for status in JobStatus if status in TERMINAL_STATUSES])

PUBLISH_SCRIPT = Template("""
local status = redis.call('HGET', KEYS[2], 'status')
if ARGV[1] == 'create' then
  if status then return {0, status} end
elseif $ended then
  return {0, status}
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'e', ARGV[3])
redis.call('HSET', KEYS[2], 'last_event_id', id, 'last_event_type', ARGV[6],
           'updated_at', ARGV[7], unpack(ARGV, 8))
redis.call('SPUBLISH', ARGV[5], id .. ' ' .. ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return {1, id}
""").substitute(ended=_ENDED)

# What the live channel carries when a job's watch tokens are revoked, in place of a stream id.
REVOKED_NOTICE = b"revoked"

# KEYS: the state hash. ARGV: the live channel, the owner who asks ('' when auth is off).
# Nothing for a job that does not exist (an expiring one is not brought back) or is another's.
REVOKE_SCRIPT = Template("""
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
if ARGV[2] ~= '' and redis.call('HGET', KEYS[1], $owner) ~= ARGV[2] then return false end
local generation = redis.call('HINCRBY', KEYS[1], $generation, 1)
redis.call('SPUBLISH', ARGV[1], $notice .. ' ' .. generation)
return generation
""").substitute(
    owner=_lua_string(OWNER),
    generation=_lua_string(TOKEN_GENERATION),
    notice=_lua_string(REVOKED_NOTICE.decode()),
)


class PublishResult(NamedTuple):
    """`id` of the stored event, or None and the `status` that refused it; `incarnation` of
    the job a create made."""

    id: StreamId | None
    status: str | None
    incarnation: str | None = None

    @property
    def accepted(self) -> bool:
        return self.id is not None


class Publisher:
    def __init__(self, redis: EventsRedis, settings: Settings) -> None:
        self._redis = redis
        self._keys = Keys(settings.key_prefix)
        self._maxlen = settings.stream_maxlen
        self._retention_s = settings.retention_s
        self._replicas = settings.publish_replicas
        self._replicas_timeout_ms = settings.publish_replicas_timeout_ms
        # redis-py types a script's client as `Redis`; it only calls EVALSHA and SCRIPT LOAD,
        # which a RedisCluster routes by the script's first key.
        client = cast(Redis, redis)
        self._script = AsyncScript(client, PUBLISH_SCRIPT)
        self._revoke = AsyncScript(client, REVOKE_SCRIPT)

    async def publish(
        self, event: Event, *, create: bool = False, owner: str = ""
    ) -> PublishResult:
        """Append `event`; with `create`, only if the job does not exist yet, and then as a
        new incarnation of the job, owned by `owner` (the API key's id; "": none).

        Refused (id None) when the job already ended, or with `create` when it exists.
        """
        job_id = event["job"]
        terminal = EventType(event["type"]).is_terminal
        ttl = self._retention_s if terminal else self._retention_s * _ACTIVE_TTL_FACTOR
        args: list[str | bytes | int] = [
            "create" if create else "append",
            self._maxlen,
            encode_event(event),
            ttl,
            self._keys.live(job_id),
            event["type"],
            event["ts"],
        ]
        changes = state_changes(event)
        incarnation = None
        if create:
            incarnation = new_incarnation()
            changes[INCARNATION] = incarnation
            if owner:
                changes[OWNER] = owner
        for field, value in changes.items():
            args += [field, value]
        keys = [self._keys.events(job_id), self._keys.state(job_id)]
        if self._replicas:
            accepted, value = await self._run_replicated(keys, args)
        else:
            accepted, value = await self._script(keys=keys, args=args)
        if accepted:
            return PublishResult(StreamId.parse(value), None, incarnation)
        return PublishResult(None, value.decode() if isinstance(value, bytes) else str(value))

    async def _run_replicated(self, keys: list[str], args: list[str | bytes | int]) -> Any:
        """The script, then WAIT for `publish_replicas` replicas, in one round trip on one
        connection (WAIT counts the writes of its own connection): on a cluster, the master of
        the job's slot. A shortfall past the timeout is logged; the event stays written."""
        wait: tuple[str | int, ...] = ("WAIT", self._replicas, self._replicas_timeout_ms)
        redis = self._redis
        target: dict[str, Any] = {}
        if isinstance(redis, RedisCluster):
            await redis.initialize()  # the slot map, read once (and again after a MOVED)
            target["target_nodes"] = redis.get_node_from_key(keys[0])
        for _ in range(2):
            async with redis.pipeline(transaction=False) as pipe:
                pipe.execute_command("EVALSHA", self._script.sha, len(keys), *keys, *args)
                pipe.execute_command(*wait, **target)
                reply, acked = await pipe.execute(raise_on_error=False)
            if not isinstance(reply, NoScriptError):
                break
            self._script.sha = await redis.script_load(PUBLISH_SCRIPT)  # a new master's cache
        if isinstance(reply, Exception):
            raise reply
        if isinstance(acked, Exception) or int(acked) < self._replicas:
            logger.warning(
                "%s: %s of %d replicas acknowledged within %d ms; the event stays written",
                keys[0],
                acked,
                self._replicas,
                self._replicas_timeout_ms,
            )
        return reply

    async def revoke_tokens(self, job_id: str, owner: str = "") -> int | None:
        """Refuse every watch token issued for the job so far: its new token generation, or
        None when there is no such job (of `owner`'s, unless `owner` is "")."""
        generation = await self._revoke(
            keys=[self._keys.state(job_id)], args=[self._keys.live(job_id), owner]
        )
        return None if generation is None else int(generation)
