"""JSON logs: `JOBWIRE_LOG_FORMAT=json jobwire up` writes nothing but JSON lines, from every
process of the stack, with each request's and each job's ids."""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from shared.logs import JOB_ID, KEY, REQUEST_ID, JsonLineFormatter, log_context
from tests.readme_support import readme_block
from tests.support import collect_events, free_port, scaled, wait_until
from tests.up_support import clean_env

JOBWIRE = Path(sys.executable).parent / "jobwire"
FIELDS = ("time", "level", "logger", "message")


class Output:
    """A child's stdout and stderr, line by line, as they come."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.lines: list[bytes] = []
        self._readers = [
            asyncio.create_task(self._read(stream))
            for stream in (process.stdout, process.stderr)
            if stream is not None
        ]

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            self.lines.append(line)

    async def finished(self) -> None:
        await asyncio.gather(*self._readers)

    def records(self) -> list[dict[str, Any]]:
        """Every line as JSON; fails on the first that is not one object."""
        records = []
        for line in self.lines:
            record = orjson.loads(line)
            assert isinstance(record, dict), line
            records.append(record)
        return records


def _first(records: list[dict[str, Any]], **fields: Any) -> dict[str, Any] | None:
    return next((r for r in records if all(r.get(k) == v for k, v in fields.items())), None)


@pytest.mark.timeout(90)
async def test_json_up_writes_only_json_lines_with_request_and_job_ids() -> None:
    port = free_port()
    env = clean_env(JOBWIRE_PORT=str(port), JOBWIRE_LOG_FORMAT="json", JOBWIRE_LOG_LEVEL="INFO")
    process = await asyncio.create_subprocess_exec(
        str(JOBWIRE),
        "up",
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    output = Output(process)
    try:
        banner = await wait_until(
            lambda: _first(output.records(), logger="jobwire.up"),
            timeout=60,
            message="the banner line",
        )
        assert isinstance(banner, dict)
        assert banner["url"] == f"http://127.0.0.1:{port}/"
        key = banner["api_key"]  # made for the run: printed once, as in the text banner
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            timeout=10,
            headers={"Authorization": f"Bearer {key}"},
        ) as client:
            submitted = await client.post(
                "/jobs",
                json={"name": "demo.countdown", "args": {"seconds": 0.2, "steps": 2}},
                headers={"X-Request-ID": "submit-1"},
            )
            assert submitted.status_code == 202
            assert submitted.headers["x-request-id"] == "submit-1"
            job_id = submitted.json()["job_id"]
            events = await collect_events(client, job_id, headers={"X-Request-ID": "watch-1"})
            assert events[-1].event == "completed"
            insane = await client.get(f"/jobs/{job_id}", headers={"X-Request-ID": "a b"})
            assert insane.status_code == 200
            made_id = insane.headers["x-request-id"]
            assert re.fullmatch("[0-9a-f]{32}", made_id), made_id
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/readyz")).status_code == 200

        def access_line_of(request_id: str) -> dict[str, Any] | None:
            return _first(output.records(), logger="uvicorn.access", request_id=request_id)

        await wait_until(lambda: access_line_of(made_id), message="the last access line")
    finally:
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(scaled(40)):
            returncode = await process.wait()
            await output.finished()

    assert returncode == 0
    records = output.records()  # every line parses
    for record in records:
        assert all(isinstance(record.get(name), str) for name in FIELDS), record
    submit_line = access_line_of("submit-1")
    assert submit_line is not None
    assert submit_line | {"time": "", "client": ""} == {
        "time": "",
        "level": "INFO",
        "logger": "uvicorn.access",
        "message": submit_line["message"],
        "request_id": "submit-1",
        "key": "dev",
        "client": "",
        "method": "POST",
        "path": "/jobs",
        "http_version": "1.1",
        "status": 202,
    }
    # The README's example line (Operations) has these fields, in this order.
    shown = orjson.loads(readme_block("Operations", '"logger":"uvicorn.access"').text)
    assert list(submit_line) == list(shown)
    watch_line = access_line_of("watch-1")
    assert watch_line is not None
    assert (watch_line["path"], watch_line["status"], watch_line["key"]) == (
        f"/jobs/{job_id}/events",
        200,
        "dev",
    )
    # The probes, `jobwire up`'s own readiness polls included, are not in the access log.
    paths = [record.get("path", "") for record in records if record["logger"] == "uvicorn.access"]
    assert not [path for path in paths if path.startswith(("/healthz", "/readyz"))]
    # arq's own lines for the job (started, finished) carry its id.
    job_lines = [r for r in records if r["logger"] == "arq.worker" and r.get("job_id") == job_id]
    assert len(job_lines) >= 2, [r for r in records if r["logger"] == "arq.worker"]
    loggers = {record["logger"] for record in records}
    assert {"jobwire.up", "uvicorn.error", "uvicorn.access", "arq.worker"} <= loggers


def _formatted(record: logging.LogRecord) -> dict[str, Any]:
    line = JsonLineFormatter().format(record)
    assert "\n" not in line
    parsed: dict[str, Any] = orjson.loads(line)
    return parsed


def test_a_line_carries_the_context_it_was_written_in() -> None:
    record = logging.LogRecord("worker.x", logging.WARNING, __file__, 1, "late by %d s", (3,), None)

    with log_context(JOB_ID, "job-1"), log_context(REQUEST_ID, "r-1"), log_context(KEY, "app"):
        inside = _formatted(record)
    outside = _formatted(record)

    assert inside | {"time": ""} == {
        "time": "",
        "level": "WARNING",
        "logger": "worker.x",
        "message": "late by 3 s",
        "job_id": "job-1",
        "request_id": "r-1",
        "key": "app",
    }
    assert set(outside) == {"time", "level", "logger", "message"}


def test_a_traceback_stays_on_the_one_line() -> None:
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())

    formatted = _formatted(record)

    assert formatted["message"] == "failed"
    assert "ValueError: bad\nvalue" in formatted["exc_info"]
