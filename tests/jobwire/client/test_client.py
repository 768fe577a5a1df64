"""`Client` and `SyncClient` as a new user meets them: the gateway and key from the environment
like the CLI's, and a URL without a scheme refused at once (the README's examples run in
tests/test_readme.py)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from jobwire import Client, SyncClient
from jobwire.client import InvalidGatewayURL, RequestRejected
from jobwire.client.target import API_KEY_ENV, URL_ENV
from shared.settings import Settings
from tests.auth_support import ALICE_KEY, with_auth
from tests.conftest import Gateway, RunWorker, StartGateway
from tests.support import free_port, scaled


@pytest.fixture
async def keyed_stack(
    start_worker: RunWorker, start_gateway: StartGateway, settings: Settings
) -> Gateway:
    """A worker and a gateway that wants API keys."""
    await start_worker()
    return await start_gateway(with_auth(settings))


async def test_the_gateway_and_the_key_come_from_the_environment(
    keyed_stack: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(URL_ENV, keyed_stack.url)
    monkeypatch.setenv(API_KEY_ENV, ALICE_KEY)

    async with Client() as client:
        job = await client.submit("demo.countdown", seconds=0.05, steps=1)
        assert await asyncio.wait_for(job.wait(), scaled(10)) == {"counted": 1}

    def script() -> object:
        with SyncClient() as client:
            return client.submit("demo.countdown", seconds=0.05, steps=1).wait(scaled(10))

    assert await asyncio.to_thread(script) == {"counted": 1}


async def test_what_is_given_wins_over_the_environment(
    keyed_stack: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(URL_ENV, f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv(API_KEY_ENV, "not-a-key-of-this-gateway")

    async with Client(keyed_stack.url, ALICE_KEY) as client:
        job = await client.submit("demo.countdown", seconds=0.05, steps=1)
        assert await asyncio.wait_for(job.wait(), scaled(10)) == {"counted": 1}
    async with Client(keyed_stack.url) as client:
        with pytest.raises(RequestRejected) as refused:
            await client.submit("demo.countdown")
    # Refused as the environment's key (no key at all would be told to send one).
    assert (refused.value.status_code, refused.value.detail) == (401, "the API key is not valid")


@pytest.mark.parametrize("url", ["127.0.0.1:8000", "localhost:8000", "ftp://host", "http://"])
async def test_a_gateway_url_that_is_not_http_is_refused_at_once(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads = threading.active_count()

    with pytest.raises(InvalidGatewayURL) as refused:
        Client(url)
    with pytest.raises(InvalidGatewayURL):
        SyncClient(url)
    monkeypatch.setenv(URL_ENV, url)
    with pytest.raises(InvalidGatewayURL):
        Client()

    assert "http://" in str(refused.value)
    assert isinstance(refused.value, ValueError)
    assert threading.active_count() == threads  # SyncClient started no loop thread for it
