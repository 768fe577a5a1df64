"""The jobs one gateway process watches (`Watchlist`): a feed per job, subscribed on the
pub/sub reader while the job has subscribers here, and for `hub_linger_s` after its last one
left, so a crowd reconnecting after a network blip finds the ring still warm. Nothing else
outlives its subscribers."""

from __future__ import annotations

import asyncio

from gateway.engine.feed import Feed
from gateway.engine.reader import PubSubReader
from gateway.engine.subscriber import Subscriber
from shared.keys import Keys
from shared.settings import Settings

__all__ = ["Watchlist"]


class Watchlist(dict[str, Feed]):
    """Job id -> its feed, for every job watched here."""

    def __init__(self, keys: Keys, settings: Settings, reader: PubSubReader) -> None:
        super().__init__()
        self._keys = keys
        self._settings = settings
        self._reader = reader
        self._loop = asyncio.get_running_loop()

    def attach(self, job_id: str) -> Feed:
        """The job's feed, made and subscribed if the job was not watched, kept if lingering."""
        feed = self.get(job_id)
        if feed is None:
            channel = self._keys.live(job_id).encode()
            settings = self._settings
            feed = Feed(job_id, channel, settings.hub_ring_size, settings.hub_ring_bytes)
            self[job_id] = feed
            self._reader.subscribe(feed)
        elif feed.linger is not None:
            feed.linger.cancel()
            feed.linger = None
        return feed

    def detach(self, feed: Feed, subscriber: Subscriber) -> None:
        """`subscriber` leaves `feed`; the last one to leave starts the linger."""
        if feed.remove(subscriber) and feed.linger is None and self.get(feed.job_id) is feed:
            feed.linger = self._loop.call_later(self._settings.hub_linger_s, self._forget, feed)

    def clear(self) -> None:
        for feed in self.values():
            if feed.linger is not None:
                feed.linger.cancel()
        super().clear()

    def _forget(self, feed: Feed) -> None:
        feed.linger = None  # the timer refers to the feed: no cycle may outlive it
        if not feed.empty or self.get(feed.job_id) is not feed:
            return
        del self[feed.job_id]
        self._reader.unsubscribe(feed)
