"""Slowloris against a gateway: many connections whose request head never ends, while other
clients are served.

Starts a target (`bench.targets`: a gateway and its private redis-server on 127.0.0.1), opens
`--connections` connections that each send a request line and then one header byte every
`--interval` seconds, and meanwhile measures what a normal client gets: `GET /healthz` on a
fresh connection every `--probe-interval` s, and one event stream fed an event a second. Every
second it records how many slow connections the target still holds, its open files and its
memory. It stops by itself after `--duration` s, and prints one JSON object.

    .venv/bin/python -m bench.slowloris                            # this tree
    .venv/bin/python -m bench.slowloris --target jobwire@<ref>     # a commit, for before/after
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import resource
import statistics
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from bench.procstat import sample_tree
from bench.targets import KEY_PREFIX, Target, start_target
from shared.clients import create_redis
from shared.events import EventType, make_event
from shared.publish import Publisher
from shared.settings import Settings

__all__ = ["main"]

HOST = "127.0.0.1"
# Opened this many at a time, below the listening socket's backlog of 2,048.
_OPEN_BATCH = 250
_PROBE_TIMEOUT_S = 5.0
_HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"


@dataclass
class SlowClient:
    """One slowloris connection: when it opened, and when and how the target ended it."""

    opened_at: float
    opened: bool = False
    closed_at: float | None = None
    answer: bytes = b""  # what the target sent before closing (a 408, or nothing)


@dataclass
class Probes:
    latencies_ms: list[float] = field(default_factory=list)
    failures: int = 0
    stream_events: int = 0
    stream_cut: bool = False


@dataclass
class Sample:
    t_s: float
    slow_held: int
    open_files: int
    rss_mib: float


async def slow_client(port: int, interval_s: float, until: float, client: SlowClient) -> None:
    """Sends the request line, then one header byte per `interval_s`, until `until` or until
    the target closes the connection."""
    try:
        reader, writer = await asyncio.open_connection(HOST, port)
    except OSError:
        client.closed_at = time.monotonic()
        return
    client.opened, client.opened_at = True, time.monotonic()
    reading = asyncio.create_task(reader.read(4096))
    try:
        writer.write(_HEAD)
        # Each connection starts its byte clock at a random phase, so the writes are spread.
        delay = random.uniform(0, interval_s)
        while time.monotonic() < until:
            done, _ = await asyncio.wait({reading}, timeout=min(delay, until - time.monotonic()))
            if done:
                client.answer = reading.result()
                client.closed_at = time.monotonic()
                return
            writer.write(b"X")
            delay = interval_s
    except ConnectionError:
        client.closed_at = time.monotonic()
    finally:
        reading.cancel()
        writer.transport.abort()


async def probe_requests(port: int, every_s: float, until: float, probes: Probes) -> None:
    """`GET /healthz` on a fresh connection every `every_s`: how long a new client waits."""
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    while time.monotonic() < until:
        started = time.monotonic()
        try:
            async with asyncio.timeout(_PROBE_TIMEOUT_S):
                reader, writer = await asyncio.open_connection(HOST, port)
                writer.write(request)
                answer = await reader.read()
                writer.close()
            if not answer.startswith(b"HTTP/1.1 200"):
                raise ConnectionError(answer[:40])
            probes.latencies_ms.append((time.monotonic() - started) * 1000)
        except (OSError, TimeoutError):
            probes.failures += 1
        await asyncio.sleep(max(every_s - (time.monotonic() - started), 0))


async def held_stream(target: Target, until: float, probes: Probes) -> None:
    """One event stream, fed an event a second: it must last the whole run."""
    settings = Settings.from_env(
        {"JOBWIRE_REDIS_URL": target.redis.url, "JOBWIRE_KEY_PREFIX": KEY_PREFIX}
    )
    redis = create_redis(settings.events_redis_url)
    publisher = Publisher(redis, settings)
    job_id = f"slowloris-{uuid.uuid4().hex[:8]}"
    queued = make_event(EventType.QUEUED, job_id, 0, {"name": "bench", "args": {}})
    await publisher.publish(queued, create=True)
    reader, writer = await asyncio.open_connection(HOST, target.port)
    writer.write(
        f"GET /jobs/{job_id}/events HTTP/1.1\r\nHost: {HOST}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    try:
        while time.monotonic() < until:
            await publisher.publish(make_event(EventType.DATA, job_id, 1, {"t": time.time()}))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    while chunk := await reader.read(65536):
                        probes.stream_events += chunk.count(b"event: data")
                    probes.stream_cut = time.monotonic() < until
                    return
    finally:
        writer.transport.abort()
        await redis.aclose()


async def sample_every_second(
    target: Target, clients: list[SlowClient], started: float, until: float
) -> list[Sample]:
    samples: list[Sample] = []
    while time.monotonic() < until:
        tree = sample_tree(target.pid)
        held = sum(1 for client in clients if client.opened and client.closed_at is None)
        samples.append(
            Sample(
                round(time.monotonic() - started, 1),
                held,
                tree.open_files,
                round(tree.rss_bytes / 2**20, 1),
            )
        )
        await asyncio.sleep(1.0)
    return samples


async def run(target: Target, args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    until = started + args.duration
    cpu_before = sample_tree(target.pid).cpu_s
    probes = Probes()
    clients = [SlowClient(started) for _ in range(args.connections)]
    sampler = asyncio.create_task(sample_every_second(target, clients, started, until))
    background = [
        asyncio.create_task(probe_requests(target.port, args.probe_interval, until, probes)),
        asyncio.create_task(held_stream(target, until, probes)),
    ]
    attackers: list[asyncio.Task[None]] = []
    for batch in _batches(clients, _OPEN_BATCH):
        attackers += [
            asyncio.create_task(slow_client(target.port, args.interval, until, client))
            for client in batch
        ]
        await asyncio.sleep(0.1)
    await asyncio.gather(*attackers, *background)
    samples = await sampler
    cpu_s = sample_tree(target.pid).cpu_s - cpu_before
    return _report(args, clients, probes, samples, cpu_s, time.monotonic() - started)


def _report(
    args: argparse.Namespace,
    clients: list[SlowClient],
    probes: Probes,
    samples: list[Sample],
    cpu_s: float,
    elapsed_s: float,
) -> dict[str, Any]:
    closed = [client for client in clients if client.opened and client.closed_at is not None]
    lifetimes = sorted(client.closed_at - client.opened_at for client in closed)  # type: ignore[operator]
    latencies = sorted(probes.latencies_ms)
    return {
        "target": args.target,
        "gateway_env": args.gateway_env,
        "connections": args.connections,
        "not_opened": sum(1 for client in clients if not client.opened),
        "byte_interval_s": args.interval,
        "duration_s": args.duration,
        "slow_closed_by_target": len(closed),
        "slow_answered_408": sum(1 for client in closed if b" 408 " in client.answer[:16]),
        "slow_lifetime_s": _spread(lifetimes),
        "slow_held_by_second": [sample.slow_held for sample in samples],
        "target_open_files_max": max(sample.open_files for sample in samples),
        "target_open_files_last": samples[-1].open_files,
        "target_rss_mib_max": max(sample.rss_mib for sample in samples),
        "target_cpu_percent": round(cpu_s / elapsed_s * 100, 1),
        "probe_requests": len(latencies),
        "probe_failures": probes.failures,
        "probe_ms": _spread(latencies),
        "stream_events": probes.stream_events,
        "stream_cut": probes.stream_cut,
    }


def _spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "p50": round(statistics.median(values), 2),
        "p99": round(values[min(len(values) - 1, int(len(values) * 0.99))], 2),
        "max": round(values[-1], 2),
    }


def _batches(items: list[SlowClient], size: int) -> Iterator[list[SlowClient]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="jobwire", help="a bench.targets name")
    parser.add_argument("--connections", type=int, default=2_000)
    parser.add_argument("--interval", type=float, default=10.0, help="s between header bytes")
    parser.add_argument("--duration", type=float, default=60.0, help="s, then it stops")
    parser.add_argument("--probe-interval", type=float, default=0.1)
    parser.add_argument("--gateway-env", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args()
    if args.duration > 600 or args.connections > 5_000:
        parser.error("at most 600 s and 5,000 connections")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    env = dict(item.split("=", 1) for item in args.gateway_env)
    with start_target(args.target, env) as target:
        report = asyncio.run(run(target, args))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
