"""Cost: prices, per-trace cost, and a hard budget that refuses to start a request past it.

The cost of a trace is the provider's own figure when it reports one (OpenRouter's
``usage.cost``), else the tokens times the per-million-token prices given by the user. A
:class:`Budget` holds a cap in USD: a request starts only if the spend so far plus what every
request in flight may still cost plus this request's worst case stays within the cap.
"""

from __future__ import annotations

import math
from typing import Any

import anyio
import attrs

from tracedistill.errors import BudgetExceededError, ConfigurationError
from tracedistill.records import TokenUsage

__all__ = ["Budget", "Pricing", "Reservation"]


def _price(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, int | float) or value < 0 or not math.isfinite(value):
        raise ConfigurationError(f"Pricing.{attribute.name} must be a price >= 0, got {value!r}")


@attrs.frozen(slots=True, kw_only=True)
class Pricing:
    """Prices in USD per million tokens.

    Args:
        input_per_million: price of a million prompt tokens.
        output_per_million: price of a million completion tokens (reasoning included).
    """

    input_per_million: float = attrs.field(converter=float, validator=_price)
    output_per_million: float = attrs.field(converter=float, validator=_price)

    def cost(self, usage: TokenUsage) -> float:
        """The cost of a response with this usage."""
        return (
            usage.prompt_tokens * self.input_per_million
            + usage.completion_tokens * self.output_per_million
        ) / 1e6

    def worst_case(self, input_tokens: int, max_tokens: int) -> float:
        """The most a request can cost: its prompt plus ``max_tokens`` of completion."""
        return (input_tokens * self.input_per_million + max_tokens * self.output_per_million) / 1e6


@attrs.define(slots=True)
class Reservation:
    """The part of the budget one request in flight holds until it is settled."""

    amount: float
    settled: bool = False


class Budget:
    """A hard cap on spend in USD, shared by every request of a run.

    Args:
        limit_usd: the cap (None: no cap, spend is only counted).
        spent_usd: what was already spent (a resumed run passes the store's spend).

    A request's reservation is its worst-case cost when prices are known. When they are not (the
    provider reports cost after the fact), it is the largest cost seen per request so far, and
    until a first cost is known only one request is in flight, so the cap is never passed by
    more than the spread between requests.
    """

    def __init__(self, limit_usd: float | None = None, *, spent_usd: float = 0.0) -> None:
        if limit_usd is not None and (limit_usd < 0 or not math.isfinite(limit_usd)):
            raise ConfigurationError(f"budget_usd must be >= 0, got {limit_usd!r}")
        self.limit_usd = limit_usd
        self.spent_usd = float(spent_usd)
        self.reserved_usd = 0.0
        self.max_seen_usd: float | None = None
        self._inflight = 0
        self._changed = anyio.Event()
        self._closed = anyio.Event()
        #: mirrors ``_closed``: read once per settled request, where an attribute costs less
        self._stopping = False

    @property
    def exhausted(self) -> bool:
        """Whether nothing more can be spent."""
        return self.limit_usd is not None and self.spent_usd >= self.limit_usd

    @property
    def remaining_usd(self) -> float | None:
        """What is left of the cap (None: no cap)."""
        return None if self.limit_usd is None else max(0.0, self.limit_usd - self.spent_usd)

    def close(self) -> None:
        """Wake every waiter; they raise BudgetExceededError."""
        self._stopping = True
        self._closed.set()
        self._changed.set()

    def reserve_uncapped(self) -> Reservation:
        """What :meth:`reserve` returns without a cap (``limit_usd`` None), without awaiting:
        nothing is priced and nobody waits.
        """
        if self.limit_usd is not None:
            raise ValueError("this budget has a cap: reserve() prices and may wait")
        self._inflight += 1
        return Reservation(0.0)

    async def reserve(self, worst_case_usd: float | None) -> Reservation:
        """Wait until a request with this worst-case cost may start, and reserve it.

        Raises:
            BudgetExceededError: the request could push spend past the cap even once every
                request in flight is settled (or the budget was closed).
        """
        if self.limit_usd is None:
            self._inflight += 1
            return Reservation(0.0)
        while True:
            if self._closed.is_set():
                raise BudgetExceededError("the run is stopping; no new request starts")
            estimate = worst_case_usd if worst_case_usd is not None else self.max_seen_usd
            if estimate is None:
                fits = self._inflight == 0 and self.spent_usd < self.limit_usd
                estimate = 0.0
            else:
                fits = self.spent_usd + self.reserved_usd + estimate <= self.limit_usd
            if fits:
                self._inflight += 1
                self.reserved_usd += estimate
                return Reservation(estimate)
            if self._inflight == 0:
                raise BudgetExceededError(
                    f"budget of ${self.limit_usd:.4f} reached: ${self.spent_usd:.4f} spent, the "
                    f"next request may cost up to ${estimate:.4f}"
                )
            # Requests in flight hold reservations that may free room when they settle.
            event = self._changed
            await event.wait()

    def charge(self, actual_usd: float) -> None:
        """Count spend that had no reservation (results of a batch submitted by an earlier run)."""
        self.spent_usd += actual_usd

    def settle(self, reservation: Reservation, actual_usd: float | None) -> None:
        """Replace a reservation with what the request really cost (None: nothing known)."""
        if reservation.settled:
            return
        reservation.settled = True
        self._inflight -= 1
        self.reserved_usd = max(0.0, self.reserved_usd - reservation.amount)
        if actual_usd:
            self.spent_usd += actual_usd
            if self.max_seen_usd is None or actual_usd > self.max_seen_usd:
                self.max_seen_usd = actual_usd
        if self.limit_usd is None and not self._stopping:
            return  # without a cap nobody waits for room (a new Event per request is costly)
        event, self._changed = self._changed, anyio.Event()
        event.set()
