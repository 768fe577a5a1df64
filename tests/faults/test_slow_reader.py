"""A client that stops reading mid-stream: the gateway cuts it off instead of buffering for it,
its memory stays flat, the other subscribers of the job are not held up, and the client, once
it reads again, resumes from its Last-Event-ID and gets everything."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from shared.keys import Keys
from shared.publish import Publisher
from shared.settings import Settings
from tests.feeds import new_feed_jobs, play_job
from tests.processes import GatewayProcess, ProcessGroup, rss_bytes, server_socket_state
from tests.support import SSEParser, wait_until
from tests.watchers import TEST_API_KEY, verify, watch_client, watch_job

pytestmark = pytest.mark.timeout(60)

SEND_TIMEOUT_S = 1.0
EVENTS = 1_500
PAYLOAD_BYTES = 16_000  # 24 MB of events: far more than any buffer the gateway should keep
READERS = 3
# Paced so that readers keeping up never fall a buffer behind: only the stuck client does.
PUBLISH_INTERVAL_S = 0.001
# What the gateway may grow by while it serves 24 MB to each of its readers and holds one
# stuck client: its working set (per-job caches, allocator slack; about 10 MiB measured), well
# below the 24 MB it would hold if it buffered the stream for the stuck client.
RSS_GROWTH_LIMIT = 20 * 1024 * 1024


@pytest.fixture
async def processes() -> AsyncIterator[ProcessGroup]:
    async with ProcessGroup.open() as group:
        yield group


class StuckClient:
    """Opens the job's stream over a socket with a tiny receive buffer, reads the response
    head, then stops reading until told to go on."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.port: int = writer.get_extra_info("sockname")[1]

    @classmethod
    async def open(cls, gateway: GatewayProcess, job_id: str) -> StuckClient:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", gateway.port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
        writer.write(
            f"GET /jobs/{job_id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {TEST_API_KEY}\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        return cls(reader, writer)

    async def read_rest(self) -> bytes:
        """Everything the server sent before it ended the connection."""
        chunks = []
        with contextlib.suppress(ConnectionError):
            while chunk := await self.reader.read(65_536):
                chunks.append(chunk)
        self.writer.close()
        return b"".join(chunks)


def dechunk_complete(body: bytes) -> bytes:
    """The data of every complete HTTP/1.1 chunk; a chunk cut short is dropped."""
    data, rest = [], body
    while rest:
        size_line, found, after = rest.partition(b"\r\n")
        if not found:
            break
        size = int(size_line.split(b";")[0], 16)
        if size == 0 or len(after) < size + 2:
            break
        data.append(after[:size])
        rest = after[size + 2 :]
    return b"".join(data)


async def test_a_client_that_stops_reading_is_cut_off_and_resumes_with_everything(
    processes: ProcessGroup, settings: Settings, redis: Redis
) -> None:
    gateway = await processes.gateway(settings, JOBWIRE_SEND_TIMEOUT_S=str(SEND_TIMEOUT_S))
    publisher = Publisher(redis, settings)
    async with gateway.client() as api:
        [job_id] = await new_feed_jobs(api, redis, Keys(settings.key_prefix), 1)
    baseline_rss = rss_bytes(gateway.pid)
    peak_rss = baseline_rss

    async def sample_rss() -> None:
        nonlocal peak_rss
        while True:
            peak_rss = max(peak_rss, rss_bytes(gateway.pid))
            await asyncio.sleep(0.05)

    stuck = await StuckClient.open(gateway, job_id)
    clients = [watch_client(gateway.url) for _ in range(READERS)]
    sampler = asyncio.create_task(sample_rss())
    try:
        readers = [asyncio.create_task(watch_job([c], job_id, timeout=40)) for c in clients]
        await play_job(
            publisher,
            job_id,
            events=EVENTS,
            payload_bytes=PAYLOAD_BYTES,
            interval_s=PUBLISH_INTERVAL_S,
        )
        published = time.monotonic()
        watches = await asyncio.gather(*readers)
        readers_done_after = time.monotonic() - published
        await wait_until(
            lambda: server_socket_state(gateway.port, stuck.port) != "ESTABLISHED",
            timeout=SEND_TIMEOUT_S + 10,
            message="the stuck client cut off",
        )
        cut_after = time.monotonic() - published
    finally:
        sampler.cancel()
        for client in clients:
            await client.aclose()

    received = SSEParser().feed(dechunk_complete(await stuck.read_rest()))
    got = [event for event in received if event.id is not None]
    async with watch_client(gateway.url) as client:
        resumed = await watch_job([client], job_id, last_event_id=got[-1].id, timeout=20)
    keys = Keys(settings.key_prefix)
    stored = [raw.decode() for raw, _ in await redis.xrange(keys.events(job_id))]

    assert cut_after <= SEND_TIMEOUT_S + 5, cut_after
    assert len(got) < len(stored)  # it was cut off before the end
    assert [event.id for event in got] + resumed.ids == stored
    assert resumed.made_up == []
    for watch in watches:
        assert (await verify(watch, redis, keys)).exact
        assert watch.connections == 1  # never cut off, never held back
    assert readers_done_after <= 10, readers_done_after
    growth = peak_rss - baseline_rss
    assert growth <= RSS_GROWTH_LIMIT, f"gateway RSS grew by {growth / 2**20:.1f} MiB"
    assert gateway.running


async def test_clients_resuming_far_behind_are_served_in_bounded_memory(
    processes: ProcessGroup, settings: Settings, redis: Redis
) -> None:
    gateway = await processes.gateway(settings)
    publisher = Publisher(redis, settings)
    async with gateway.client() as api:
        [job_id] = await new_feed_jobs(api, redis, Keys(settings.key_prefix), 1)
    await play_job(publisher, job_id, events=EVENTS, payload_bytes=PAYLOAD_BYTES)
    baseline_rss = peak_rss = rss_bytes(gateway.pid)

    async def sample_rss() -> None:
        nonlocal peak_rss
        while True:
            peak_rss = max(peak_rss, rss_bytes(gateway.pid))
            await asyncio.sleep(0.02)

    clients = [watch_client(gateway.url) for _ in range(5)]
    sampler = asyncio.create_task(sample_rss())
    try:
        watches = await asyncio.gather(*(watch_job([c], job_id, timeout=40) for c in clients))
    finally:
        sampler.cancel()
        for client in clients:
            await client.aclose()

    keys = Keys(settings.key_prefix)
    for watch in watches:
        assert (await verify(watch, redis, keys)).exact
    growth = peak_rss - baseline_rss
    assert [watch.connections for watch in watches] == [1] * 5, "readers cut while reading"
    assert growth <= RSS_GROWTH_LIMIT, f"gateway RSS grew by {growth / 2**20:.1f} MiB"
