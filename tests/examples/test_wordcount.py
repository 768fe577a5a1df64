"""The example job package, end to end: a real worker running `examples.wordcount.jobs:jobs`
(the path the README and the compose recipe give), a real gateway, and a text file served by
a local HTTP server."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from examples.wordcount import jobs as wordcount
from shared.settings import Settings
from tests.conftest import Gateway, RunWorker, StartGateway
from tests.file_server import serving
from tests.support import collect_events, event_types, submit
from worker.jobpaths import load_registry

PATH = "examples.wordcount.jobs:jobs"
LINES = ["don't panic" if number % 3 == 0 else "The cat and the dog" for number in range(4_500)]


@pytest.fixture
def text_server(tmp_path: Path) -> Iterator[str]:
    """The base URL of an HTTP server serving `book.txt` (LINES) from a folder of this test."""
    (tmp_path / "book.txt").write_text("\n".join(LINES) + "\n")
    with serving(tmp_path) as url:
        yield url


@pytest.fixture
async def wordcount_stack(
    settings: Settings, start_worker: RunWorker, start_gateway: StartGateway
) -> Gateway:
    await start_worker(settings.replace(jobs=PATH))
    return await start_gateway()


def _counted(lines: list[str]) -> Counter[str]:
    return Counter(word for line in lines for word in line.lower().split())


def test_the_path_names_the_example_registry() -> None:
    assert load_registry(PATH) is wordcount.jobs
    assert [spec["name"] for spec in wordcount.jobs.specs()] == ["wordcount.count"]


async def test_counts_a_downloaded_text_in_two_stages_with_partial_results(
    wordcount_stack: Gateway, text_server: str
) -> None:
    url = f"{text_server}/book.txt"
    size = len(("\n".join(LINES) + "\n").encode())
    async with wordcount_stack.client() as client:
        job_id = await submit(client, "wordcount.count", url=url, top=3)
        events = await collect_events(client, job_id)

    types = event_types(events)
    assert types[:2] == ["queued", "started"]
    assert types[-1] == "completed"
    progress = [event.json()["data"] for event in events if event.event == "progress"]
    stages = [update["stage"] for update in progress]
    assert stages == sorted(stages, key=["download", "count"].index)
    last_download = [update for update in progress if update["stage"] == "download"][-1]
    assert (last_download["current"], last_download["total"]) == (size, size)
    assert (progress[-1]["current"], progress[-1]["total"]) == (4_500, 4_500)
    partial = [event.json()["data"] for event in events if event.event == "data"]
    assert partial == [
        {
            "lines": done,
            "words": _counted(LINES[:done]).total(),
            "top": [list(pair) for pair in _counted(LINES[:done]).most_common(3)],
        }
        for done in (2_000, 4_000, 4_500)
    ]
    assert events[-1].json()["data"]["result"] == {
        "url": url,
        "bytes": size,
        "lines": 4_500,
        "words": 18_000,
        "distinct": 6,
        "top": [["the", 6_000], ["cat", 3_000], ["and", 3_000]],
    }


async def test_a_missing_file_fails_at_once_and_a_bad_top_is_refused_at_submit(
    wordcount_stack: Gateway, text_server: str
) -> None:
    async with wordcount_stack.client() as client:
        job_id = await submit(client, "wordcount.count", url=f"{text_server}/missing.txt")
        events = await collect_events(client, job_id)
        refused = await client.post(
            "/jobs", json={"name": "wordcount.count", "args": {"url": text_server, "top": 0}}
        )

    assert event_types(events) == ["queued", "started", "failed"]
    failed = events[-1].json()["data"]
    assert failed["type"] == "HTTPStatusError"
    assert "404" in failed["message"]
    assert refused.status_code == 422
    assert [entry["loc"] for entry in refused.json()["detail"]] == [["args", "top"]]
