"""CPU time, resident memory and open files of a process tree, read from /proc.

A target (uvicorn with workers, nginx master + worker) is measured as the tree under the pid
the bench started, so extra worker processes are counted without being named.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "TreeSample",
    "descendants",
    "load_average",
    "machine_busy_s",
    "own_cpu_s",
    "sample_tree",
    "sample_trees",
]

_PROC = Path("/proc")
_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class TreeSample:
    cpu_s: float
    rss_bytes: int
    open_files: int
    processes: int


def descendants(root: int) -> list[int]:
    """`root` and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        stat = _read(entry / "stat")
        if stat is None:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[int] = []
    pending = [root]
    while pending:
        pid = pending.pop()
        if (_PROC / str(pid)).exists():
            found.append(pid)
            pending.extend(children.get(pid, []))
    return found


def sample_tree(root: int) -> TreeSample:
    cpu_s = 0.0
    rss = 0
    files = 0
    pids = descendants(root)
    for pid in pids:
        cpu_s += _cpu_s(pid)
        rss += _rss_bytes(pid)
        files += _open_files(pid)
    return TreeSample(cpu_s, rss, files, len(pids))


def sample_trees(roots: tuple[int, ...]) -> TreeSample:
    """The trees under several roots, added up (none: an empty sample)."""
    samples = [sample_tree(root) for root in roots]
    return TreeSample(
        sum(sample.cpu_s for sample in samples),
        sum(sample.rss_bytes for sample in samples),
        sum(sample.open_files for sample in samples),
        sum(sample.processes for sample in samples),
    )


def own_cpu_s() -> float:
    """User + system CPU of this process so far (what `resource.getrusage` reports)."""
    return _cpu_s(os.getpid())


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def machine_busy_s() -> float:
    """CPU seconds all processes on the machine ran (user + nice + system) since boot.

    Interrupt and softirq time (much of it loopback networking) is left out: no process is
    charged for it, so it would show as someone else's work.
    """
    stat = _read(_PROC / "stat") or "cpu 0 0 0"
    user, nice, system = (int(value) for value in stat.splitlines()[0].split()[1:4])
    return (user + nice + system) / _TICKS_PER_S


def _cpu_s(pid: int) -> float:
    stat = _read(_PROC / str(pid) / "stat")
    if stat is None:
        return 0.0
    # Fields after the command name, which may itself hold spaces and parentheses.
    fields = stat[stat.rfind(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / _TICKS_PER_S


def _rss_bytes(pid: int) -> int:
    status = _read(_PROC / str(pid) / "status")
    if status is None:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _open_files(pid: int) -> int:
    try:
        return len(os.listdir(_PROC / str(pid) / "fd"))
    except OSError:
        return 0


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None
