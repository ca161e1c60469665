"""The limiter's belief about the provider's limits: configured, announced, learned.

One :class:`RateModel` per limiter keeps, per paced dimension, the configured limit, the one
the provider's headers announce, and a learned rate, and sets the token buckets to the rate
allowed now. See :mod:`tracedistill.clients.ratelimit` for the model in words.
"""

from __future__ import annotations

import collections
import logging
import math

from tracedistill.clients._rateevidence import (
    NOISE_MIN,
    NOISE_SHARE,
    SHARE_WINDOW,
    Pauses,
    RecentAnswers,
    SendLog,
)
from tracedistill.clients._rateheaders import RateInfo
from tracedistill.clients._ratelimits import (
    DIMENSIONS,
    Clock,
    RateLimits,
    TokenBucket,
    capacity_for,
    per_second,
)
from tracedistill.clients._ratewindow import Reopenings

__all__ = ["RateModel"]

logger = logging.getLogger("tracedistill.clients.ratelimit")

#: the least rate (per second) a dimension is ever paced at: one a minute
MIN_RATE = 1.0 / 60.0


class RateModel:
    """Per dimension: the trusted limit, a learned rate, and the bucket pacing the allowed one.

    Attributes:
        buckets: the token bucket of each dimension (None: unlimited).
        learned: the rate (per second) learned from 429s, while it is below the trusted one.
        ceiling: per dimension, a rate (per second) that replaced a trusted limit found wrong
            (None: the trusted limit stands); recovery above it is a slow probe.
        rate_min: the lowest request rate (per second) allowed at any time of the run.
        cuts: times an allowed rate was lowered.
        last_429: when the last 429 came back.
        budgets: per dimension, a header limit whose reset shows it is not per minute (an
            hourly or daily budget): ``(limit, seconds to its reset)``. It is never a rate.
    """

    #: 429 episodes below a trusted limit, within EVIDENCE_SPAN seconds, that lower it
    EVIDENCE = 3
    EVIDENCE_SPAN = 30.0
    #: a trusted limit is "consistent" with a 429 when the provider accepted at least this share
    CONSISTENT = 0.9
    #: a second cut below a trusted limit within this span, at about the same rate (within
    #: DEMOTE_RATIO), shows the trusted limit is wrong: the learned rate replaces it
    DEMOTE_SPAN = 120.0
    DEMOTE_RATIO = 1.5
    #: above a ceiling that replaced a trusted limit, recovery probes at +PROBE per second,
    #: after PROBE_QUIET seconds without a 429
    PROBE = 0.02
    PROBE_QUIET = 3.0
    #: with no trusted limit, 429s for requests sent this long after a cut teach nothing more
    SETTLE = 1.0
    #: ...and two cuts within this ratio of each other confirm the rate learned
    CONFIRM_RATIO = 1.15
    #: seconds of the rate OpenAI's combined tokens-per-minute bucket holds
    TOKENS_MINUTE = 60.0
    #: seconds of the rate the output-token bucket holds at least: it paces answers on their
    #: mean length and settles each one's difference, so it must hold a few answers' swings
    OUTPUT_SECONDS = 2.0
    #: a header limit is a per-minute rate only when its reset is at most this far away: a
    #: minute, plus a few seconds of clock skew (Anthropic's resets are absolute times)
    PER_MINUTE_RESET = 65.0

    def __init__(self, limits: RateLimits, *, clock: Clock) -> None:
        self.limits = limits
        self._clock = clock
        self.configured: dict[str, float | None] = {
            "requests": per_second(limits.requests_per_minute),
            "input": per_second(limits.input_tokens_per_minute),
            "output": per_second(limits.output_tokens_per_minute),
            "tokens": per_second(limits.tokens_per_minute),
        }
        self.header: dict[str, float | None] = dict.fromkeys(DIMENSIONS)
        self.learned: dict[str, float | None] = dict.fromkeys(DIMENSIONS)
        self.ceiling: dict[str, float | None] = dict.fromkeys(DIMENSIONS)
        #: (when, rate learned) of the last cut below a trusted limit, per dimension
        self._last_cut: dict[str, tuple[float, float] | None] = dict.fromkeys(DIMENSIONS)
        self._cut_at: dict[str, float] = dict.fromkeys(DIMENSIONS, -math.inf)
        self._prev_429: dict[str, float] = dict.fromkeys(DIMENSIONS, -math.inf)
        self._episode: dict[str, float] = dict.fromkeys(DIMENSIONS, -math.inf)
        #: per dimension with no trusted limit: whether two cuts agreed on the learned rate
        self._confirmed: dict[str, bool] = dict.fromkeys(DIMENSIONS, False)
        #: per dimension with no trusted limit: about when the first requests reached the provider
        self._reached: dict[str, float | None] = dict.fromkeys(DIMENSIONS)
        #: per dimension with no trusted limit: the episode of the first cut
        self._first_episode: dict[str, float | None] = dict.fromkeys(DIMENSIONS)
        #: per dimension with no trusted limit: quiet seconds before probing above the estimate
        self._quiet: dict[str, float] = dict.fromkeys(DIMENSIONS, self.PROBE_QUIET)
        #: ...counted from the last 429 tied to load (clustered, or a tenth of what was sent)
        self._last_tied: dict[str, float] = dict.fromkeys(DIMENSIONS, -math.inf)
        #: per dimension with no trusted limit: the windows read from their reopenings
        self._reopenings = Reopenings()
        #: per dimension with no trusted limit: the earliest time the first episode's 429s
        #: said the provider's window reopens (each one's arrival plus its Retry-After)
        self._reopen_by: dict[str, float] = dict.fromkeys(DIMENSIONS, math.inf)
        self.buckets: dict[str, TokenBucket | None] = dict.fromkeys(DIMENSIONS)
        #: no bucket paces anything (no limit known): requests start without one
        self.unpaced = True
        self.rate_min: float | None = None
        for name in DIMENSIONS:
            self.recompute(name)
        self._evidence: dict[str, collections.deque[float]] = {
            name: collections.deque() for name in DIMENSIONS
        }
        self.cuts = 0
        self.last_429 = -math.inf
        self.budgets: dict[str, tuple[float, float | None]] = {}
        self._last_raise = clock()

    def trusted(self, name: str) -> float | None:
        """The trusted limit (per second) of one dimension: configured, else from headers."""
        configured = self.configured[name]
        return configured if configured is not None else self.header[name]

    def ceiling_of(self, name: str) -> float | None:
        """The highest rate (per second) allowed: the trusted limit, or the ceiling replacing it."""
        ceiling = self.ceiling[name]
        return ceiling if ceiling is not None else self.trusted(name)

    def allowed(self, name: str) -> float | None:
        """The rate (per second) allowed now: the learned one, else the ceiling."""
        learned = self.learned[name]
        return learned if learned is not None else self.ceiling_of(name)

    def refundable(self) -> bool:
        """Whether a token bucket paces requests (finished requests refund unused tokens)."""
        buckets = self.buckets
        return not (
            buckets["input"] is None and buckets["output"] is None and buckets["tokens"] is None
        )

    def recompute(self, name: str) -> None:
        """Set bucket ``name`` to the rate allowed now, ``headroom`` below it."""
        allowed = self.allowed(name)
        if allowed is None:
            self.buckets[name] = None
            self.unpaced = all(bucket is None for bucket in self.buckets.values())
            return
        self.unpaced = False
        pace = max(allowed * (1.0 - self.limits.headroom), MIN_RATE)
        capacity = capacity_for(pace, self._burst_seconds(name))
        bucket = self.buckets[name]
        if bucket is None:
            bucket = TokenBucket(pace, capacity, clock=self._clock)
            if name == "requests":
                bucket.level = min(1.0, capacity)  # start at the rate, not with a burst
            self.buckets[name] = bucket
        elif bucket.rate != pace:
            bucket.set_rate(pace, capacity)
        if name == "requests" and (self.rate_min is None or allowed < self.rate_min):
            self.rate_min = allowed

    def _burst_seconds(self, name: str) -> float:
        """Seconds of the allowed rate a bucket may spend at once.

        A request rate is at or near the provider's limit (trusted, or learned by saturating
        its window): a burst after a pause or a starved event loop (up to ``burst_seconds`` of
        it, on top of the rate) would overfill a short window, so requests resume at the rate.
        """
        if name == "requests":
            return min(self.limits.burst_seconds, 0.15)  # a few requests of wake-up lateness
        if name == "tokens":
            # OpenAI's combined tokens per minute: a bucket of a minute of the limit, charged
            # the prompt plus the whole max_tokens when a request is admitted, nothing given
            # back. Mirrored as it is: a half-second bucket with the unused part refunded
            # sends far more than the provider admits when answers are short.
            return self.TOKENS_MINUTE
        if name == "output":
            # Anthropic's output bucket holds a minute; the reservation mirror keeps to that
            return max(self.limits.burst_seconds, self.OUTPUT_SECONDS)
        return self.limits.burst_seconds

    def recover(self, now: float, resumed: float = -math.inf) -> None:
        """Raise learned rates back once 429s stop (at most every 0.2 s).

        ``resumed``: when the last pause every request kept ended. Rates rise only while
        requests could be sent (a probe counting a 10 s ``Retry-After`` resumed 22% higher).
        """
        if not self.limits.adaptive or now - self._last_raise < 0.2:
            return
        step = min(now - self._last_raise, now - resumed)
        self._last_raise = now
        if step <= 0.0:
            return  # paused
        quiet = now - self.last_429
        for name in DIMENSIONS:
            learned = self.learned[name]
            ceiling = self.ceiling_of(name)
            if learned is None:
                if self.ceiling[name] is not None and quiet >= self.PROBE_QUIET:
                    self._probe(name, step)
                continue
            if ceiling is not None:
                if quiet < 1.0:
                    continue
                raised = learned * (1.25**step)  # back to the ceiling within seconds
                self.learned[name] = None if raised >= ceiling else raised
            elif self._confirmed[name]:
                # an estimate two throttling episodes agreed on, or one from a fresh window's
                # burst: probe above it slowly, after a window without 429s tied to load
                probing = now - self._last_tied[name] - self._quiet[name]
                if probing <= 0.0:
                    continue
                self.learned[name] = learned * ((1.0 + self.PROBE) ** min(step, probing))
            else:
                probing = now - self._last_tied[name] - 2.0
                if probing <= 0.0:
                    continue
                # probe an unknown limit gently
                self.learned[name] = learned * (1.05 ** min(step, probing))
            self.recompute(name)

    def _probe(self, name: str, step: float) -> None:
        """Raise a ceiling that replaced a trusted limit slowly, up to that limit."""
        ceiling = self.ceiling[name]
        trusted = self.trusted(name)
        if ceiling is None:
            return
        raised = ceiling * ((1.0 + self.PROBE) ** step)
        self.ceiling[name] = None if trusted is None or raised >= trusted else raised
        self.recompute(name)

    def adopt(self, info: RateInfo) -> None:
        """Trust the per-minute limits a response's headers announce (where none is configured).

        A limit is per minute only when its reset is at most a minute away (OpenAI's ``1s`` or
        ``6m0s``, Anthropic's RFC 3339 time): a later reset, or none, shows an hourly or daily
        count (some OpenAI-compatible hosts send requests per day in
        ``x-ratelimit-limit-requests``), kept in :attr:`budgets` and never paced as a rate.
        Once a dimension's limit has shown such a reset it stays a budget: a lightly used daily
        budget can show a short reset too.
        """
        for name, limit, reset in (
            ("requests", info.requests_limit, info.requests_reset),
            ("input", info.input_limit, info.input_reset),
            ("output", info.output_limit, info.output_reset),
            ("tokens", info.tokens_limit if info.combined_tokens else None, info.tokens_reset),
        ):
            if not limit or self.configured[name] is not None:
                continue
            if reset is None or reset > self.PER_MINUTE_RESET:
                self._budget(name, limit, reset)
                continue
            if name in self.budgets:
                continue
            rate = limit / 60.0
            if self.header[name] != rate:
                self.header[name] = rate
                learned = self.learned[name]
                if learned is not None and learned >= rate:
                    self.learned[name] = None
                ceiling = self.ceiling[name]
                if ceiling is not None and ceiling >= rate:
                    self.ceiling[name] = None
                self.recompute(name)
        if info.combined_tokens and info.tokens_remaining is not None:
            self._spent_elsewhere(info.tokens_remaining)

    def _spent_elsewhere(self, remaining: float) -> None:
        """Lower the combined-tokens mirror to what the provider's bucket had left.

        The mirror holds at most what the provider's did when it answered (it took every
        charge the provider took, and any made since): more means tokens were spent elsewhere
        (another client on the key). Never raised: a charge sent after the provider wrote
        ``remaining`` is not in it yet.
        """
        bucket = self.buckets["tokens"]
        if bucket is not None and bucket.wait_time(0.0) == 0.0 and bucket.level > remaining:
            bucket.empty(max(0.0, remaining))

    def _budget(self, name: str, limit: float, reset: float | None) -> None:
        """Record a header limit that is not per minute; drop it if it was taken for one."""
        if name not in self.budgets:
            logger.info(
                "rate-limit headers: the %s limit %g resets in %s: a budget, not a per-minute "
                "rate; not paced",
                name,
                limit,
                "(not sent)" if reset is None else f"{reset:.0f} s",
            )
        self.budgets[name] = (limit, reset)
        if self.header[name] is not None:
            self.header[name] = None
            self.recompute(name)

    def learn(
        self,
        name: str,
        sent: float,
        now: float,
        *,
        log: SendLog,
        pauses: Pauses,
        recent: RecentAnswers,
        retry_after: float | None = None,
    ) -> None:
        """Learn from a 429 on dimension ``name`` (sent at ``sent``), if the evidence holds.

        ``retry_after``: the seconds the provider said to wait (``Retry-After`` or the reset of
        a used-up limit), if it said.
        """
        if now - self._prev_429[name] >= 1.0:
            self._episode[name] = now  # 429s after a quiet second: a new throttling episode
        self._prev_429[name] = now
        if self.trusted(name) is None:
            self._learn_untrusted(
                name, sent, now, log=log, pauses=pauses, recent=recent, retry_after=retry_after
            )
            return
        if sent < self._cut_at[name]:
            return  # sent at the rate already cut: it says nothing about the new one
        measured = log.accepted_rate(name, sent, pauses)
        if measured is None:
            return
        floor = 1.0 / 60.0 if name == "requests" else 1.0
        measured = loose = max(measured, floor)
        trusted = self.trusted(name)
        if trusted is not None:
            # Against a trusted limit (or a ceiling replacing it) the rate learned must be
            # conservative: the provider's window includes the pauses it asked for.
            measured = max(log.accepted_rate(name, sent, None) or measured, floor)
        if trusted is not None and self.ceiling[name] is None:
            if measured >= self.CONSISTENT * trusted:
                return  # the provider was accepting the trusted rate: nothing to learn
            # ...but the evidence against it must not be only our own pauses: a provider that
            # accepted the trusted rate while nothing was paused, and refused few requests
            # (429s not tied to load), says nothing against it.
            if loose >= self.CONSISTENT * trusted and log.refused_share(name, sent) < 0.1:
                return
            # ...nor does a 429 not tied to load: a provider over its limit refuses a large
            # share of what it is sent, in clusters. A few scattered refusals (shared upstream
            # capacity) from a client offering less than the limit (held by its concurrency or
            # a loaded machine) read as a low accepted rate, and cut a correct limit step by
            # step into a ceiling far under it (0.77-0.79 of the limit at 3% random 429s).
            if not recent.saturated(now, log) and not log.tied_to_load(name, sent, NOISE_SHARE):
                return
            if self.learned[name] is None and not self._repeated(name, now):
                return
        allowed = self.allowed(name)
        clustered = recent.saturated(now, log)
        if allowed is None and not clustered:
            return  # a lone 429 with no limit known: only that request waits
        near = allowed is not None and measured >= allowed * (1.0 - self.limits.headroom - 0.04)
        if near and (not clustered or measured >= (allowed or 0.0)):
            return  # close to what is allowed: a lone 429 teaches nothing
        if trusted is not None:
            # what the provider accepted since the last cut: the rate of the current regime,
            # not diluted by the pauses of the first throttling episode
            recent_rate = log.accepted_rate(name, sent, None, since=self._cut_at[name])
            unpaused = log.accepted_rate(name, sent, pauses, since=self._cut_at[name])
            regime = max(measured, recent_rate or 0.0)
            measured = self._demote(name, now, measured, regime, allowed, unpaused)
        self.learned[name] = measured
        self._cut_at[name] = now
        self.cuts += 1
        self.recompute(name)
        logger.info(
            "rate limited: the provider accepted %.1f %s/min; keeping to that",
            measured * 60.0,
            "requests" if name == "requests" else f"{name} tokens",
        )

    def _learn_untrusted(
        self,
        name: str,
        sent: float,
        now: float,
        *,
        log: SendLog,
        pauses: Pauses,
        recent: RecentAnswers,
        retry_after: float | None,
    ) -> None:
        """Learn from a 429 on a dimension with no trusted limit (none configured or announced).

        The first estimate comes from the fresh window's burst (see :meth:`_first_burst`).
        Later ones are what the provider accepted since the first requests reached it (up to
        a minute), the client's short pauses included: a provider's window refills during
        them, so leaving them out would credit it with the bursts that follow. A span that
        was mostly paused (a long ``Retry-After``) is measured without its pauses. Only 429s
        tied to load (saturation: a large share of recent answers; or a tenth of what was sent
        since the last cut and over the span measured) teach anything, or a lone 429 while
        probing above the rate last learned (back to what was accepted, never under that rate);
        a second cut at about the same rate confirms the estimate, after which recovery above
        it is a slow probe.
        """
        self._reopenings.refused(name, sent, now)
        allowed = self.allowed(name)
        clustered = recent.saturated(now, log)
        # since the last cut: the refusals of a rate already cut say nothing of the new one
        tied = clustered or log.tied_to_load(name, sent, NOISE_SHARE, since=self._cut_at[name])
        if tied:
            self._last_tied[name] = now
        if self._first_burst(
            name, now - sent, now, allowed, log=log, recent=recent, retry_after=retry_after
        ):
            return
        last = self._last_cut[name]
        probing = allowed is not None and last is not None and allowed > 1.01 * last[1]
        if not (tied or probing) or (allowed is None and not clustered):
            # a lone 429 with no limit known: only that request waits; nor do 429s not tied to
            # load at or under the rate last learned (shared upstream capacity: 3% of them cut
            # a learned rate to 0.76-0.79 of the limit in five minutes). Probing above it, a
            # lone 429 is how a window's limit shows first.
            return
        self._last_tied[name] = now  # evidence: the probe waits for a quiet window again
        if clustered:
            self._watch_reopening(name, now, sent, log, retry_after)
        if sent < self._cut_at[name] + self.SETTLE:
            return  # the provider's window still holds what was sent before the cut
        since = self._span_start(name, log, now, sent)
        if not (clustered or probing or log.tied_to_load(name, sent, NOISE_SHARE, since=since)):
            # tied to load only by a small sample's chance since the last cut (6% random 429s
            # put 5 in the first 40 sent): over the span measured they are noise
            return
        measured = log.accepted_rate(name, sent, None, since=since)
        unpaused = log.accepted_rate(name, sent, pauses, since=since)
        if measured is None or unpaused is None or unpaused <= 0.0:
            return  # nothing accepted in the span: no rate to learn; the back-off waits
        if measured < 0.5 * unpaused:
            measured = unpaused  # a span mostly paused (a long Retry-After) is no rate sample
        if allowed is not None and (
            measured >= allowed
            or (not clustered and measured >= allowed * (1.0 - self.limits.headroom - 0.04))
        ):
            return  # the provider accepted about what is allowed: nothing to learn
        if allowed is not None and not clustered:
            measured = self._unclustered(name, measured, allowed, last)
        self._cut_again(name, now, measured, last)

    def _watch_reopening(
        self, name: str, now: float, sent: float, log: SendLog, retry_after: float | None
    ) -> None:
        """Watch for the reopening of the window a saturated episode shut (see
        :meth:`accepted`); with ``Retry-After`` the first window is left to :meth:`_first_burst`.
        """
        opened = self._reopenings.last(name)
        if retry_after:
            if opened is None and self._reopen_by[name] < now:
                opened = self._reopen_by[name]  # the first window's reopening, as told
            if opened is None:
                return  # the first window is read from its burst (see _first_burst)
        if self._reopenings.shut(name, self._episode[name], opened):
            self._reached_at(name, log, now - sent)

    def _unclustered(
        self, name: str, measured: float, allowed: float, last: tuple[float, float] | None
    ) -> float:
        """The rate to keep to after 429s not clustered, ``measured`` accepted over the span."""
        if last is not None and allowed > 1.01 * last[1]:
            # probing: the limit lies between the rate last learned and the probe's. A sliding
            # window shows it a window late, the probe a window's climb past it (cut 5% under
            # the rate that drew it, runs kept to 1.10x the limit); never under the rate last
            # learned (6% random 429s cut a run to 0.83 of the limit)
            return max(measured, last[1])
        # far below what is allowed: the long span may hold a slow start (or a client too
        # loaded to send what is allowed), so step down gently and let further 429s say more
        return max(measured, (0.95 if self._confirmed[name] else 0.9) * allowed)

    def _span_start(self, name: str, log: SendLog, now: float, sent: float) -> float | None:
        """Where the span a 429 (of a request sent at ``sent``) is measured over starts: when
        the first requests reached the provider, or once known when its window reopened (the
        opening allowance is no sample of the rate).
        """
        since = self._reached_at(name, log, now - sent)
        reopened = self._reopenings.last(name)
        if reopened is None and self._reopen_by[name] < now:
            reopened = self._reopen_by[name]  # when the first Retry-After said it would
        return since if reopened is None else reopened

    def _cut_again(
        self, name: str, now: float, measured: float, last: tuple[float, float] | None
    ) -> None:
        """Cut to ``measured``; a cut soon after the last at about its rate confirms both."""
        if (
            last is not None
            and now - last[0] <= self.DEMOTE_SPAN
            and 1.0 / self.CONFIRM_RATIO <= measured / last[1] <= self.CONFIRM_RATIO
        ):
            self._confirmed[name] = True
        self._last_cut[name] = (now, measured)
        self._cut(name, now, measured)

    @property
    def awaiting_reopen(self) -> bool:
        """Whether a dimension's window is shut and its reopening not yet seen."""
        return self._reopenings.awaiting

    def accepted(self, sent: float, now: float, log: SendLog) -> None:
        """Learn from a request sent at ``sent`` and accepted, while a window is shut.

        The first request the provider accepts after a saturated episode shows when its
        window reopened, and the window's rate: what it accepted from its opening to its
        shutting over the time to the reopening (see
        :class:`~tracedistill.clients._ratewindow.Reopenings`). With no ``Retry-After`` the
        run's first window is read so (the opening-burst estimate of :meth:`_first_burst`, with
        the reopening measured instead of told); with one, later windows. A read replaces the
        cuts made while the window was shut, and otherwise only ever lowers a rate learned
        before.
        """
        for name, refused_at, rate, window in self._reopenings.read(sent, log, self._reached):
            measured = max(rate, MIN_RATE)
            # the provider's own window, measured: probe slowly, after a window without 429s
            self._confirmed[name] = True
            self._quiet[name] = max(self.PROBE_QUIET, window)
            learned = self.learned[name]
            if learned is not None and measured >= learned and self._cut_at[name] < refused_at:
                continue  # a rate learned before the window shut stands
            # ...but cuts while it was shut read the shut time as a rate (down to 0.68x)
            self._last_cut[name] = (now, measured)
            self._cut(name, now, measured)

    def _reached_at(self, name: str, log: SendLog, round_trip: float) -> float | None:
        """About when the first requests reached the provider.

        They waited for new connections (a second on a loaded machine): the provider's clock
        starts about one round trip (of the first 429 seen) after the first send, counted
        from when it really left: the client's set-up can hold it for seconds on a loaded
        machine (see :meth:`SendLog.delayed`), and a window counted from when it was recorded
        read a quarter long on a 2 s window.
        """
        first = log.earliest()  # when it really left (the client's set-up may hold it)
        if self._reached[name] is None and first is not None:
            self._reached[name] = first + round_trip
        return self._reached[name]

    def _first_burst(
        self,
        name: str,
        round_trip: float,
        now: float,
        allowed: float | None,
        *,
        log: SendLog,
        recent: RecentAnswers,
        retry_after: float | None,
    ) -> bool:
        """Learn the first rate from a fresh window's burst and its ``Retry-After``.

        A fresh window admits its whole allowance at once; the provider then accepts nothing
        more for ``retry_after`` seconds, so what it accepted spreads over the span up to then
        (about one window). Every 429 of that first episode refines the estimate: attempts
        still in flight count as accepted until their 429 comes back. It takes a burst: at
        least 3 429s, a tenth of the last two seconds' answers and of what was sent in them (a
        lone 429 may be noise). The refined estimate is the rate last learned. Returns whether
        this 429 was used so.
        """
        if retry_after is None or retry_after <= 0:
            return False
        episode = self._episode[name]
        if allowed is None:
            recent.forget_before(now - SHARE_WINDOW)
            throttles = len(recent.throttles)
            if throttles < NOISE_MIN or throttles < NOISE_SHARE * (throttles + len(recent.answers)):
                return False
            # ...and a tenth of what was sent: at the start no answer is back yet, and a few
            # 429s not tied to load (their Retry-After no word on the window) pass the above
            if not log.tied_to_load(name, now, NOISE_SHARE, NOISE_MIN, now - SHARE_WINDOW):
                return False
        elif self._first_episode[name] != episode:
            return False
        since = self._reached_at(name, log, round_trip)
        rate = log.accepted_rate(name, now, None)
        first = log.first_send
        if rate is None or first is None or since is None:
            return False
        # what the provider accepted in the run (all of it the fresh window's allowance),
        # spread over the time since it reached the provider, up to the end of its Retry-After
        accepted = rate * max(0.05, min(log.horizon, now - first))
        span = max(0.05, now - since)
        # each 429 of the episode bounds the reopening from above (now + its Retry-After, which
        # a provider rounds up to whole seconds): the earliest bound is the tightest, and later
        # 429s (further from the window's start, each rounded up anew) must not loosen it
        bound = self._reopen_by[name]
        reopen = now + min(retry_after, log.horizon)
        if now < bound < reopen:
            reopen = bound
        self._reopen_by[name] = reopen
        measured = max(accepted / (span + reopen - now), 1.0 / 60.0)
        self._reopenings.first_told(name, span + reopen - now)
        if allowed is None:
            self._first_episode[name] = episode
            self._confirmed[name] = True  # the provider's own word on its window: probe slowly
            self._quiet[name] = max(self.PROBE_QUIET, min(retry_after, log.horizon))
            self._last_cut[name] = (now, measured)
            self._cut(name, now, measured)
        else:
            # refined: the rate last learned is this one, not the first 429's looser estimate
            # (probing above it from there, lone 429s read as noise up to 1.4x the limit)
            self._last_cut[name] = (now, measured)
            self.learned[name] = measured
            self.recompute(name)
        return True

    def _cut(self, name: str, now: float, measured: float) -> None:
        """Keep dimension ``name`` to ``measured`` (per second) from now on."""
        # a provider that refused everything in the span accepted nothing: keep asking, slowly,
        # rather than pace at zero (a bucket cannot; the run would stop on its own limiter)
        measured = max(measured, MIN_RATE)
        self.learned[name] = measured
        self._cut_at[name] = now
        self.cuts += 1
        self.recompute(name)
        logger.info(
            "rate limited: the provider accepted %.1f %s/min; keeping to that",
            measured * 60.0,
            "requests" if name == "requests" else f"{name} tokens",
        )

    def _demote(
        self,
        name: str,
        now: float,
        accepted: float,
        measured: float,
        allowed: float | None,
        unpaused: float | None = None,
    ) -> float:
        """On a second cut below a trusted limit at about the same rate, stop trusting it.

        ``accepted``: what the provider accepted over the span before the 429 (up to a
        minute); ``measured``: the same since the last cut, when higher (the current regime);
        ``unpaused``: the current regime's rate with the client's pauses left out.
        The new ceiling is what the provider accepted, or just under the rate that drew the 429
        when that is close above it: the truth lies between the two. Later 429s while probing
        at the ceiling lower it 5% at a time.

        Returns the rate to keep to now: ``accepted`` while the trusted limit stands; under a
        ceiling, the current regime's rate (the long span holds the pauses and cuts of
        earlier episodes, a rate the provider already showed it accepts more than), never
        above the ceiling.
        """
        ceiling = self.ceiling[name]
        last = self._last_cut[name]
        self._last_cut[name] = (now, measured)
        below = 0.95 * allowed if allowed is not None else measured
        if ceiling is None:
            if last is None or now - last[0] > self.DEMOTE_SPAN or last[0] >= self._episode[name]:
                return accepted  # no earlier cut, or only one in this episode
            if not 1.0 / self.DEMOTE_RATIO <= measured / last[1] <= self.DEMOTE_RATIO:
                return accepted
            # just under the rate that drew the 429 when it is close above what was accepted;
            # else a little under what was accepted while not paused (a pause is not a rate
            # sample: with it, a 1 s pause in a 2 s span read 0.85 of the limit, and the slow
            # probe took ten seconds to find the rest), never above the rate that drew it
            estimate = below if measured <= below <= 1.25 * measured else 0.97 * measured
            if estimate < below:
                # what each of the two cuts saw accepted is a lower bound on the real limit
                # (a loaded client that offered little reads low): keep to the higher one
                floor = max(measured, last[1], unpaused or 0.0)
                estimate = min(below, 0.97 * floor)
            self.ceiling[name] = estimate
            logger.warning(
                "the trusted %s limit looks wrong (429s twice at about %.1f/min): keeping to "
                "%.1f/min, probing slowly above",
                name,
                measured * 60.0,
                estimate * 60.0,
            )
        elif allowed is not None and allowed >= 0.99 * ceiling:
            # a 429 while probing at the ceiling: a little lower, never below what was accepted
            self.ceiling[name] = min(ceiling, max(measured, below))
        ceiling = self.ceiling[name]
        if ceiling is None:
            return accepted
        # a 429 near the limit learned: 5% under the rate that drew it, not the span's mean
        return min(ceiling, max(measured, below))

    def _repeated(self, name: str, now: float) -> bool:
        """Count one 429 episode below a trusted limit; whether there were enough lately."""
        evidence = self._evidence[name]
        if not evidence or now - evidence[-1] >= 1.0:
            evidence.append(now)
        while evidence and evidence[0] < now - self.EVIDENCE_SPAN:
            evidence.popleft()
        return len(evidence) >= self.EVIDENCE
