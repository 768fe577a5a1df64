"""The load generator: N subscribers (SSE or WebSocket) over C jobs, events at a given rate,
measured.

Each subscriber watches one job, or with `jobs_per_stream` > 1 several on one multi-job stream
(`GET /events?job=a&job=b&job=c`, Jobwire only): the jobs are cut into groups of that size,
and subscriber i watches group i mod groups.

The controller (this module) drives child processes over pipes (bench/channel.py):
- subscriber processes (bench/subscribers.py), N split evenly among them — one process per
  core's worth of parsing, so the load generator is not what saturates;
- one publisher process (bench/publishers.py) writing through the real publish path.

It reports, for a measurement window: subscribers held, delivered events/s, delivery latency
p50 / p99 / max from the send timestamp in each event, gaps / duplicates / missing events
(each subscriber checks its own sequence), CPU and RSS of the target's process tree and of
Redis, Redis connections held by the target, and the load generator's own CPU.

A target may be several gateway processes behind a balancer, its events on several Redis
nodes (a cluster): their CPU is added up, the balancer's reported apart. A publish burst
publishes K events per job as fast as the publisher goes, every subscriber receiving them: the
publishes/s the target's Redis takes, and the Redis CPU per publish.

Resume storm: every subscriber drops (RST), K events are published per job, every subscriber
reconnects with Last-Event-ID (a composite cursor on a multi-job stream); the figure is the
time until the last one has caught up with every job it watches.

Standalone, against a server already running:

    python -m bench.loadgen --url 'http://127.0.0.1:8000/jobs/{job}/events' \\
        --redis-url redis://127.0.0.1:6379/0 --subscribers 1000 --jobs 10 --rate 5000
"""

from __future__ import annotations

import argparse
import asyncio
import math
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import orjson
import uvloop
from redis.asyncio import Redis

from bench.channel import Child
from bench.procstat import TreeSample, load_average, machine_busy_s, sample_tree, sample_trees
from bench.publishers import BENCH_CLIENT_NAME
from bench.stats import Latency, add_counts, decode_samples, merge_failures
from bench.subscribers import WIRES
from bench.targets import RedisServer, Target

__all__ = [
    "MAX_P99_MS",
    "BurstResult",
    "ConnectResult",
    "Load",
    "LoadGenerator",
    "StepResult",
    "StormResult",
    "main",
]

MAX_P99_MS = 100.0
# A step whose publisher reached less than this share of the asked rate measured the
# publisher, not the target.
MIN_PUBLISH_SHARE = 0.97


@dataclass(frozen=True, slots=True)
class Load:
    subscribers: int
    jobs: int
    processes: int = 2
    # Connections awaiting their response headers at once, over all processes: below every
    # target's accept backlog (2,048), so a connection storm never meets dropped SYNs.
    window: int = 1_000
    jobs_per_stream: int = 1  # more than one: multi-job streams (`GET /events?job=…`)

    def streams(self, jobs: list[str], target: Target) -> tuple[list[str], list[list[int]]]:
        """Each stream's path on `target` and the indices in `jobs` of the jobs it watches."""
        size = self.jobs_per_stream
        if len(jobs) % size:
            raise ValueError(f"{len(jobs)} jobs do not split into streams of {size}")
        groups = [list(range(start, start + size)) for start in range(0, len(jobs), size)]
        if size == 1:
            return [target.events_path.format(job=job) for job in jobs], groups
        if target.multi_events_path is None:
            raise RuntimeError(f"{target.name} has no multi-job stream")
        path = target.multi_events_path
        if "{jobs}" in path:  # a server of its own shape: the jobs joined by commas
            return [path.format(jobs=",".join(jobs[i] for i in group)) for group in groups], groups
        query = [urlencode([("job", jobs[index]) for index in group]) for group in groups]
        return [f"{path}?{part}" for part in query], groups


@dataclass
class ConnectResult:
    asked: int
    held: int
    seconds: float
    failures: dict[str, int]
    rss_idle_mib: float
    rss_held_mib: float
    kib_per_connection: float
    open_files: int
    redis_clients: int
    load_average: tuple[float, float, float]


@dataclass
class StepResult:
    asked_rate: float  # delivered events/s asked for
    publish_rate: float  # events/s published, asked
    achieved_publish_rate: float
    held: int
    delivered_per_s: float
    latency_samples: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    gaps: int
    duplicates: int
    missing: int
    closed: int
    resets: int
    publish_errors: int
    target_cpu_pct: float
    target_us_per_event: float
    target_rss_mib: float
    redis_cpu_pct: float
    redis_clients: int
    loadgen_cpu_pct: float
    loadgen_busiest_pct: float
    publisher_cpu_pct: float
    # CPU that other processes on the machine used meanwhile (% of one core): high values
    # make every figure of the step noisy.
    other_cpu_pct: float
    load_average: tuple[float, float, float]
    failure: str = ""
    # The balancer in front of the gateways (0 without one), and Redis's CPU (every node's)
    # per event published in the window.
    balancer_cpu_pct: float = 0.0
    balancer_us_per_event: float = 0.0
    redis_us_per_publish: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.failure


@dataclass
class BurstResult:
    """K events per job published as fast as the publisher goes, subscribers receiving."""

    per_job: int
    published: int
    seconds: float
    publishes_per_s: float
    publish_errors: int
    publisher_cpu_pct: float
    redis_cpu_pct: float
    redis_us_per_publish: float
    target_cpu_pct: float
    balancer_cpu_pct: float
    caught_up: bool
    gaps: int
    duplicates: int
    other_cpu_pct: float
    load_average: tuple[float, float, float]


@dataclass
class StormResult:
    behind: int
    held: int
    seconds: float
    connect_seconds: float
    caught_up: bool
    not_caught_up: int
    missing: int
    gaps: int
    duplicates: int
    resets: int
    failures: dict[str, int]
    drop_seen_seconds: float
    target_cpu_s: float
    loadgen_cpu_s: float
    other_cpu_pct: float
    load_average: tuple[float, float, float]
    balancer_cpu_s: float = 0.0


@dataclass
class _Totals:
    """Cumulative counters of the subscriber processes, to report per-step deltas."""

    gaps: int = 0
    duplicates: int = 0
    closed: int = 0
    resets: int = 0

    def delta(self, replies: list[dict[str, Any]]) -> _Totals:
        now = _Totals(
            add_counts(replies, "gaps"),
            add_counts(replies, "duplicates"),
            add_counts(replies, "closed_unexpectedly"),
            add_counts(replies, "resets"),
        )
        change = _Totals(
            now.gaps - self.gaps,
            now.duplicates - self.duplicates,
            now.closed - self.closed,
            now.resets - self.resets,
        )
        self.gaps, self.duplicates, self.closed, self.resets = (
            now.gaps,
            now.duplicates,
            now.closed,
            now.resets,
        )
        return change


@dataclass
class _Samples:
    wall: float
    machine_busy_s: float
    target: TreeSample
    redis: TreeSample
    loadgen: list[TreeSample]
    publisher: TreeSample
    balancer: TreeSample

    def ours_s(self) -> float:
        parts = [self.target, self.redis, self.publisher, self.balancer, *self.loadgen]
        return sum(part.cpu_s for part in parts)


def _other_cpu_pct(before: _Samples, after: _Samples) -> float:
    seconds = max(after.wall - before.wall, 1e-9)
    machine = after.machine_busy_s - before.machine_busy_s
    ours = after.ours_s() - before.ours_s()
    return max(0.0, 100 * (machine - ours) / seconds)


class LoadGenerator:
    """Subscriber and publisher processes bound to one target and one load shape."""

    def __init__(self, target: Target, load: Load, tag: str | None = None) -> None:
        self.target = target
        self.load = load
        tag = tag or f"b{secrets.token_hex(3)}"
        self.jobs = [f"{tag}-{index:04d}" for index in range(load.jobs)]
        self._subscribers: list[Child] = []
        self._publisher: Child | None = None
        self._redis = [
            Redis.from_url(node.url, client_name=BENCH_CLIENT_NAME) for node in target.redis_servers
        ]
        self._totals = _Totals()
        self._idle_files = 0
        self._final = [0] * load.jobs  # last sequence number published per job
        self.held = 0

    async def __aenter__(self) -> LoadGenerator:
        try:
            await self._start()
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def _start(self) -> None:
        processes = min(self.load.processes, self.load.subscribers)
        paths, stream_jobs = self.load.streams(self.jobs, self.target)
        self._publisher = await Child.start(
            "bench.publishers", "publisher", cwd=self.target.publisher_root
        )
        for index in range(processes):
            self._subscribers.append(await Child.start("bench.subscribers", f"subscribers-{index}"))
        await asyncio.gather(
            self._publisher.call("setup", jobs=self.jobs, **self.target.publisher),
            *(
                child.call(
                    "setup",
                    host="127.0.0.1",
                    port=self.target.port,
                    paths=paths,
                    stream_jobs=stream_jobs,
                    jobs=self.jobs,
                    first=index,
                    total=self.load.subscribers,
                    step=processes,
                    wire=self.target.wire,
                )
                for index, child in enumerate(self._subscribers)
            ),
        )

    async def __aexit__(self, *exc_info: object) -> None:
        children = [*self._subscribers, *([self._publisher] if self._publisher else [])]
        # Subscribers close their connections first, so the target sees clients leave
        # rather than a dead process; a child cut off mid-command is simply stopped.
        idle = [child for child in self._subscribers if not child.busy]
        await asyncio.gather(*(c.call("drop", timeout=30) for c in idle), return_exceptions=True)
        if self._publisher is not None and not self._publisher.busy:
            await asyncio.gather(self._publisher.call("close"), return_exceptions=True)
        await asyncio.gather(*(child.stop() for child in children))
        await asyncio.gather(*(node.aclose() for node in self._redis))

    @property
    def _publisher_child(self) -> Child:
        assert self._publisher is not None, "use LoadGenerator in `async with`"
        return self._publisher

    async def _all(self, name: str, **args: Any) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(c.call(name, **args) for c in self._subscribers)))

    def _sample(self) -> _Samples:
        return _Samples(
            wall=time.time(),
            machine_busy_s=machine_busy_s(),
            target=sample_trees(self.target.pids),
            redis=sample_trees(tuple(node.pid for node in self.target.redis_servers)),
            loadgen=[sample_tree(child.pid) for child in self._subscribers],
            publisher=sample_tree(self._publisher_child.pid),
            balancer=sample_trees(self.target.balancer_pids),
        )

    async def redis_clients(self) -> int:
        """Connections to the target's Redis (every node) that are not the bench's own."""
        nodes: list[list[dict[str, Any]]] = await asyncio.gather(
            *(node.client_list() for node in self._redis)
        )
        return sum(
            1 for clients in nodes for client in clients if client.get("name") != BENCH_CLIENT_NAME
        )

    async def connect(self) -> ConnectResult:
        idle = sample_trees(self.target.pids)
        self._idle_files = idle.open_files
        window = max(1, self.load.window // len(self._subscribers))
        replies = await self._all("connect", window=window)
        self._totals.delta(replies)
        held_sample = sample_trees(self.target.pids)
        self.held = add_counts(replies, "held")
        grown = held_sample.rss_bytes - idle.rss_bytes
        return ConnectResult(
            asked=self.load.subscribers,
            held=self.held,
            seconds=max(float(reply["seconds"]) for reply in replies),
            failures=merge_failures(replies),
            rss_idle_mib=idle.rss_bytes / 2**20,
            rss_held_mib=held_sample.rss_bytes / 2**20,
            kib_per_connection=grown / 1024 / self.held if self.held else 0.0,
            open_files=held_sample.open_files,
            redis_clients=await self.redis_clients(),
            load_average=load_average(),
        )

    async def step(
        self, delivered_rate: float, warmup: float, measure: float, drain_timeout: float
    ) -> StepResult:
        """Publish for `warmup` + `measure` s at the rate that delivers `delivered_rate`
        events/s to the subscribers held; measure the second part; drain; judge."""
        start = time.time() + 0.3
        first, final = start + warmup, start + warmup + measure
        windows = await self._all("window", first_us=int(first * 1e6), final_us=int(final * 1e6))
        self.held = add_counts(windows, "held")
        if not self.held:
            raise RuntimeError("no subscriber is held: nothing to measure")
        publish_rate = delivered_rate * len(self.jobs) / self.held
        publishing = asyncio.create_task(
            self._publisher_child.call("paced", rate=publish_rate, start=start, end=final)
        )
        try:
            await _until(first)
            before = self._sample()
            await _until(final)
            after = self._sample()
            published = await publishing
        finally:
            publishing.cancel()
        self._final = published["final"]
        drains = await self._all("drain", targets=self._final, timeout=drain_timeout)
        changes = self._totals.delta(drains)
        latency = Latency(decode_samples(d["latencies"] for d in drains))
        seconds = after.wall - before.wall
        delivered = add_counts(drains, "window_received")
        target_cpu = after.target.cpu_s - before.target.cpu_s
        balancer_cpu = after.balancer.cpu_s - before.balancer.cpu_s
        redis_cpu = after.redis.cpu_s - before.redis.cpu_s
        # Publishes in the window, at the rate the publisher kept over its whole run.
        window_publishes = published["achieved_rate"] * seconds
        loadgen = [a.cpu_s - b.cpu_s for a, b in zip(after.loadgen, before.loadgen, strict=True)]
        result = StepResult(
            asked_rate=delivered_rate,
            publish_rate=publish_rate,
            achieved_publish_rate=published["achieved_rate"],
            held=add_counts(drains, "held"),
            delivered_per_s=delivered / measure,
            latency_samples=latency.count,
            p50_ms=latency.p50_ms,
            p99_ms=latency.p99_ms,
            max_ms=latency.max_ms,
            gaps=changes.gaps,
            duplicates=changes.duplicates,
            missing=add_counts(drains, "missing"),
            closed=changes.closed,
            resets=changes.resets,
            publish_errors=published["errors"],
            target_cpu_pct=100 * target_cpu / seconds,
            target_us_per_event=1e6 * target_cpu / delivered if delivered else math.inf,
            target_rss_mib=after.target.rss_bytes / 2**20,
            redis_cpu_pct=100 * redis_cpu / seconds,
            redis_clients=await self.redis_clients(),
            loadgen_cpu_pct=100 * sum(loadgen) / seconds,
            loadgen_busiest_pct=100 * max(loadgen) / seconds,
            publisher_cpu_pct=100 * (after.publisher.cpu_s - before.publisher.cpu_s) / seconds,
            other_cpu_pct=_other_cpu_pct(before, after),
            load_average=load_average(),
            balancer_cpu_pct=100 * balancer_cpu / seconds,
            balancer_us_per_event=1e6 * balancer_cpu / delivered if delivered else math.inf,
            redis_us_per_publish=1e6 * redis_cpu / window_publishes if window_publishes else 0.0,
        )
        result.failure = _judge(result, drained=all(d["caught_up"] for d in drains))
        return result

    async def publish_burst(self, per_job: int, timeout: float) -> BurstResult:
        """`per_job` events for every job, as fast as the publisher's lanes go, while every
        subscriber receives them; then every subscriber must catch up within `timeout`."""
        before = self._sample()
        published = await self._publisher_child.call("burst", per_job=per_job)
        after = self._sample()
        self._final = published["final"]
        drains = await self._all("drain", targets=self._final, timeout=timeout)
        changes = self._totals.delta(drains)
        seconds = max(after.wall - before.wall, 1e-9)
        count = per_job * len(self.jobs) - published["errors"]
        redis_cpu = after.redis.cpu_s - before.redis.cpu_s
        return BurstResult(
            per_job=per_job,
            published=count,
            seconds=seconds,
            publishes_per_s=count / seconds,
            publish_errors=published["errors"],
            publisher_cpu_pct=100 * (after.publisher.cpu_s - before.publisher.cpu_s) / seconds,
            redis_cpu_pct=100 * redis_cpu / seconds,
            redis_us_per_publish=1e6 * redis_cpu / count if count else math.inf,
            target_cpu_pct=100 * (after.target.cpu_s - before.target.cpu_s) / seconds,
            balancer_cpu_pct=100 * (after.balancer.cpu_s - before.balancer.cpu_s) / seconds,
            caught_up=all(d["caught_up"] for d in drains),
            gaps=changes.gaps,
            duplicates=changes.duplicates,
            other_cpu_pct=_other_cpu_pct(before, after),
            load_average=load_average(),
        )

    async def prime(self, timeout: float) -> bool:
        """One event per job, so every subscriber holds an event id to resume from."""
        published = await self._publisher_child.call("burst", per_job=1)
        self._final = published["final"]
        drains = await self._all("drain", targets=self._final, timeout=timeout)
        self._totals.delta(drains)
        return all(d["caught_up"] for d in drains)

    async def settle(self, timeout: float) -> bool:
        """After connecting: every subscriber gets one event per job; any the target cut off
        meanwhile resumes (or is dropped from the held ones). True when all are caught up."""
        return await self.prime(timeout) or await self.recover(timeout)

    async def recover(self, timeout: float) -> bool:
        """After a failed step: reopen subscribers the target cut off (they resume from their
        Last-Event-ID; those that cannot are no longer held) and wait until all caught up."""
        window = max(1, self.load.window // len(self._subscribers))
        await self._all("connect", window=window)
        drains = await self._all("drain", targets=self._final, timeout=timeout)
        self._totals.delta(drains)
        self.held = add_counts(drains, "held")
        return self.held > 0 and all(d["caught_up"] for d in drains)

    async def drop_all(self, timeout: float = 30.0) -> float:
        """Every subscriber drops; returns how long the target took to close its side."""
        await self._all("drop", timeout=timeout)
        started = time.monotonic()
        # The target has noticed when its descriptors fell back near the idle count.
        allowance = self._idle_files + max(16, self.held // 50)
        while time.monotonic() - started < timeout:
            if sample_trees(self.target.pids).open_files <= allowance:
                break
            await asyncio.sleep(0.05)
        return time.monotonic() - started

    async def storm(self, behind: int, timeout: float) -> StormResult:
        """Drop everyone, publish `behind` events per job, reconnect everyone at once."""
        drop_seen = await self.drop_all()
        published = await self._publisher_child.call("burst", per_job=behind)
        self._final = published["final"]
        before = self._sample()
        window = max(1, self.load.window // len(self._subscribers))
        replies = await self._all(
            "storm", targets=published["final"], window=window, timeout=timeout
        )
        after = self._sample()
        changes = self._totals.delta(replies)
        started = min(float(r["started"]) for r in replies)
        finished = max(float(r["finished"]) for r in replies)
        pairs = zip(after.loadgen, before.loadgen, strict=True)
        loadgen_cpu = sum(a.cpu_s - b.cpu_s for a, b in pairs)
        return StormResult(
            behind=behind,
            held=add_counts(replies, "held"),
            seconds=finished - started,
            connect_seconds=max(float(r["connect_seconds"]) for r in replies),
            caught_up=all(r["caught_up"] for r in replies),
            not_caught_up=add_counts(replies, "behind"),
            missing=add_counts(replies, "missing"),
            gaps=changes.gaps,
            duplicates=changes.duplicates,
            resets=changes.resets,
            failures=merge_failures(replies),
            drop_seen_seconds=drop_seen,
            target_cpu_s=after.target.cpu_s - before.target.cpu_s,
            loadgen_cpu_s=loadgen_cpu,
            other_cpu_pct=_other_cpu_pct(before, after),
            load_average=load_average(),
            balancer_cpu_s=after.balancer.cpu_s - before.balancer.cpu_s,
        )


def _judge(step: StepResult, drained: bool) -> str:
    """Why the step does not count as delivered at p99 <= 100 ms with nothing lost, or ''."""
    if step.publish_errors:
        return f"{step.publish_errors} publish errors"
    if step.achieved_publish_rate < MIN_PUBLISH_SHARE * step.publish_rate:
        return (
            f"publisher reached {step.achieved_publish_rate:.0f} of "
            f"{step.publish_rate:.0f} events/s"
        )
    lost = step.gaps + step.missing
    if step.closed or step.duplicates or lost:
        return f"lost {lost}, duplicates {step.duplicates}, connections closed {step.closed}" + (
            "" if drained else " (not drained)"
        )
    if not drained:
        return "not drained"
    if not step.latency_samples:
        return "no event delivered"
    if step.p99_ms > MAX_P99_MS:
        return f"p99 {step.p99_ms:.0f} ms"
    return ""


async def _until(wall_time: float) -> None:
    delay = wall_time - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


def _standalone_target(args: argparse.Namespace) -> Target:
    url = urlsplit(args.url.format(job="JOB"))
    if args.nchan_publish_url:
        publisher: dict[str, Any] = {"kind": "nchan", "publish_url": args.nchan_publish_url}
    else:
        publisher = {
            "kind": "redis",
            "redis_url": args.redis_url,
            "queue_redis_url": args.queue_redis_url,
            "key_prefix": args.key_prefix,
        }
    redis_port = urlsplit(args.redis_url).port or 6379
    return Target(
        name="target",
        port=url.port or 80,
        pid=args.target_pid,
        redis=RedisServer(redis_port, args.redis_pid),
        publisher=publisher,
        events_path=urlsplit(args.url).path,
        multi_events_path=args.multi_path,
        wire=args.wire,
    )


async def _standalone(args: argparse.Namespace) -> None:
    target = _standalone_target(args)
    load = Load(args.subscribers, args.jobs, args.processes, jobs_per_stream=args.jobs_per_stream)
    async with LoadGenerator(target, load) as loadgen:
        report: dict[str, Any] = {"connect": asdict(await loadgen.connect())}
        _print(report["connect"])
        if args.rate:
            step = await loadgen.step(args.rate, args.warmup, args.duration, args.drain_timeout)
            report["step"] = {**asdict(step), "passed": step.passed}
            _print(report["step"])
        if args.storm:
            await loadgen.prime(args.drain_timeout)  # so every subscriber has an id to resume
            report["storm"] = asdict(await loadgen.storm(args.storm, args.storm_timeout))
            _print(report["storm"])


def _print(section: dict[str, Any]) -> None:
    print(orjson.dumps(section, option=orjson.OPT_INDENT_2).decode(), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description="SSE and WebSocket load generator (127.0.0.1 targets only); prints JSON."
    )
    parser.add_argument("--url", required=True, help="subscriber URL with {job}")
    parser.add_argument(
        "--redis-url", required=True, help="the target's Redis (redis+cluster://: a cluster)"
    )
    parser.add_argument("--queue-redis-url", default="", help="the queue's, beside a cluster")
    parser.add_argument("--key-prefix", default="jobwire")
    parser.add_argument("--nchan-publish-url", help="publish over Nchan's HTTP endpoint ({job})")
    parser.add_argument("--target-pid", type=int, default=0, help="measure this process tree")
    parser.add_argument("--redis-pid", type=int, default=0)
    parser.add_argument("--subscribers", type=int, default=1_000)
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument(
        "--jobs-per-stream", type=int, default=1, help="jobs per multi-job stream (--multi-path)"
    )
    parser.add_argument("--multi-path", default="/events", help="the multi-job stream's path")
    parser.add_argument(
        "--wire",
        choices=sorted(WIRES),
        default="sse",
        help="sse; ws: Jobwire's WebSocket (/jobs/{job}/ws); ws-nchan: Nchan's (ws+meta.nchan)",
    )
    parser.add_argument("--processes", type=int, default=2, help="subscriber processes")
    parser.add_argument("--rate", type=float, default=0, help="delivered events/s to ask for")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--drain-timeout", type=float, default=20.0)
    parser.add_argument("--storm", type=int, default=0, help="events behind for a resume storm")
    parser.add_argument("--storm-timeout", type=float, default=60.0)
    args = parser.parse_args()
    if urlsplit(args.url.format(job="x")).hostname not in ("127.0.0.1", "localhost"):
        parser.error("the load generator only targets 127.0.0.1")
    uvloop.run(_standalone(args))


if __name__ == "__main__":
    main()
