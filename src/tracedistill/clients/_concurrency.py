"""The limiter's concurrency slots: leases, stalled attempts, gentle overload trims."""

from __future__ import annotations

import collections
import logging
import math
from collections.abc import Callable
from types import TracebackType

import anyio

from tracedistill.clients._ratelimits import Clock

__all__ = ["Lease", "Slots"]

logger = logging.getLogger("tracedistill.clients.ratelimit")


class Lease:
    """One concurrency slot, held for one attempt (``async with limiter.slot()``)."""

    __slots__ = ("_slots", "detached", "started")

    def __init__(self, slots: Slots) -> None:
        self._slots = slots
        self.started = 0.0
        self.detached = False

    async def __aenter__(self) -> Lease:
        slots = self._slots
        # A free slot with nobody queued is taken without a trip through the event loop (the
        # attempt that follows yields soon enough); otherwise wait in line.
        if slots.held < slots.total and not slots._waiting:
            slots.held += 1
        else:
            await slots.take()
        return self

    def begin(self) -> None:
        """The attempt goes on the wire now (from here on it counts as in flight)."""
        if not self.started:
            self._slots.begin(self)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        slots = self._slots
        if self.started:
            slots.end(self)
        if not self.detached:
            slots.give_back()


class Slots:
    """How many attempts may run at once, which do, and which stalled.

    Attributes:
        total: the concurrency allowed now; held: the slots attempts hold (a stalled attempt
            gave its slot back).
        concurrency_min: the lowest concurrency allowed at any time of the run.
        stalls: attempts that gave their slot back because they ran far longer than usual.
        on_detach: called with no argument when an attempt gives its slot back.
    """

    #: a burst: overloads are at least this share of the last two seconds' answers. Faults
    #: spread at random (a quarter of the answers on a flaky provider) are no burst: the
    #: failed requests back off on their own, and trimming on them only starves the run.
    BURST_SHARE = 0.5
    #: and at least this many overloads: a few answers early in a run are no evidence
    BURST_MIN = 16
    #: a trim lowers the concurrency by this factor, at most once per TRIM_EVERY seconds,
    #: never below FLOOR of the maximum
    TRIM = 0.8
    TRIM_EVERY = 1.0
    FLOOR = 0.75
    #: seconds without an overload burst after which the full concurrency comes back
    RESTORE_AFTER = 3.0

    def __init__(
        self,
        max_concurrency: int,
        min_concurrency: int,
        *,
        clock: Clock,
        stall_after_s: float | None,
    ) -> None:
        self.max_concurrency = max_concurrency
        self.min_concurrency = min_concurrency
        self.clock = clock
        self.stall_after_s = stall_after_s
        # A count and a FIFO line rather than anyio's CapacityLimiter: a slot taken and given
        # back per attempt costs two integer updates, not a set of borrowers and three calls.
        self.total = max_concurrency
        self.held = 0
        self._waiting: collections.deque[anyio.Event] = collections.deque()
        self.leases: set[Lease] = set()
        self.detached = 0
        self.stalls = 0
        self.on_detach: Callable[[], None] | None = None
        self.latencies: collections.deque[float] = collections.deque(maxlen=256)
        now = clock()
        self._inflight_area = 0.0
        self._inflight_mark = now
        self._conc = float(max_concurrency)
        self._last_trim = -math.inf
        self._last_burst = -math.inf
        self.concurrency_min = max_concurrency
        #: the concurrency is below the maximum (an overload burst trimmed it)
        self.trimmed = False
        self._warned_full = False

    @property
    def concurrency(self) -> int:
        """The concurrency allowed now."""
        return self.total

    async def take(self) -> None:
        """Wait in line (FIFO) for a slot."""
        event = anyio.Event()
        self._waiting.append(event)
        try:
            await event.wait()
        except BaseException:
            if event.is_set():
                self.give_back()  # granted while being cancelled: the next in line takes it
            else:
                self._waiting.remove(event)
            raise

    def give_back(self) -> None:
        """Free a slot: the first in line takes it."""
        self.held -= 1
        if self._waiting:
            self._grant()

    def _grant(self) -> None:
        waiting = self._waiting
        while waiting and self.held < self.total:
            self.held += 1
            waiting.popleft().set()

    def begin(self, lease: Lease) -> None:
        """Count ``lease`` in flight from now (its ``started``)."""
        now = lease.started = self.clock()
        leases = self.leases
        self._inflight_area += len(leases) * (now - self._inflight_mark)
        self._inflight_mark = now
        leases.add(lease)

    def end(self, lease: Lease) -> None:
        """Count ``lease`` done."""
        now = self.clock()
        leases = self.leases
        self._inflight_area += len(leases) * (now - self._inflight_mark)
        self._inflight_mark = now
        leases.discard(lease)
        if lease.detached:
            self.detached -= 1

    @property
    def inflight_area(self) -> float:
        """Attempt-seconds in flight up to the last lease that began or ended."""
        return self._inflight_area

    def stall_after(self) -> float | None:
        """Seconds after which a running attempt gives its slot back (None: not yet known)."""
        if self.stall_after_s is not None:
            return self.stall_after_s
        if len(self.latencies) < 20:
            return None
        ordered = sorted(self.latencies)
        p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
        return max(1.0, 4.0 * p95)

    def reap(self) -> int:
        """Give back the slots of attempts running past :meth:`stall_after`; return how many."""
        limit = self.stall_after()
        if limit is None:
            return 0
        if self.detached >= self.max_concurrency:
            self._warn_full(limit)
            return 0
        now = self.clock()
        freed = 0
        for lease in list(self.leases):
            if not lease.detached and now - lease.started > limit:
                lease.detached = True
                self.give_back()
                self.detached += 1
                self.stalls += 1
                freed += 1
                if self.on_detach is not None:
                    self.on_detach()
                if self.detached >= self.max_concurrency:
                    break
        if freed:
            logger.info("%d stalled request(s) gave their slot back (> %.1fs)", freed, limit)
        return freed

    def _warn_full(self, limit: float) -> None:
        """Say once that stalled attempts now hold slots the run cannot get back."""
        if self._warned_full:
            return
        now = self.clock()
        stuck = sum(not lease.detached and now - lease.started > limit for lease in self.leases)
        if stuck:
            self._warned_full = True
            logger.warning(
                "%d stalled requests run detached and %d more hold slots (> %.1fs without an "
                "answer): the run slows until the attempt timeout ends them. A streamed teacher "
                "(stream=True) cuts a stalled answer after its idle_timeout; a shorter timeout= "
                "ends a whole-body one sooner",
                self.detached,
                stuck,
                limit,
            )

    def trim(self, now: float) -> None:
        """An overload burst is under way: lower the concurrency gently (never below FLOOR)."""
        self._last_burst = now
        if now - self._last_trim >= self.TRIM_EVERY:
            self._last_trim = now
            floor = max(float(self.min_concurrency), self.max_concurrency * self.FLOOR)
            self._conc = max(floor, self._conc * self.TRIM)
            self._apply()

    def restore(self, now: float) -> None:
        """Bring the full concurrency back once overload bursts have stopped for a while."""
        if self._conc < self.max_concurrency and now - self._last_burst >= self.RESTORE_AFTER:
            self._conc = float(self.max_concurrency)
            self._apply()

    def _apply(self) -> None:
        target = max(self.min_concurrency, min(self.max_concurrency, int(self._conc)))
        if target != self.total:
            self.total = target
            self._grant()
        self.trimmed = self._conc < self.max_concurrency
        self.concurrency_min = min(self.concurrency_min, target)
