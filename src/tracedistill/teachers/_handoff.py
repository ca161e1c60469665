"""The queue from the generation engine's producer to its workers."""

from __future__ import annotations

import collections
from typing import Generic, TypeVar

import anyio

__all__ = ["Handoff"]

T = TypeVar("T")


class Handoff(Generic[T]):
    """The queue from the producer to the workers: a deque both sides touch directly.

    A memory object stream wakes the producer for every request a worker takes once its buffer
    is full (an event-loop round trip per request); here the producer sleeps until the queue
    has drained to half (one wake-up per ``size // 2`` requests), and a worker sleeps only when
    the queue is empty. At most ``size`` requests wait at any time.
    """

    __slots__ = ("_closed", "_items", "_low", "_room", "_size", "_takers")

    def __init__(self, size: int) -> None:
        self._items: collections.deque[T] = collections.deque()
        self._size = size
        self._low = size // 2
        self._takers: collections.deque[anyio.Event] = collections.deque()
        self._room: anyio.Event | None = None
        self._closed = False

    @property
    def full(self) -> bool:
        """Whether the producer should wait (:meth:`room`) before its next :meth:`put`."""
        return len(self._items) >= self._size

    def put(self, request: T) -> None:
        """Queue a request and wake one sleeping worker, if any."""
        self._items.append(request)
        if self._takers:
            self._takers.popleft().set()

    async def room(self) -> None:
        """Wait until the queue has drained to half its size."""
        while len(self._items) > self._low:
            self._room = room = anyio.Event()
            await room.wait()

    def take_nowait(self) -> T | None:
        """The next request, or None when none is queued."""
        items = self._items
        if not items:
            return None
        request = items.popleft()
        room = self._room
        if room is not None and len(items) <= self._low:
            self._room = None
            room.set()
        return request

    async def take(self) -> T | None:
        """Wait for the next request; None once the producer closed the queue and it is empty."""
        while True:
            request = self.take_nowait()
            if request is not None or self._closed:
                return request
            woken = anyio.Event()
            self._takers.append(woken)
            try:
                await woken.wait()
            except BaseException:
                # Cancelled: a wake-up meant for this worker goes to the next sleeping one.
                if woken.is_set():
                    self._wake_one()
                else:
                    self._takers.remove(woken)
                raise

    def _wake_one(self) -> None:
        if self._takers and (self._items or self._closed):
            self._takers.popleft().set()

    def close(self) -> None:
        """No more requests will come: wake every sleeping worker (they end once it is empty)."""
        self._closed = True
        while self._takers:
            self._takers.popleft().set()
