"""What the limiter has seen: attempts sent and refused, pauses, recent answers.

These are the limiter's evidence about the provider; :mod:`~tracedistill.clients._ratemodel`
decides what it means. Every figure is kept only as long as a decision looks back.
"""

from __future__ import annotations

import collections

from tracedistill.clients._rateheaders import RateInfo
from tracedistill.clients._ratelimits import Permit

__all__ = ["Pauses", "RecentAnswers", "SendLog", "dimension_of"]

#: the span (seconds) over which 429s and overloads are compared with all answers
SHARE_WINDOW = 2.0
#: 429s are tied to load (a limit, not shared upstream capacity) only when at least this
#: share of what was sent was refused, and at least NOISE_MIN of them
NOISE_SHARE = 0.1
NOISE_MIN = 3

_Event = tuple[float, float, float]  # (sent at, input tokens, output tokens)


class Pauses:
    """Pauses every request keeps (``Retry-After`` under saturation, a used-up limit).

    Attributes:
        until: the end of the pause under way (in the past when none is).
        held_s: seconds every request was held by a pause, counted up to the last
            :meth:`account`.
    """

    __slots__ = ("_mark", "_spans", "held_s", "horizon", "until")

    def __init__(self, now: float, horizon: float) -> None:
        self.until = 0.0
        self.held_s = 0.0
        self.horizon = horizon
        self._mark = now
        self._spans: collections.deque[tuple[float, float]] = collections.deque()

    def account(self, now: float) -> None:
        """Count paused time (every request held) up to ``now``."""
        held_until = min(now, self.until)
        if held_until > self._mark:
            self.held_s += held_until - self._mark
        self._mark = max(self._mark, held_until)

    def pause(self, now: float, seconds: float) -> None:
        """Hold every request for ``seconds`` (at most 10 minutes) from ``now``."""
        self.account(now)
        self._mark = max(self._mark, now)
        until = now + min(seconds, 600.0)
        if until <= self.until:
            return
        spans = self._spans
        if spans and spans[-1][1] >= now:
            spans[-1] = (spans[-1][0], until)  # extends the pause under way
        else:
            spans.append((now, until))
        while spans and spans[0][1] < now - self.horizon:
            spans.popleft()
        self.until = until

    def within(self, start: float, end: float) -> float:
        """Seconds of [start, end] spent paused."""
        return sum(max(0.0, min(b, end) - max(a, start)) for a, b in self._spans)


class SendLog:
    """Attempts sent, and those refused with a 429, over the last ``horizon`` seconds.

    The one record of recent sends: the model reads what the provider accepted from it, and
    :class:`~tracedistill.clients._ratelimits.SecondCap` how many started in the last second.
    """

    __slots__ = ("_refused", "_sends", "first_send", "horizon")

    def __init__(self, horizon: float) -> None:
        self.horizon = horizon
        self.first_send: float | None = None
        self._sends: collections.deque[_Event] = collections.deque()
        self._refused: collections.deque[_Event] = collections.deque()

    def sent(self, now: float, input_tokens: float, output_tokens: float) -> None:
        """Record an attempt going on the wire at ``now``."""
        if self.first_send is None:
            self.first_send = now
        sends = self._sends
        sends.append((now, input_tokens, output_tokens))
        while sends[0][0] < now - self.horizon - 1.0:
            sends.popleft()

    def delayed(self, since: float, now: float) -> None:
        """Count the attempts recorded since ``since`` as sent at ``now``.

        For attempts held up after they were recorded (the first request, setting up the
        client, holds the event loop): they went on the wire only when the loop ran again,
        bunched with what was held back meanwhile, and the provider's window counts them there.
        """
        sends = self._sends
        moved: list[_Event] = []
        while sends and sends[-1][0] >= since:
            moved.append(sends.pop())
        sends.extend(
            (max(at, now), tokens_in, tokens_out) for at, tokens_in, tokens_out in moved[::-1]
        )

    def earliest(self) -> float | None:
        """When the oldest attempt still recorded went on the wire (None: none recorded).

        Early in a run, this is the first send as :meth:`delayed` re-stamped it (when it
        really left, after the client's set-up), not when it was first recorded.
        """
        sends = self._sends
        return sends[0][0] if sends else self.first_send

    def nth_last(self, n: int) -> float | None:
        """When the ``n``-th most recent attempt was sent (None: fewer were recorded)."""
        sends = self._sends
        return sends[-n][0] if 0 < n <= len(sends) else None

    def refused(self, permit: Permit, now: float) -> None:
        """Record that the attempt holding ``permit`` got a 429."""
        refused = self._refused
        refused.append((permit.sent_at, float(permit.input_tokens), float(permit.output_tokens)))
        while refused and refused[0][0] < now - self.horizon - 1.0:
            refused.popleft()

    def accepted_rate(
        self, name: str, sent: float, pauses: Pauses | None, *, since: float | None = None
    ) -> float | None:
        """What the provider accepted per second in the span before ``sent`` (None: too early).

        The span is at most ``horizon`` and never longer than the run: an early 429
        overestimates (more 429s correct it), it never underestimates (which only slow probing
        would undo). With ``pauses``, the time every request was paused is left out of it;
        with ``since``, the span starts no earlier than that (and lasts at least 2 s).
        """
        if self.first_send is None:
            return None
        first = self.first_send if since is None else max(self.first_send, min(since, sent - 2.0))
        span = max(0.05, min(self.horizon, sent - first))
        start = sent - span
        if pauses is not None:
            span = max(0.05, span - pauses.within(start, sent))
        # Attempts still in flight count as accepted: a 429 comes back at once, a success
        # only after the answer is written, and waiting for it would underestimate.
        return self.accepted_between(name, start, sent) / span

    def accepted_between(self, name: str, start: float, end: float) -> float:
        """The amount of dimension ``name`` the provider accepted of what was sent within
        [start, end] (attempts still in flight count as accepted).
        """
        refused = _sum_since(self._refused, name, start, end)
        return max(0.0, _sum_since(self._sends, name, start, end) - refused)

    def refused_share(self, name: str, sent: float) -> float:
        """The share of the attempts sent in the span before ``sent`` that got a 429."""
        if self.first_send is None:
            return 0.0
        start = sent - max(0.05, min(self.horizon, sent - self.first_send))
        sent_total = _sum_since(self._sends, "requests", start, sent)
        refused = _sum_since(self._refused, "requests", start, sent)
        return refused / sent_total if sent_total else 0.0

    def tied_to_load(
        self, name: str, sent: float, share: float, least: int = 5, since: float | None = None
    ) -> bool:
        """Whether the 429s in the span before ``sent`` (from ``since``, if later) look tied to
        load: at least ``least`` of them, and at least ``share`` of the attempts sent (a few
        scattered refusals, or a small sample's chance share early in a run, are not).
        """
        if self.first_send is None:
            return False
        start = sent - max(0.05, min(self.horizon, sent - self.first_send))
        if since is not None and since > start:
            start = since
        sent_total = _sum_since(self._sends, "requests", start, sent)
        refused = _sum_since(self._refused, "requests", start, sent)
        return refused >= least and refused >= share * sent_total


class RecentAnswers:
    """429s, overloads and all answers of the last two seconds: the shares decisions use."""

    __slots__ = ("answers", "overloads", "throttles")

    def __init__(self) -> None:
        self.throttles: collections.deque[float] = collections.deque()
        self.overloads: collections.deque[float] = collections.deque()
        self.answers: collections.deque[float] = collections.deque()  # includes overloads

    def forget_before(self, horizon: float) -> None:
        """Drop 429s, overloads and answers older than ``horizon``."""
        for times in (self.throttles, self.overloads, self.answers):
            while times and times[0] < horizon:
                times.popleft()

    def answer(self, now: float) -> None:
        """Count an answer the provider's rate limiter let through (any answer but a 429)."""
        answers = self.answers
        answers.append(now)
        # Only when the oldest answer is out of the window: the readers forget what is old
        # before they count, so 429s and overloads may wait until then.
        horizon = now - SHARE_WINDOW
        if answers[0] < horizon:
            self.forget_before(horizon)

    def throttle(self, now: float) -> None:
        """Count a 429."""
        self.throttles.append(now)

    def overload(self, now: float) -> None:
        """Count an overload (it is an answer too)."""
        self.answers.append(now)
        self.overloads.append(now)
        self.forget_before(now - SHARE_WINDOW)

    def saturated(self, now: float, log: SendLog | None = None) -> bool:
        """Whether 429s are a large share of the last two seconds' answers.

        With a ``log`` of the attempts sent, they must also be a tenth of those sent in these
        seconds: answers lag what was sent, and at the start of a run a few 429s not tied to
        load (shared upstream capacity) come back before any answer, a large share of none.
        """
        self.forget_before(now - SHARE_WINDOW)
        recent = len(self.throttles)
        if recent < 3 or recent < 0.25 * (recent + len(self.answers)):
            return False
        if log is None or log.first_send is None:
            return True  # no attempt recorded (outcomes reported without permits)
        return log.tied_to_load("requests", now, NOISE_SHARE, NOISE_MIN, now - SHARE_WINDOW)

    def overload_share(self, now: float) -> tuple[int, int]:
        """Overloads and answers of the last two seconds."""
        self.forget_before(now - SHARE_WINDOW)
        return len(self.overloads), len(self.answers)


def _sum_since(events: collections.deque[_Event], name: str, start: float, end: float) -> float:
    """The amount of dimension ``name`` in the events sent within [start, end]."""
    total = 0.0
    for at, tokens_in, tokens_out in reversed(events):
        if at > end:
            continue
        if at < start:
            break
        if name == "requests":
            total += 1.0
        elif name == "input":
            total += tokens_in
        elif name == "output":
            total += tokens_out
        else:
            total += tokens_in + tokens_out
    return total


def dimension_of(info: RateInfo | None) -> str:
    """Which limit a 429 was about, from its headers (requests when they do not say)."""
    if info is not None:
        for name, _reset in info.exhausted():
            if name in ("input", "output"):
                return name
            if name == "tokens" and info.combined_tokens:
                return "tokens"
    return "requests"
