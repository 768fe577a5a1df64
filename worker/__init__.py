"""Writing jobs for Jobwire: register async functions on a `JobRegistry`; each receives a
`Progress` to report through, and may raise `Retry` to be run again."""

from arq import Retry

from worker.job import JobFunction
from worker.progress import LogLevel, Progress
from worker.registry import JobRegistry
from worker.writer import JobEnded

__all__ = ["JobEnded", "JobFunction", "JobRegistry", "LogLevel", "Progress", "Retry"]
