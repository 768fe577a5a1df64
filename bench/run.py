"""One command, every target, the same load shapes, side by side in one run.

    .venv/bin/python -m bench.run            # the full matrix (about half an hour)
    .venv/bin/python -m bench.run --quick    # 1,000 subscribers x 10 jobs, a smoke run

For each shape, each target is started fresh (its own redis-server on a free port), the
subscribers connect, and then:
- a rate search: steps of `--warmup` + `--measure` seconds, doubling the delivered rate while
  a step passes (p99 <= 100 ms, nothing lost, nothing duplicated, no connection cut), then
  halving the interval to the first failing rate until the two are within `--precision`;
- resume storms: everyone drops, K events per job are published, everyone reconnects with
  Last-Event-ID; timed until the last subscriber caught up (median of `--storm-repeats`).
  The `*-multi` shapes do it on multi-job streams (`GET /events?job=a&job=b&job=c`), whose
  Last-Event-ID is a composite cursor; only the Jobwire targets serve those;
- a publish burst (`10k-1000`): K events per job as fast as the publisher goes, every
  subscriber receiving them: the publishes/s the target's Redis takes, and its CPU per publish.
Tables go to stdout as Markdown, every figure to a JSON file.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
import uvloop

from bench.loadgen import (
    MAX_P99_MS,
    BurstResult,
    ConnectResult,
    Load,
    LoadGenerator,
    StepResult,
    StormResult,
)
from bench.processes import ServiceFailed
from bench.stats import median
from bench.targets import TARGETS, reference_of, serves_multi_job_streams, start_target

__all__ = ["SHAPES", "Shape", "main"]

# A shape and target that runs longer than this is stopped: every run is bounded.
SHAPE_TIMEOUT_S = 20 * 60
# A search stops going down once a subscriber would get fewer events than this per second:
# too few samples to judge a p99.
MIN_EVENTS_PER_SUBSCRIBER_S = 0.2
# A storm slower than this is not repeated: its median would cost minutes and tell no more.
STORM_REPEAT_BELOW_S = 15.0
# A step failed on latency is tried again only when it missed by less than this factor:
# a near miss may be the machine's other work, a miss by seconds is not.
RETRY_WITHIN = 3.0


@dataclass(frozen=True, slots=True)
class Shape:
    name: str
    subscribers: int
    jobs: int
    start_rate: float = 0.0  # delivered events/s where the rate search begins; 0: no search
    fixed_rate: float = 0.0  # one step at this delivered rate instead of a search
    storms: tuple[int, ...] = ()  # events behind, one resume storm each
    jobs_per_stream: int = 1  # more than one: each subscriber is on a multi-job stream
    publish_burst: int = 0  # events per job of one publish burst before the search; 0: none

    @property
    def label(self) -> str:
        label = f"{self.name}: {self.subscribers:,} x {self.jobs:,}"
        if self.jobs_per_stream > 1:
            label += f" ({self.jobs_per_stream} per stream)"
        return label


SHAPES = {
    shape.name: shape
    for shape in (
        Shape("smoke", 1_000, 10, start_rate=4_000, storms=(20,)),
        Shape("2k-10", 2_000, 10, start_rate=4_000, storms=(20,)),
        Shape("10k-10", 10_000, 10, start_rate=8_000),
        Shape("15k-10", 15_000, 10, start_rate=8_000),
        Shape("10k-1000", 10_000, 1_000, start_rate=4_000, publish_burst=20),
        Shape("storm", 10_000, 10, storms=(20, 100)),
        # 10 streams of 3 jobs, 1,000 subscribers each: per job as many watchers as `storm`.
        Shape("storm-multi", 10_000, 30, storms=(20, 100), jobs_per_stream=3),
        Shape("smoke-multi", 1_000, 30, storms=(20,), jobs_per_stream=3),
        Shape("hold", 18_000, 10, fixed_rate=2_000),
    )
}
FULL = ("10k-10", "15k-10", "10k-1000", "storm", "hold")
QUICK = ("smoke",)


@dataclass
class Outcome:
    """Everything measured for one shape on one target."""

    shape: str
    target: str
    repeat: int
    connect: ConnectResult | None = None
    steps: list[StepResult] = field(default_factory=list)
    best: StepResult | None = None
    stopped: str = ""
    storms: list[StormResult] = field(default_factory=list)
    error: str = ""
    bursts: list[BurstResult] = field(default_factory=list)


async def run_shape(
    shape: Shape, target_name: str, repeat: int, args: argparse.Namespace
) -> Outcome:
    outcome = Outcome(shape.name, target_name, repeat)
    if shape.jobs_per_stream > 1 and not serves_multi_job_streams(target_name):
        outcome.error = "no multi-job stream"
        _log(target_name, shape, "skipped: the target has no multi-job stream")
        return outcome
    env = dict(item.split("=", 1) for item in args.gateway_env)
    try:
        with start_target(target_name, env, args.log_dir / shape.name) as target:
            load = Load(
                shape.subscribers,
                shape.jobs,
                args.processes,
                args.window,
                jobs_per_stream=shape.jobs_per_stream,
            )
            async with asyncio.timeout(SHAPE_TIMEOUT_S), LoadGenerator(target, load) as loadgen:
                outcome.connect = await loadgen.connect()
                _log(target_name, shape, _describe_connect(outcome.connect))
                if not outcome.connect.held:
                    outcome.stopped = "no subscriber held"
                    return outcome
                if not await loadgen.settle(args.drain_timeout):
                    _log(target_name, shape, "some subscribers did not settle after connecting")
                if shape.publish_burst:
                    burst = await loadgen.publish_burst(shape.publish_burst, args.drain_timeout)
                    outcome.bursts.append(burst)
                    _log(target_name, shape, _describe_burst(burst))
                if shape.start_rate or shape.fixed_rate:
                    await _search(loadgen, shape, outcome, args)
                if shape.storms:
                    await _storms(loadgen, shape, outcome, args)
    except (ServiceFailed, RuntimeError, OSError, TimeoutError) as exc:
        outcome.error = f"{type(exc).__name__}: {exc}"
        _log(target_name, shape, f"error: {outcome.error}")
    return outcome


async def _search(
    loadgen: LoadGenerator, shape: Shape, outcome: Outcome, args: argparse.Namespace
) -> None:
    rate = shape.fixed_rate or shape.start_rate
    passed_rate = 0.0
    failed_rate = 0.0
    publish_bound = False
    for _ in range(1 if shape.fixed_rate else args.max_steps):
        outcome.stopped = ""  # says why the search ended, set only where it ends
        step = await _step(loadgen, rate, shape, outcome, args)
        if step.passed:
            if outcome.best is None or step.delivered_per_s > outcome.best.delivered_per_s:
                outcome.best = step
            if publish_bound:
                return
            passed_rate = rate
        else:
            if (step.closed or step.missing) and not await loadgen.recover(args.drain_timeout):
                outcome.stopped = f"did not recover after {rate:,.0f}/s: {step.failure}"
                return
            if step.failure.startswith("publisher"):
                # The target takes publishes slower than asked (Nchan's HTTP publish path
                # does, past some rate): one more step just under what it took, then stop.
                outcome.stopped = f"publish-bound: {step.failure} at {rate:,.0f}/s"
                if publish_bound:
                    return
                publish_bound = True
                rate = 0.95 * step.achieved_publish_rate * step.held / len(loadgen.jobs)
                continue
            failed_rate = rate
        if failed_rate and passed_rate and failed_rate / passed_rate <= 1 + args.precision:
            return
        if not failed_rate:
            rate *= 2
        else:
            rate = (passed_rate + failed_rate) / 2 if passed_rate else rate / 2
        if rate < shape.subscribers * MIN_EVENTS_PER_SUBSCRIBER_S:
            outcome.stopped = "no rate passed"
            return


async def _step(
    loadgen: LoadGenerator, rate: float, shape: Shape, outcome: Outcome, args: argparse.Namespace
) -> StepResult:
    """One step at `rate`; one that narrowly failed on latency alone is tried again up to
    `--retries` times: other work on the machine can only slow a target down."""
    for attempt in range(1 + args.retries):
        step = await loadgen.step(rate, args.warmup, args.measure, args.drain_timeout)
        outcome.steps.append(step)
        _log(outcome.target, shape, _describe_step(step))
        near_miss = step.failure.startswith("p99") and step.p99_ms <= RETRY_WITHIN * MAX_P99_MS
        if step.passed or not near_miss or attempt == args.retries:
            break
    return step


async def _storms(
    loadgen: LoadGenerator, shape: Shape, outcome: Outcome, args: argparse.Namespace
) -> None:
    if not await loadgen.prime(args.drain_timeout):
        outcome.stopped = "subscribers did not catch up before the storm"
        return
    for behind in shape.storms:
        for _ in range(args.storm_repeats):
            storm = await loadgen.storm(behind, args.storm_timeout)
            outcome.storms.append(storm)
            _log(outcome.target, shape, _describe_storm(storm))
            if not storm.caught_up and not await loadgen.recover(args.drain_timeout):
                outcome.stopped = f"did not recover after a storm {behind} behind"
                return
            if storm.seconds > STORM_REPEAT_BELOW_S:
                break


def _log(target: str, shape: Shape, text: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    load = "/".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"[{stamp} load {load}] {shape.name} {target}: {text}", file=sys.stderr, flush=True)


def _describe_connect(result: ConnectResult) -> str:
    failures = f", failures {result.failures}" if result.failures else ""
    return (
        f"held {result.held:,}/{result.asked:,} in {result.seconds:.1f}s, "
        f"{result.kib_per_connection:.1f} KiB/conn, {result.open_files:,} files{failures}"
    )


def _describe_step(step: StepResult) -> str:
    verdict = "pass" if step.passed else f"FAIL ({step.failure})"
    return (
        f"asked {step.asked_rate:,.0f}/s: delivered {step.delivered_per_s:,.0f}/s, "
        f"p50 {step.p50_ms:.1f} p99 {step.p99_ms:.1f} max {step.max_ms:.0f} ms, "
        f"target CPU {step.target_cpu_pct:.0f}%, loadgen {step.loadgen_cpu_pct:.0f}% "
        f"(busiest {step.loadgen_busiest_pct:.0f}%), others {step.other_cpu_pct:.0f}%, "
        f"redis conns {step.redis_clients} - {verdict}"
    )


def _describe_burst(burst: BurstResult) -> str:
    return (
        f"publish burst of {burst.published:,}: {burst.publishes_per_s:,.0f} publishes/s, "
        f"Redis {burst.redis_cpu_pct:.0f}% ({burst.redis_us_per_publish:.1f} µs/publish), "
        f"publisher {burst.publisher_cpu_pct:.0f}%, caught up {burst.caught_up}, "
        f"others {burst.other_cpu_pct:.0f}%"
    )


def _describe_storm(storm: StormResult) -> str:
    return (
        f"storm {storm.behind} behind: {storm.seconds:.2f}s "
        f"(caught up {storm.caught_up}, gaps {storm.gaps}, dups {storm.duplicates}, "
        f"resets {storm.resets}, failures {storm.failures}), others {storm.other_cpu_pct:.0f}%"
    )


# Tables ------------------------------------------------------------------------------------


def _by_shape(outcomes: list[Outcome]) -> dict[tuple[str, str], list[Outcome]]:
    grouped: dict[tuple[str, str], list[Outcome]] = {}
    for outcome in outcomes:
        grouped.setdefault((outcome.shape, outcome.target), []).append(outcome)
    return grouped


def _best_rate(outcomes: Iterable[Outcome]) -> float:
    return median([o.best.delivered_per_s if o.best else 0.0 for o in outcomes])


def _median_step(outcomes: list[Outcome]) -> StepResult | None:
    """The best step of the repeat whose best rate is the median one."""
    ranked = sorted(
        (o.best for o in outcomes if o.best is not None), key=lambda step: step.delivered_per_s
    )
    return ranked[len(ranked) // 2] if ranked else None


def rate_table(outcomes: list[Outcome], shapes: list[Shape], targets: list[str]) -> str:
    lines = [
        "| shape: subscribers x jobs | target | held | max delivered events/s | x Nchan "
        "| p50 / p99 / max ms | target CPU | µs CPU / event | Redis CPU | Redis conns "
        "| loadgen CPU (busiest) | other CPU | load avg | stopped by |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    grouped = _by_shape(outcomes)
    for shape in shapes:
        if shape.fixed_rate:
            lines += _fixed_rows(shape, grouped, targets)
        if not shape.start_rate:
            continue
        for target in targets:
            runs = grouped.get((shape.name, target), [])
            if not runs:
                continue
            nchan = reference_of(target)
            reference = _best_rate(grouped.get((shape.name, nchan), []))
            rate = _best_rate(runs)
            step = _median_step(runs)
            held = median([float(r.connect.held) for r in runs if r.connect])
            ratio = f"{rate / reference:.2f}" if reference and target != nchan else "-"
            stops = "; ".join(sorted({_stopped_by(r) for r in runs}))
            if step is None:
                lines.append(
                    f"| {shape.label} | {target} | {held:,.0f} | none passed | - | - | - | - "
                    f"| - | - | - | - | - | {stops} |"
                )
                continue
            repeats = f" (median of {len(runs)})" if len(runs) > 1 else ""
            lines.append(
                f"| {shape.label} | {target} | {held:,.0f} | {rate:,.0f}{repeats} | {ratio} "
                f"| {step.p50_ms:.1f} / {step.p99_ms:.1f} / {step.max_ms:.0f} "
                f"| {step.target_cpu_pct:.0f}% | {step.target_us_per_event:.1f} "
                f"| {step.redis_cpu_pct:.0f}% | {step.redis_clients:,} "
                f"| {step.loadgen_cpu_pct:.0f}% ({step.loadgen_busiest_pct:.0f}%) "
                f"| {step.other_cpu_pct:.0f}% | {step.load_average[0]:.1f} | {stops} |"
            )
    return "\n".join(lines)


def cost_table(outcomes: list[Outcome], shapes: list[Shape], targets: list[str]) -> str:
    """Where the CPU of the best step went: gateways, balancer, Redis (every node), and the
    publishes it took."""
    lines = [
        "| shape: subscribers x jobs | target | max delivered events/s | publishes/s "
        "| gateways µs CPU / event | balancer CPU | balancer µs CPU / event "
        "| Redis CPU (all nodes) | Redis µs CPU / publish | publisher CPU |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    grouped = _by_shape(outcomes)
    for shape in shapes:
        if not shape.start_rate:
            continue
        for target in targets:
            step = _median_step(grouped.get((shape.name, target), []))
            if step is None:
                continue
            lines.append(
                f"| {shape.label} | {target} | {step.delivered_per_s:,.0f} "
                f"| {step.achieved_publish_rate:,.0f} | {step.target_us_per_event:.1f} "
                f"| {step.balancer_cpu_pct:.0f}% | {step.balancer_us_per_event:.1f} "
                f"| {step.redis_cpu_pct:.0f}% | {step.redis_us_per_publish:.1f} "
                f"| {step.publisher_cpu_pct:.0f}% |"
            )
    return "\n".join(lines)


def burst_table(outcomes: list[Outcome], shapes: list[Shape], targets: list[str]) -> str:
    lines = [
        "| shape: subscribers x jobs | target | published | publishes/s | publisher CPU "
        "| Redis CPU (all nodes) | Redis µs CPU / publish | gateways CPU | balancer CPU "
        "| caught up | gaps / dups | other CPU | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    grouped = _by_shape(outcomes)
    for shape in shapes:
        for target in targets:
            for burst in (b for o in grouped.get((shape.name, target), []) for b in o.bursts):
                errors = f" ({burst.publish_errors} errors)" if burst.publish_errors else ""
                lines.append(
                    f"| {shape.label} | {target} | {burst.published:,}{errors} "
                    f"| {burst.publishes_per_s:,.0f} | {burst.publisher_cpu_pct:.0f}% "
                    f"| {burst.redis_cpu_pct:.0f}% | {burst.redis_us_per_publish:.1f} "
                    f"| {burst.target_cpu_pct:.0f}% | {burst.balancer_cpu_pct:.0f}% "
                    f"| {'yes' if burst.caught_up else 'no'} | {burst.gaps} / {burst.duplicates} "
                    f"| {burst.other_cpu_pct:.0f}% | {burst.load_average[0]:.1f} |"
                )
    return "\n".join(lines)


def _fixed_rows(
    shape: Shape, grouped: dict[tuple[str, str], list[Outcome]], targets: list[str]
) -> list[str]:
    """Shapes measured at one rate: that step's figures, passed or not."""
    rows = []
    for target in targets:
        for outcome in grouped.get((shape.name, target), []):
            if not outcome.steps:
                rows.append(
                    f"| {shape.label} | {target} | - | not measured | - | - | - | - "
                    f"| - | - | - | - | - | {outcome.error or outcome.stopped} |"
                )
                continue
            step = outcome.steps[-1]
            verdict = "passed" if step.passed else step.failure
            rows.append(
                f"| {shape.label} | {target} | {step.held:,} "
                f"| {step.delivered_per_s:,.0f} (fixed rate) | - "
                f"| {step.p50_ms:.1f} / {step.p99_ms:.1f} / {step.max_ms:.0f} "
                f"| {step.target_cpu_pct:.0f}% | {step.target_us_per_event:.1f} "
                f"| {step.redis_cpu_pct:.0f}% | {step.redis_clients:,} "
                f"| {step.loadgen_cpu_pct:.0f}% ({step.loadgen_busiest_pct:.0f}%) "
                f"| {step.other_cpu_pct:.0f}% | {step.load_average[0]:.1f} | {verdict} |"
            )
    return rows


def _stopped_by(outcome: Outcome) -> str:
    if outcome.error:
        return outcome.error
    if outcome.stopped == "no rate passed":
        return f"none passed; the lowest tried: {_last_failure(outcome)}"
    return outcome.stopped or _last_failure(outcome)


def _last_failure(outcome: Outcome) -> str:
    failed = [step for step in outcome.steps if not step.passed]
    if not failed:
        return "step limit"
    step = failed[-1]
    return f"{step.failure} at {step.asked_rate:,.0f}/s"


def connect_table(outcomes: list[Outcome], shapes: list[Shape], targets: list[str]) -> str:
    lines = [
        "| shape: subscribers x jobs | target | asked | held | connect s | RSS idle → held MiB "
        "| KiB / connection "
        "| target open files | Redis conns (idle) | failures / errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    grouped = _by_shape(outcomes)
    for shape in shapes:
        for target in targets:
            for outcome in grouped.get((shape.name, target), []):
                c = outcome.connect
                if c is None:
                    lines.append(
                        f"| {shape.label} | {target} | {shape.subscribers:,} | - | - | - | - "
                        f"| - | - | {outcome.error} |"
                    )
                    continue
                problems = ", ".join(f"{k}: {v:,}" for k, v in c.failures.items())
                problems = "; ".join(p for p in (problems, outcome.error) if p) or "-"
                lines.append(
                    f"| {shape.label} | {target} | {c.asked:,} | {c.held:,} | {c.seconds:.1f} "
                    f"| {c.rss_idle_mib:.0f} → {c.rss_held_mib:.0f} "
                    f"| {c.kib_per_connection:.1f} | {c.open_files:,} | {c.redis_clients:,} "
                    f"| {problems} |"
                )
    return "\n".join(lines)


def storm_table(outcomes: list[Outcome], shapes: list[Shape], targets: list[str]) -> str:
    lines = [
        "| shape: subscribers x jobs | behind | target | held | catch-up s, median (min-max, n) "
        "| x Nchan time | gaps | dups | resets | not caught up | target CPU s | other CPU "
        "| load avg |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    grouped = _by_shape(outcomes)
    for shape in shapes:
        for behind in shape.storms:
            for target in targets:
                storms = _storms_of(grouped.get((shape.name, target), []), behind)
                if not storms:
                    continue
                nchan = reference_of(target)
                nchan_storms = _storms_of(grouped.get((shape.name, nchan), []), behind)
                reference = median([s.seconds for s in nchan_storms if s.caught_up])
                times = [s.seconds for s in storms]
                typical = median(times)
                ratio = f"{typical / reference:.2f}" if reference and target != nchan else "-"
                lines.append(
                    f"| {shape.label} | {behind} | {target} | {min(s.held for s in storms):,} "
                    f"| {typical:.2f} ({min(times):.2f}-{max(times):.2f}, {len(times)}) "
                    f"| {ratio} | {sum(s.gaps for s in storms)} "
                    f"| {sum(s.duplicates for s in storms)} | {sum(s.resets for s in storms)} "
                    f"| {sum(s.not_caught_up for s in storms)} "
                    f"| {median([s.target_cpu_s for s in storms]):.2f} "
                    f"| {median([s.other_cpu_pct for s in storms]):.0f}% "
                    f"| {storms[-1].load_average[0]:.1f} |"
                )
    return "\n".join(lines)


def _storms_of(outcomes: list[Outcome], behind: int) -> list[StormResult]:
    return [s for o in outcomes for s in o.storms if s.behind == behind]


def report(outcomes: list[Outcome], shapes: list[Shape], targets: list[str]) -> str:
    sections = [
        f"Machine: {os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
        "shared by the target, its Redis and the load generator.",
        "",
        "Subscribers held and idle memory:",
        "",
        connect_table(outcomes, shapes, targets),
    ]
    if any(shape.start_rate or shape.fixed_rate for shape in shapes):
        sections += [
            "",
            "Max delivered events/s with p99 <= 100 ms and nothing lost:",
            "",
            rate_table(outcomes, shapes, targets),
            "",
            "Where the CPU of those steps went:",
            "",
            cost_table(outcomes, shapes, targets),
        ]
    if any(outcome.bursts for outcome in outcomes):
        sections += [
            "",
            "Publish bursts (as fast as the publisher goes, every subscriber receiving):",
            "",
            burst_table(outcomes, shapes, targets),
        ]
    if any(shape.storms for shape in shapes):
        sections += ["", "Resume storms:", "", storm_table(outcomes, shapes, targets)]
    return "\n".join(sections)


# Entry point -------------------------------------------------------------------------------


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}")
    parser.add_argument(
        "--shapes", default=",".join(FULL), help=f"comma-separated, of {', '.join(SHAPES)}"
    )
    parser.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help="comma-separated: jobwire, jobwire*<processes>, jobwire@<git ref>, naive, nchan; "
        "any but naive with -ws: its subscribers on WebSocket (jobwire-ws, nchan-ws); "
        "cluster*<gateways>: gateways behind HAProxy, the events on a 3-master Redis Cluster",
    )
    parser.add_argument("--repeats", type=int, default=1, help="runs of the whole matrix")
    parser.add_argument("--storm-repeats", type=int, default=3)
    parser.add_argument("--processes", type=int, default=2, help="subscriber processes")
    parser.add_argument(
        "--window", type=int, default=1_000, help="connections awaiting headers at once"
    )
    parser.add_argument(
        "--retries", type=int, default=1, help="repeats of a step failed on latency alone"
    )
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument("--measure", type=float, default=6.0, help="seconds measured per step")
    parser.add_argument("--drain-timeout", type=float, default=20.0)
    parser.add_argument("--storm-timeout", type=float, default=120.0)
    parser.add_argument("--max-steps", type=int, default=7)
    parser.add_argument(
        "--precision", type=float, default=0.15, help="stop when fail/pass rate is within this"
    )
    parser.add_argument(
        "--gateway-env", action="append", default=[], metavar="NAME=VALUE",
        help="extra environment for the Jobwire gateway (repeatable)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, help="JSON file for every figure")
    parser.add_argument(
        "--report", type=Path, metavar="JSON", help="only print the tables of a saved run"
    )
    parser.add_argument(
        "--log-dir", type=Path, default=Path("/tmp/jobwire-bench-logs"), help="targets' logs"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.shapes = ",".join(QUICK)
    return args


async def _main(args: argparse.Namespace) -> int:
    # SIGTERM cancels the run like Ctrl-C does, so every target and child is stopped.
    current = asyncio.current_task()
    assert current is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, current.cancel)
    shapes = [SHAPES[name] for name in args.shapes.split(",")]
    targets = args.targets.split(",")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out or Path(f"/tmp/jobwire-bench-{stamp}.json")
    print(f"bench: load average at start {os.getloadavg()}", file=sys.stderr, flush=True)
    outcomes: list[Outcome] = []
    for repeat in range(args.repeats):
        for shape in shapes:
            for target in targets:
                outcomes.append(await run_shape(shape, target, repeat, args))
                out.write_bytes(orjson.dumps(_json(outcomes, args), option=orjson.OPT_INDENT_2))
    print(report(outcomes, shapes, targets), flush=True)
    print(f"\nbench: every figure in {out}", file=sys.stderr, flush=True)
    return 0


def load_outcomes(path: Path) -> tuple[list[Outcome], list[Shape], list[str]]:
    """The outcomes, shapes and targets of a run saved with `--out`."""
    saved = orjson.loads(path.read_bytes())
    outcomes = [_outcome(raw) for raw in saved["outcomes"]]
    shapes = [SHAPES[name] for name in dict.fromkeys(o.shape for o in outcomes)]
    targets = list(dict.fromkeys(o.target for o in outcomes))
    return outcomes, shapes, targets


def _outcome(raw: dict[str, Any]) -> Outcome:
    def fields(values: dict[str, Any]) -> dict[str, Any]:
        return {**values, "load_average": tuple(values["load_average"])}

    return Outcome(
        shape=raw["shape"],
        target=raw["target"],
        repeat=raw["repeat"],
        connect=ConnectResult(**fields(raw["connect"])) if raw["connect"] else None,
        steps=[StepResult(**fields(values)) for values in raw["steps"]],
        best=StepResult(**fields(raw["best"])) if raw["best"] else None,
        stopped=raw["stopped"],
        storms=[StormResult(**fields(values)) for values in raw["storms"]],
        error=raw["error"],
        bursts=[BurstResult(**fields(values)) for values in raw.get("bursts", [])],
    )


def _json(outcomes: list[Outcome], args: argparse.Namespace) -> dict[str, Any]:
    return {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "cores": os.cpu_count(),
        "load_average_now": os.getloadavg(),
        "outcomes": [asdict(outcome) for outcome in outcomes],
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.report:
        print(report(*load_outcomes(args.report)))
        return 0
    return uvloop.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
