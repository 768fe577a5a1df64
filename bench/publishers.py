"""The bench's publishing process (`python -m bench.publishers`).

Events go through the product's real publish path: `shared.publish.Publisher`, the one atomic
script every job uses (Jobwire and the naive gateway read what it writes). For a gateway as
committed at a ref, this process runs with that ref's `shared` package (see
`Target.publisher_root`): its script publishes what that gateway listens for. Nchan gets the same
event bytes over its HTTP publisher endpoint, on keep-alive connections.

Each event's data is `{"seq": <n>, "t": <send time, µs>}`: `seq` counts from 1 per job, `t` is
taken just before the publish call, so measured latency includes the publish itself.

Jobs are split over lanes (one connection each); a lane publishes its jobs in turn, one call at
a time, so events of one job are stored in the order of their numbers. Lanes keep an absolute
schedule: a lane that falls behind publishes back to back, and the achieved rate is reported.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import uvloop
from redis.asyncio import Redis, RedisCluster

from bench.channel import Handler, raise_open_file_limit, serve
from shared.events import Event, EventType, encode_event, make_event
from shared.publish import Publisher
from shared.settings import Settings

__all__ = ["BENCH_CLIENT_NAME", "NchanPublisher", "RedisPublisher", "main"]

# Redis connections the bench itself holds carry this name, so they are not counted as the
# target's.
BENCH_CLIENT_NAME = "jobwire-bench"
# Publishes in flight at once, at most: a lane waits for each round trip, so lanes x 1 / round
# trip bounds the publish rate. On a busy 2-core machine a round trip takes 10 ms or more, and
# 32 lanes stopped the 1,000-job shape near 3,000 publishes/s with the publisher at 20 % CPU:
# the bench's bound, not the target's.
MAX_LANES = 128

PublishOne = Callable[[int, str, int], Awaitable[bool]]


def _event(job: str, seq: int) -> bytes:
    return encode_event(_data_event(job, seq))


def _data_event(job: str, seq: int) -> Event:
    return make_event(EventType.DATA, job, 1, {"seq": seq, "t": time.time_ns() // 1000})


class RedisPublisher:
    """Publishes through `shared.publish.Publisher` into the target's Redis, or into a Redis
    Cluster (`redis+cluster://`): then with the client workers use, each job's publish going
    to the master of its keys' slot."""

    def __init__(self, redis_url: str, key_prefix: str, queue_redis_url: str = "") -> None:
        env = {"JOBWIRE_REDIS_URL": redis_url, "JOBWIRE_KEY_PREFIX": key_prefix}
        if queue_redis_url:  # a cluster's settings name the queue beside it
            env["JOBWIRE_QUEUE_REDIS_URL"] = queue_redis_url
        settings = Settings.from_env(env)
        self._redis: Redis | RedisCluster
        if queue_redis_url:
            # Imported here: a tree from before clusters (jobwire@<ref>) publishes to one Redis.
            from shared.clients import create_events_redis

            self._redis = create_events_redis(
                settings.events_redis_url, max_connections=MAX_LANES, name=BENCH_CLIENT_NAME
            )
        else:
            self._redis = Redis.from_url(
                redis_url, client_name=BENCH_CLIENT_NAME, max_connections=MAX_LANES
            )
        self._publisher = Publisher(self._redis, settings)

    async def create(self, jobs: list[str]) -> None:
        """Each job queued and started, as a worker would leave it."""
        for job in jobs:
            queued = make_event(EventType.QUEUED, job, 0, {"name": "bench", "args": {}})
            await self._publisher.publish(queued, create=True)
            await self._publisher.publish(make_event(EventType.STARTED, job, 1, {"worker": "b"}))

    async def publish(self, lane: int, job: str, seq: int) -> bool:
        result = await self._publisher.publish(_data_event(job, seq))
        return result.accepted

    async def close(self) -> None:
        await self._redis.aclose()


class NchanPublisher:
    """POSTs each event to Nchan's publisher location, one keep-alive connection per lane."""

    def __init__(self, url_template: str) -> None:
        parts = urlsplit(url_template.format(job="x"))
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        self._path = urlsplit(url_template).path
        self._lanes: dict[int, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}

    async def create(self, jobs: list[str]) -> None:
        """Nchan makes a channel on its first message."""

    async def publish(self, lane: int, job: str, seq: int) -> bool:
        try:
            return await self._post(lane, job, seq)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            connection = self._lanes.pop(lane, None)
            if connection is not None:
                connection[1].close()
            return False

    async def _post(self, lane: int, job: str, seq: int) -> bool:
        connection = self._lanes.get(lane)
        if connection is None:
            connection = await asyncio.open_connection(self._host, self._port)
            self._lanes[lane] = connection
        reader, writer = connection
        body = _event(job, seq)
        head = b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n" % (
            self._path.format(job=job).encode(),
            self._host.encode(),
            len(body),
        )
        writer.write(head + body)
        reply = await reader.readuntil(b"\r\n\r\n")
        status = int(reply.split(b" ", 2)[1])
        length = 0
        for line in reply.lower().split(b"\r\n"):
            if line.startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await reader.readexactly(length)
        return status in (201, 202)

    async def close(self) -> None:
        for _, writer in self._lanes.values():
            writer.close()
        self._lanes.clear()


class Schedule:
    """Per-job sequence numbers and the lanes that publish them."""

    def __init__(self, target: RedisPublisher | NchanPublisher, jobs: list[str]) -> None:
        self.target = target
        self.jobs = jobs
        self.seqs = [0] * len(jobs)
        lanes = min(MAX_LANES, len(jobs))
        self.lanes = [list(range(lane, len(jobs), lanes)) for lane in range(lanes)]
        self.errors = 0

    async def _one(self, lane: int, job: int) -> None:
        seq = self.seqs[job] + 1
        if await self.target.publish(lane, self.jobs[job], seq):
            self.seqs[job] = seq
        else:
            self.errors += 1

    async def paced(self, rate: float, start: float, end: float) -> dict[str, Any]:
        """Publish `rate` events/s in total from wall time `start` until `end`."""
        lane_count = len(self.lanes)
        interval = lane_count / rate
        lags = await asyncio.gather(
            *(
                self._paced_lane(lane, start + lane / rate, interval, end)
                for lane in range(lane_count)
            )
        )
        published = sum(count for count, _ in lags)
        seconds = max(end - start, 1e-9)
        return {
            "published": published,
            "achieved_rate": published / seconds,
            "max_lag_s": max(lag for _, lag in lags),
            "errors": self.errors,
            "final": self.seqs,
        }

    async def _paced_lane(
        self, lane: int, first: float, interval: float, end: float
    ) -> tuple[int, float]:
        jobs = self.lanes[lane]
        due = first
        count = 0
        worst_lag = 0.0
        # A lane behind its schedule stops at `end` all the same: what it did not publish by
        # then lowers the achieved rate instead of stretching the window.
        while due < end and time.time() < end:
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                worst_lag = max(worst_lag, -delay)
            await self._one(lane, jobs[count % len(jobs)])
            count += 1
            due = first + count * interval
        return count, worst_lag

    async def burst(self, per_job: int) -> dict[str, Any]:
        """`per_job` events for every job, as fast as the lanes go."""
        started = time.time()

        async def lane_burst(lane: int) -> None:
            for _ in range(per_job):
                for job in self.lanes[lane]:
                    await self._one(lane, job)

        await asyncio.gather(*(lane_burst(lane) for lane in range(len(self.lanes))))
        return {"seconds": time.time() - started, "errors": self.errors, "final": self.seqs}


def _handlers(state: dict[str, Schedule]) -> dict[str, Handler]:
    async def setup(args: dict[str, Any]) -> dict[str, Any]:
        target: RedisPublisher | NchanPublisher
        if args["kind"] == "nchan":
            target = NchanPublisher(args["publish_url"])
        else:
            target = RedisPublisher(
                args["redis_url"], args["key_prefix"], args.get("queue_redis_url", "")
            )
        await target.create(args["jobs"])
        state["schedule"] = Schedule(target, args["jobs"])
        return {"lanes": len(state["schedule"].lanes)}

    async def paced(args: dict[str, Any]) -> dict[str, Any]:
        return await state["schedule"].paced(args["rate"], args["start"], args["end"])

    async def burst(args: dict[str, Any]) -> dict[str, Any]:
        return await state["schedule"].burst(args["per_job"])

    async def close(args: dict[str, Any]) -> dict[str, Any]:
        schedule = state.pop("schedule", None)
        if schedule is not None:
            await schedule.target.close()
        return {"ok": True}

    return {"setup": setup, "paced": paced, "burst": burst, "close": close}


def main() -> None:
    raise_open_file_limit()
    uvloop.run(serve(_handlers({})))


if __name__ == "__main__":
    main()
