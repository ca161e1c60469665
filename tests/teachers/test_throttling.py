"""The limiter against the provider simulator (tests/servers/provider.py), at reduced scale.

Issue 12's table, shortened from minutes to seconds: every figure is a ratio measured in the
same run (throughput / the provider's limit, 429s / requests) with margins, so a loaded machine
does not make them flaky. The full matrix runs in ``benchmarks/bench_teachers.py``.
"""

from __future__ import annotations

import functools
import itertools
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest

from tests.servers.base import Fault
from tests.servers.provider import AnthropicProvider, Limit, OpenAIProvider
from tracedistill import JsonlTraceStore, SamplingParams
from tracedistill.errors import RateLimitError
from tracedistill.teachers import (
    AnthropicTeacher,
    RateLimiter,
    RateLimits,
    RetryPolicy,
    generate,
)

from .conftest import KEY, math_problems, openai_teacher

pytestmark = pytest.mark.anyio

RETRY = RetryPolicy(max_attempts=12, base_delay=0.1, max_delay=1.0)


def provider(cls: type[Any] = OpenAIProvider, **kwargs: Any) -> Any:
    return cls(api_key=KEY, latency=0.05, seed=3, **kwargs)


def rate_of(server: Any, window: float = 0.0) -> float:
    """Answers per second after the provider's first ``window`` seconds (the server's clock).

    Counted from ``window`` seconds after the first arrival to the last answer: a fresh window
    admits a whole window's worth at once, so counting from the first arrival credits the run
    with up to one extra window (1.17x for 12 s against a 2 s window). With the first window
    left out, 1.0 means the run kept to the limit in steady state.
    """
    stats = server.stats
    start = stats.arrivals[0] + window
    answers = [t for t in stats.answer_times if t > start]
    return float(len(answers) / (answers[-1] - start)) if answers else 0.0


def late_429s(server: Any, window: float) -> tuple[int, int]:
    """429s, and requests, arriving after the provider's first ``window`` seconds."""
    stats = server.stats
    steady = stats.arrivals[0] + window
    late = sum(t > steady for t in stats.arrivals)
    return sum(t > steady for t in stats.throttle_times), late


def longest_gap(server: Any) -> float:
    times = sorted(server.stats.answer_times)
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


async def run_for(seconds: float, **kwargs: Any) -> RateLimiter:
    """Run generate for ``seconds`` over an endless pool; return its limiter."""
    limiter = kwargs.pop("limiter")
    with anyio.move_on_after(seconds):
        await generate(limiter=limiter, **kwargs)
    return limiter


def endless(prefix: str) -> Iterator[Any]:
    for i in itertools.count():
        yield from math_problems(1, f"{prefix}{i}-")


# --- the sliding window of issue 12 (200 per 10 s, shortened to 40 per 2 s) -----------------


@pytest.mark.slow
async def test_sliding_window_told_holds_the_limit(store: JsonlTraceStore) -> None:
    with provider(limits=(Limit("requests", 40, 2.0, "sliding"),), header_style=None) as server:
        teacher = openai_teacher(server, retry=RETRY)
        limiter = RateLimiter(RateLimits(requests_per_minute=1200), max_concurrency=64)
        await run_for(10.0, teacher=teacher, problems=endless("st"), store=store, limiter=limiter)
        await teacher.aclose()
    ratio = rate_of(server, 2.0) / 20.0
    # issue 12's targets, asserted as they are: >= 0.95 of the limit (first window left out)
    # and <= 1% 429s over the whole run, its start included. Measured 0.974-0.992 and 0-1
    # 429s in ~185 requests, three runs at once on two busy cores. Before, the first request
    # (held by the client's set-up) reached the server bunched with what the bucket released
    # after the stall, and the first window held 41-43 of 40: 1-3 429s at ~2 s, some runs.
    assert ratio >= 0.95, ratio
    stats = server.stats
    assert stats.throttled <= 0.01 * stats.requests, (stats.throttled, stats.requests)
    state = limiter.state()
    assert state.cuts == 0 and state.request_rate == pytest.approx(1200)
    assert state.concurrency_min == 64  # 429s never touch concurrency


@pytest.mark.slow
@pytest.mark.parametrize("retry_after", ["s", None])
async def test_sliding_window_unknown_is_learned(
    store: JsonlTraceStore, retry_after: str | None
) -> None:
    limits = (Limit("requests", 40, 2.0, "sliding"),)
    with provider(limits=limits, header_style=None, retry_after=retry_after) as server:
        teacher = openai_teacher(server, retry=RETRY)
        limiter = RateLimiter(None, max_concurrency=64)
        await run_for(12.0, teacher=teacher, problems=endless("su"), store=store, limiter=limiter)
        await teacher.aclose()
    # issue 12's targets, asserted as they are: >= 0.90 of the limit (first window left out)
    # and <= 5% 429s after the first window. Measured on this tree (19:27-19:56 UTC), 21-22
    # runs each: with whole-second Retry-After 0.968-0.994 of the limit (median 0.983),
    # without it 0.972-0.994 (median 0.982), at load 1-7: the lowest with the client pinned
    # to one core beside 6 busy loops (a seventh of a core), 4 runs at once at load 4-7
    # 0.977-0.994, so neither load nor the client's CPU brings it near 0.9. The 0.884 one
    # pytest run of 4 read at load 4-8 (when 0.85 was asserted, in the round that started
    # counting the first window from when the client's set-up let the first request leave
    # and stopped a lone 429 a window later cutting 10%) was not seen again.
    # 429s after the first window: without Retry-After 1-6 of 186-200 (3% at most; its
    # window's reopening is measured instead of told; before: 5-14%, the opening allowance
    # read as a rate, cut after cut); with it 3 of 193 (1.6%, 2 runs; up to 4.9% when a
    # probe's lone 429 cut to 5% under the probe's rate, a window's climb past the limit, and
    # that became the rate "last learned"). Full scale: 0.8% and 0.6%. The old pause-and-burst
    # limiter: 26-28% 429s after the first window with Retry-After, 0.76-0.80 of the limit
    # without.
    assert rate_of(server, 2.0) / 20.0 >= 0.9, rate_of(server, 2.0)
    late_429, late = late_429s(server, 2.0)
    assert late_429 <= 0.05 * late, (late_429, late)
    state = limiter.state()
    # never learned far below the provider's real rate (the old limiter fell to a quarter)
    assert state.request_rate_min is None or state.request_rate_min >= 0.6 * 1200


@pytest.mark.slow
async def test_fixed_window_joined_late_is_learned(store: JsonlTraceStore) -> None:
    # A provider's fixed windows follow its clock: the run starts 1.2 s into a 2 s window, no
    # Retry-After, not told. The first window's allowance over the 0.8 s left reads 2.5x the
    # rate; the next window's reopening reads it (its allowance over the time between).
    limits = (Limit("requests", 40, 2.0, "fixed"),)
    with provider(limits=limits, header_style=None, retry_after=None, window_phase=1.2) as server:
        teacher = openai_teacher(server, retry=RETRY)
        limiter = RateLimiter(None, max_concurrency=64)
        await run_for(12.0, teacher=teacher, problems=endless("fj"), store=store, limiter=limiter)
        await teacher.aclose()
    # Measured 0-3 429s of ~180 requests after the second window in 8 runs (13-14 in 5 of
    # 12 when a later window was read only if it stayed shut as long as it was open: the
    # second, filled at 2.5x, was measured open 0.98 s and shut 1.02 s, and went unread).
    # test_units' test of a fixed window joined late tells this tree from the one before.
    assert rate_of(server, 0.8) / 20.0 >= 0.9, rate_of(server, 0.8)
    late_429, late = late_429s(server, 2.8)
    assert late_429 <= 0.05 * late, (late_429, late)
    state = limiter.state()
    # the rate kept at the end: read at 1200/min, then probing above it (up to 1.08x seen)
    assert state.request_rate is not None and 0.85 * 1200 <= state.request_rate <= 1.15 * 1200


@pytest.mark.slow
async def test_unknown_limit_with_random_429s_holds(store: JsonlTraceStore) -> None:
    # Not told, with 6% 429s not tied to load (shared upstream capacity) on top of the limit:
    # the scattered ones must neither cut the rate learned nor keep its probe from climbing
    # back. Before, each cut a learned rate already under the limit a few percent (an outside
    # audit's 5-minute run fell to 0.76-0.79 of the limit, against 0.965 without them).
    limits = (Limit("requests", 40, 2.0, "sliding"),)
    with provider(limits=limits, header_style=None, random_429=0.06) as server:
        teacher = openai_teacher(server, retry=RETRY)
        limiter = RateLimiter(None, max_concurrency=64)
        await run_for(30.0, teacher=teacher, problems=endless("ur"), store=store, limiter=limiter)
        await teacher.aclose()
    stats = server.stats
    late = stats.arrivals[0] + 15.0
    answers = [t for t in stats.answer_times if t > late]
    second_half = len(answers) / (answers[-1] - late)
    # issue 12's target, >= 0.90 of the limit, asserted as it is. Before random 429s at the
    # start stopped passing as the first window's burst: 0.946-0.971 in 13 runs (load 2-7),
    # partly by probing over the limit (3.3-3.5% of requests refused by the window itself).
    # Since: 0.925-0.927 in 3 runs (20:22 UTC, load 0.3) with no window 429: the limiter
    # sends at about the limit learned and 6% of that is refused at random, which a provider
    # counting refusals against its limit (OpenAI says it does) would not let it make up.
    # The simulator does not charge them, so 1.0 would be reachable here by overshooting.
    assert second_half / 20.0 >= 0.9, second_half


@pytest.mark.slow
async def test_unknown_limit_random_429s_from_the_start(store: JsonlTraceStore) -> None:
    # An outside audit's case: not told, a sliding window answering 429 with whole-second
    # Retry-After, and 3% 429s not tied to load (Retry-After: 1) from the first requests. With
    # seed 1, five of the first 40 the window admits get one, back before the window's own 24
    # and before any answer. Before, they passed as the opening burst (a share of no answers),
    # their Retry-After: 1 was read as the window's reopening, the first estimate came out
    # 1.91x the limit, and the run stayed in pause-and-burst: 0.75-0.79 of the limit, 14-20%
    # 429s after the first window, 30-45% of the time paused (20 s, load 4-7).
    limits = (Limit("requests", 40, 2.0, "sliding"),)
    server = OpenAIProvider(
        api_key=KEY, latency=0.05, seed=1, limits=limits, header_style=None, random_429=0.03
    )
    first: list[float | None] = []

    async def first_estimate(limiter: RateLimiter) -> None:
        for _ in range(1000):  # until the first window's first 429s (10 s at most)
            if limiter.request_rate is not None:
                break
            await anyio.sleep(0.01)
        await anyio.sleep(1.0)  # its episode is over, the window not reopened yet
        first.append(limiter.request_rate)

    with server:
        teacher = openai_teacher(server, retry=RETRY)
        limiter = RateLimiter(None, max_concurrency=64)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(first_estimate, limiter)
            await run_for(
                20.0, teacher=teacher, problems=endless("fs"), store=store, limiter=limiter
            )
        await teacher.aclose()
    assert first[0] is not None and 0.8 <= first[0] / 20.0 <= 1.2, first  # 0.98 measured
    # issue 12's targets as they are, the random 429s included: measured 0.94 and 4.3% (none
    # of them the window's own; 7 runs, 2 at once) with 2 s paused; the old tree 1.91x first
    assert rate_of(server, 2.0) / 20.0 >= 0.90
    late_429, late = late_429s(server, 2.0)
    assert late_429 <= 0.05 * late, (late_429, late)
    # no pause-and-burst: only the first window's pause (2 s)
    assert limiter.state().paused_s <= 3.0, limiter.state().paused_s


async def _told_run(store: JsonlTraceStore, prefix: str, adaptive: bool) -> tuple[float, float]:
    """Of the limit (first window left out) and 429s after it, told the right limit."""
    with provider(limits=(Limit("requests", 40, 2.0, "sliding"),), header_style=None) as server:
        teacher = openai_teacher(server, retry=RETRY)
        limits = RateLimits(requests_per_minute=1200, adaptive=adaptive)
        limiter = RateLimiter(limits, max_concurrency=64)
        await run_for(10.0, teacher=teacher, problems=endless(prefix), store=store, limiter=limiter)
        await teacher.aclose()
    stats = server.stats
    steady = stats.arrivals[0] + 2.0
    late = max(1, sum(t > steady for t in stats.arrivals))
    return rate_of(server, 2.0) / 20.0, sum(t > steady for t in stats.throttle_times) / late


@pytest.mark.slow
async def test_adaptive_default_does_as_well_as_static(store: JsonlTraceStore) -> None:
    # issue 12's table: told the right limit, adaptive=False holds 0.99-1.00 of it; the
    # adaptive default must do at least as well (margin 0.05 for a loaded machine)
    static, static_429 = await _told_run(store, "static", adaptive=False)
    adaptive, adaptive_429 = await _told_run(store, "adaptive", adaptive=True)
    assert adaptive >= static - 0.05, (adaptive, static)
    assert adaptive_429 <= static_429 + 0.03, (adaptive_429, static_429)


def _second_half(server: Any, seconds: float) -> tuple[float, int, int]:
    """Answers per second, 429s and arrivals in the second half of a run of ``seconds``."""
    stats = server.stats
    half = stats.arrivals[0] + seconds / 2.0
    answers = [t for t in stats.answer_times if t > half]
    rate = len(answers) / (stats.answer_times[-1] - half) if answers else 0.0
    late_429 = sum(t > half for t in stats.throttle_times)
    return rate, late_429, sum(t > half for t in stats.arrivals)


@pytest.mark.slow
async def test_wrong_configured_limit_is_learned_down(store: JsonlTraceStore) -> None:
    # told 2,400/min, the provider allows 600/min (a sliding window): the second throttling
    # episode shows the configured limit is wrong; the learned rate replaces it as the
    # ceiling and the run settles at the provider's limit instead of cycling back up to 2,400
    with provider(limits=(Limit("requests", 10, 1.0, "sliding"),), header_style=None) as server:
        teacher = openai_teacher(server, retry=RETRY)
        limiter = RateLimiter(RateLimits(requests_per_minute=2400), max_concurrency=32)
        await run_for(20.0, teacher=teacher, problems=endless("wr"), store=store, limiter=limiter)
        await teacher.aclose()
    state = limiter.state()
    assert state.cuts >= 1 and state.request_rate is not None and state.request_rate < 800
    # the summary's state shows the learned limit in place of the configured one
    assert state.ceiling_rpm is not None and 450 <= state.ceiling_rpm <= 800, state
    assert state.limit_rpm == state.ceiling_rpm and state.configured_rpm == 2400
    assert "learned limit" in state.describe() and "configured 2,400/min" in state.describe()
    rate, late_429, late = _second_half(server, 20.0)
    # issue 12's target, >= 0.9 of the true limit, asserted as it is: measured 0.944-0.959
    # with a second run (or the full-scale benchmark) beside it on two busy cores. Before
    # (0.8 asserted): 0.74-0.90, where each 429 under the ceiling cut to the span's mean and a
    # loaded client's first ceiling read as low as 0.69 of the limit; the old limiter 0.64-0.73
    assert rate / 10.0 >= 0.9, rate
    # above the learned ceiling the limiter keeps probing (+2%/s), so a few 429s stay: 0-5 of
    # ~78 in the second half here (6% once in a clean-clone CI run); the old limiter's 3-5%
    # came with 0.64-0.73 of the limit, which the throughput bound above already refuses
    assert late_429 <= 0.10 * late, (late_429, late)


@pytest.mark.slow
async def test_correct_limit_with_random_429s_is_kept(store: JsonlTraceStore) -> None:
    # 6% 429s not tied to load (shared upstream capacity) against a correctly told limit:
    # they teach nothing, the configured limit is never cut or replaced
    with provider(
        limits=(Limit("requests", 10, 1.0),), header_style=None, random_429=0.06
    ) as server:
        teacher = openai_teacher(server, retry=RETRY)
        limiter = RateLimiter(RateLimits(requests_per_minute=600), max_concurrency=32)
        await run_for(12.0, teacher=teacher, problems=endless("rc"), store=store, limiter=limiter)
        await teacher.aclose()
    state = limiter.state()
    assert server.stats.throttled >= 2
    assert state.cuts == 0 and state.request_rate == pytest.approx(600)
    assert state.request_rate_min == pytest.approx(600)
    # Issue 12's target for a told limit, >= 0.95 of it, asserted as it is on what counts
    # against the limit: every request sent, refusals included, as OpenAI documents
    # ("unsuccessful requests contribute to your per-minute limit"), which is why the limiter
    # keeps its sends to the told limit whatever the answers. Measured 0.985-0.991 in 9 runs
    # (load 1-7, 3 of them with the client pinned to one core beside 6 busy loops).
    stats = server.stats
    span = stats.arrivals[-1] - stats.arrivals[0]
    assert stats.requests / span / 10.0 >= 0.95, stats.requests / span
    # What the provider answered is 6% under that by construction: a client keeping to the
    # limit has 6% of it refused at random, so 0.94 of the limit is the most it can have
    # answered (answered / limit read 0.932-0.939, under the target for that reason alone;
    # it was asserted >= 0.9). Against that ideal the target holds: 0.991-0.997. The simulator
    # does not charge the random refusals, so a client sending 6% over its told limit would
    # be answered at the limit here; a provider that counts refusals, as OpenAI says it does,
    # would refuse it for load, so the limiter does not.
    admitted = (stats.requests - stats.throttled) / span
    assert admitted / (10.0 * (1.0 - 0.06)) >= 0.95, admitted


async def test_correct_limit_with_random_429s_is_kept_below_it(store: JsonlTraceStore) -> None:
    # The same, from a client offering well under the limit (one slot: about half of it, as a
    # concurrency-bound or loaded client does): what the provider accepted reads low, yet the
    # scattered 429s are not tied to load and must not cut. Before the fix the limiter took
    # them for evidence, cut to the rate offered and replaced the limit with a ceiling under
    # it (the benchmark's random-429 row fell from 0.945 to 0.77-0.80 of the limit, 6-7 cuts).
    with provider(
        limits=(Limit("requests", 30, 1.0),), header_style=None, random_429=0.06
    ) as server:
        teacher = openai_teacher(server, retry=RETRY)
        limiter = RateLimiter(RateLimits(requests_per_minute=1800), max_concurrency=1)
        await run_for(12.0, teacher=teacher, problems=endless("rb"), store=store, limiter=limiter)
        await teacher.aclose()
    state = limiter.state()
    assert server.stats.throttled >= 3
    assert state.cuts == 0 and state.request_rate == pytest.approx(1800)
    assert state.request_rate_min == pytest.approx(1800)


# --- faults: every request answered at the limit --------------------------------------------


async def test_faults_at_the_limit_all_answered(store: JsonlTraceStore) -> None:
    faults = (
        Fault.http(500),
        Fault.http(503),
        Fault.http(529),
        Fault.reset(),
        Fault.cut(),
        Fault.malformed(),
        Fault.error_body(),
        Fault.truncated(),
    )
    with provider(
        limits=(Limit("requests", 60, 1.0, "sliding"),),
        header_style=None,
        fault_rate=0.25,
        random_faults=faults,
    ) as server:
        teacher = openai_teacher(server, retry=RETRY)
        limiter = RateLimiter(RateLimits(requests_per_minute=3600), max_concurrency=128)
        summary = await generate(teacher, math_problems(300), store, limiter=limiter)
        await teacher.aclose()
    assert summary.done == 300 and summary.failed == 0
    assert server.stats.faults > 40
    # every billed answer stored exactly once; nothing bought twice
    assert summary.spend_usd == pytest.approx(server.stats.billed_usd)
    assert set(server.stats.answers_by_prompt.values()) == {1}
    # requests the provider admitted (answers plus faults, not 429s) per second, from the end
    # of its first window to the 95th-percentile answer (the last few are retries waiting out
    # their back-off one after another): 300 answers need ~400 requests
    stats = server.stats
    start = stats.arrivals[0] + 1.0
    t95 = sorted(stats.answer_times)[int(0.95 * (len(stats.answer_times) - 1))]
    sent = sum(start < t <= t95 for t in stats.arrivals)
    admitted = sent - sum(start < t <= t95 for t in stats.throttle_times)
    sent_rate = admitted / (t95 - start)
    # issue 12's target, >= 0.9 of the limit, asserted as it is: 0.939-0.978 in 15 runs
    # (19:45-19:56 UTC, load 3-7; 11 of them with the client pinned to one core beside 6 busy
    # loops, a seventh of a core: 0.939-0.966, 6-15 429s); 0.96-0.98 with 3 CPU burners on 2
    # cores and 0.88-0.97 with 6 in an earlier round (before the limiter capped each second
    # at the pace, a starved event loop burst a bucket's capacity on top of the rate into the
    # 1 s window: 0.55-0.69, 40 429s, a cut to 2,000/min)
    assert sent_rate / 60.0 >= 0.9, sent_rate
    # faults are not rate signals: a cut needs 429s (a loaded machine now and then delays
    # arrivals past the 2% headroom: one step of ~13% in about 1 run of 5 with 3-6 CPU burners)
    state = limiter.state()
    assert state.cuts == 0 or (state.throttled >= 3 and state.request_rate_min >= 0.7 * 3600)
    # faults spread at random are no overload burst: the shared concurrency stays whole
    assert state.concurrency_min == 128


# --- overloads and stalls -------------------------------------------------------------------


async def _unlimited_run(path: Path, prefix: str, results: dict[str, Any], **faults: Any) -> None:
    """One 8 s run with no rate limit (16 slots, 0.25 s answers); store its server and limiter."""
    with (
        JsonlTraceStore(path / prefix) as store,
        OpenAIProvider(api_key=KEY, latency=0.25, seed=3, **faults) as server,
    ):
        teacher = openai_teacher(server, retry=RETRY)
        limiter = RateLimiter(None, max_concurrency=16)
        await run_for(8.0, teacher=teacher, problems=endless(prefix), store=store, limiter=limiter)
        await teacher.aclose()
    results[prefix] = (server, limiter)


@pytest.mark.slow
async def test_random_529_do_not_slow_the_run(tmp_path: Path) -> None:
    # The fault-free and the faulty run go side by side in one event loop, so both see the
    # same load. Run one after the other (as before), a loaded machine gave the two different
    # shares of the CPU: 0.80-1.12 under 3 busy loops for the same code, the whole of the
    # 0.75-0.81 seen before. 0.25 s answers keep the rate set by the slots, not by the CPU.
    results: dict[str, Any] = {}
    async with anyio.create_task_group() as runs:
        runs.start_soon(_unlimited_run, tmp_path, "clean", results)
        runs.start_soon(
            functools.partial(_unlimited_run, overload_rate=0.03), tmp_path, "ovl", results
        )
    (clean, _), (server, limiter) = results["clean"], results["ovl"]
    assert server.stats.status[529] > 5
    # target >= 0.9 of the fault-free rate, asserted as it is. Measured side by side at load
    # 3-7, with and without 3 busy loops: 0.96-1.04. What the faults cost is each failed request's
    # back-off (about 0.1 s at this RetryPolicy), during which its worker sends nothing
    ratio = rate_of(server) / rate_of(clean)
    assert ratio >= 0.9, ratio
    state = limiter.state()
    assert state.concurrency_min == 16 and state.request_rate is None and state.throttled == 0


@pytest.mark.slow
@pytest.mark.parametrize("stall_after_s", [0.5, None])
async def test_stalls_hold_one_slot_never_the_run(
    store: JsonlTraceStore, stall_after_s: float | None
) -> None:
    # 3% 529s and 5% of requests stalling until the client's 4 s timeout (issue 12: 2%, 30 s);
    # stall_after_s None: the threshold is learned from recent answers, as by default
    with provider(overload_rate=0.03, stall_rate=0.05) as server:
        teacher = openai_teacher(server, retry=RETRY, timeout=4.0)
        limiter = RateLimiter(RateLimits(stall_after_s=stall_after_s), max_concurrency=8)
        await run_for(8.0, teacher=teacher, problems=endless("stall"), store=store, limiter=limiter)
        await teacher.aclose()
    state = limiter.state()
    assert state.stalls >= 3  # stalled requests gave their slots back...
    # ...so answers kept coming: with 8 slots and 5% stalls lasting 4 s, the old engine had
    # every slot stalled within seconds. Target: no 10 s without an answer at a 30 s timeout,
    # 1.3 s at this 4 s one; measured 0.1-0.35 s (load 3, either threshold)
    assert longest_gap(server) < 1.3
    assert server.stats.answered >= 100


async def test_529_burst_dips_concurrency_gently_and_recovers(store: JsonlTraceStore) -> None:
    # every request overloaded for 1 s (a 529 burst), no rate limit: concurrency is trimmed
    # gently (never below three quarters), the run goes on at its rate, and every problem is
    # answered exactly once
    with OpenAIProvider(api_key=KEY, latency=0.1, seed=3, overload_bursts=((0.6, 1.0),)) as server:
        teacher = openai_teacher(server, retry=RETRY)
        limiter = RateLimiter(None, max_concurrency=16)
        summary = await generate(teacher, math_problems(500, "burst-"), store, limiter=limiter)
        await teacher.aclose()
    stats = server.stats
    assert stats.status[529] >= 16  # the burst hit every slot, several times
    assert summary.done == 500 and summary.failed == 0
    assert set(stats.answers_by_prompt.values()) == {1} and len(stats.answers_by_prompt) == 500
    state = limiter.state()
    assert state.concurrency_min >= 12 and state.throttled == 0 and state.cuts == 0
    # answers per second after the burst (from 1 s after it) against before it
    t0 = stats.arrivals[0]
    before = [t for t in stats.answer_times if t < t0 + 0.6]
    after = [t for t in stats.answer_times if t > t0 + 2.6]
    if len(after) >= 20:  # a loaded machine may have finished the pool soon after the burst
        rate_before = len(before) / (before[-1] - t0)
        rate_after = len(after) / (after[-1] - (t0 + 2.6))
        assert rate_after / rate_before >= 0.75, (rate_after, rate_before)


async def test_dropped_connections_every_problem_stored_once(store: JsonlTraceStore) -> None:
    # 10% of answers cut off mid-body (status and headers sent, then the connection dropped)
    with provider(drop_rate=0.1) as server:
        teacher = openai_teacher(server, retry=RETRY)
        limiter = RateLimiter(None, max_concurrency=16)
        summary = await generate(teacher, math_problems(200, "drop-"), store, limiter=limiter)
        await teacher.aclose()
    stats = server.stats
    assert stats.faults >= 8  # connections were dropped...
    assert summary.done == 200 and summary.failed == 0  # ...and every problem answered
    keys = [t.key for t in store.traces()]
    assert len(keys) == 200 and len(set(keys)) == 200
    assert set(stats.answers_by_prompt.values()) == {1}  # each billed once
    assert limiter.state().overloaded >= 8 and limiter.state().cuts == 0


async def test_openrouter_http_headers_pause_at_a_used_up_limit(store: JsonlTraceStore) -> None:
    # OpenRouter's own X-RateLimit-{Limit,Remaining,Reset} on every answer (reset in epoch ms,
    # no interval), 429s without Retry-After: a 429 saying "remaining 0" waits for the reset
    limits = (Limit("requests", 10, 1.0, "fixed"),)
    seen: list[Any] = []
    with provider(limits=limits, retry_after=None, header_style="openrouter") as server:
        teacher = openai_teacher(server, retry=RETRY)
        probe = teacher.request(math_problems(1, "orh-probe-")[0])
        await teacher.complete(probe, observe=seen.append)
        limiter = RateLimiter(None, max_concurrency=16)
        summary = await generate(teacher, math_problems(40, "orh-"), store, limiter=limiter)
        await teacher.aclose()
    assert summary.done == 40 and summary.failed == 0
    assert seen and seen[-1].key_limit == 10  # read from the HTTP headers of an answer
    state = limiter.state()
    assert state.paused_s > 0  # the used-up limit's reset was waited for
    assert server.stats.throttled <= 20  # about a window's worth of slots, not a retry storm


# --- Retry-After forms, header dialects, token limits --------------------------------------


async def test_http_date_retry_after_fixed_window(store: JsonlTraceStore) -> None:
    with provider(
        limits=(Limit("requests", 20, 1.0, "fixed"),), retry_after="date", header_style=None
    ) as server:
        teacher = openai_teacher(server, retry=RETRY)
        summary = await generate(teacher, math_problems(60), store, concurrency=32)
        await teacher.aclose()
    assert summary.done == 60 and summary.failed == 0
    assert server.stats.throttled > 0  # the date form was parsed and waited for
    assert summary.limiter is not None and summary.limiter.paused_s > 0


async def test_openrouter_limit_headers_inside_the_429_body() -> None:
    # OpenRouter passes an upstream provider's limit on only inside the 429 body
    # (error.metadata.headers, reset in epoch ms); no Retry-After, no header on the response.
    limits = (Limit("requests", 5, 2.0, "fixed"),)
    seen: list[Any] = []
    with provider(limits=limits, retry_after=None, header_style="openrouter-upstream") as server:
        teacher = openai_teacher(server, retry=RetryPolicy(max_attempts=1))
        requests = [teacher.request(p) for p in math_problems(6, "orb-")]
        for request in requests[:5]:
            await teacher.complete(request, observe=seen.append)
        assert seen == []  # answers carry no rate header in this layout
        with pytest.raises(RateLimitError):
            await teacher.complete(requests[5], observe=seen.append)
        await teacher.aclose()
    (info,) = seen
    assert info.key_limit == 5 and info.key_remaining == 0
    assert info.key_reset is not None and 0 < info.key_reset <= 2.5
    assert info.exhausted() == [("key", info.key_reset)]


async def test_openrouter_body_headers_pause_the_run(store: JsonlTraceStore) -> None:
    limits = (Limit("requests", 10, 1.0, "fixed"),)
    with provider(limits=limits, retry_after=None, header_style="openrouter-upstream") as server:
        teacher = openai_teacher(server, retry=RETRY)
        limiter = RateLimiter(None, max_concurrency=16)
        summary = await generate(teacher, math_problems(40), store, limiter=limiter)
        await teacher.aclose()
    assert summary.done == 40 and summary.failed == 0
    # the used-up limit read from the bodies paused every request until its reset
    assert limiter.state().paused_s > 0
    assert server.stats.throttled <= 20  # about a window's worth of concurrency, not a retry storm


async def test_anthropic_headers_and_token_limits(
    store: JsonlTraceStore, caplog: pytest.LogCaptureFixture
) -> None:
    # the limits are only announced in headers; the output-token limit binds first
    limits = (
        Limit("requests", 3000, 60.0),
        Limit("input", 60_000, 60.0),
        Limit("output", 1_800, 60.0, "sliding"),
    )
    with AnthropicProvider(api_key=KEY, latency=0.02, limits=limits, seed=3) as server:
        teacher = AnthropicTeacher(
            "claude-test",
            base_url=server.url,
            api_key=KEY,
            params=SamplingParams(max_tokens=64),
            thinking=None,
            retry=RETRY,
            timeout=5.0,
        )
        limiter = RateLimiter(None, max_concurrency=16)
        summary = await generate(teacher, math_problems(40), store, limiter=limiter)
        await teacher.aclose()
    state = limiter.state()
    assert summary.done == 40
    assert state.output_tokens_rate == pytest.approx(1800)
    assert state.request_rate == pytest.approx(3000)
    # output tokens (~20 per answer, 1,800/min = 30/s) were paced, not discovered by 429s
    assert server.stats.throttled <= 4


def _token_rates(server: Any, seconds: float) -> tuple[float, float]:
    """Input and output tokens per second answered in the second half of a run."""
    start = server.stats.arrivals[0] + seconds / 2.0
    late = [(t, i, o) for t, i, o in server.token_log if t > start]
    span = late[-1][0] - start if late else 0.0
    if span <= 0:
        return 0.0, 0.0
    return sum(i for _, i, _ in late) / span, sum(o for _, _, o in late) / span


def _anthropic_teacher(server: Any, max_tokens: int = 64) -> AnthropicTeacher:
    return AnthropicTeacher(
        "claude-test",
        base_url=server.url,
        api_key=KEY,
        params=SamplingParams(max_tokens=max_tokens),
        thinking=None,
        retry=RETRY,
        timeout=5.0,
    )


def long_problems(prefix: str, words: int) -> Iterator[Any]:
    """An endless pool of prompts of about ``words`` * 1.25 tokens each."""
    for problem in endless(prefix):
        yield attrs.evolve(problem, prompt=problem.prompt + " pad" * words)


@pytest.mark.slow
async def test_input_token_limit_binds_and_holds(store: JsonlTraceStore) -> None:
    # ~1,000-token prompts against 6,000 input tokens/s (a token bucket, stated per minute):
    # the input-token limit binds (6 requests/s, far under the request limit), told
    limits = (Limit("requests", 50, 1.0), Limit("input", 6_000, 1.0))
    with AnthropicProvider(api_key=KEY, latency=0.05, limits=limits, seed=3) as server:
        teacher = _anthropic_teacher(server)
        limiter = RateLimiter(
            RateLimits(requests_per_minute=3000, input_tokens_per_minute=360_000),
            max_concurrency=32,
        )
        pool = long_problems("inp", 800)
        await run_for(10.0, teacher=teacher, problems=pool, store=store, limiter=limiter)
        await teacher.aclose()
    input_rate, _ = _token_rates(server, 10.0)
    stats = server.stats
    assert stats.answered >= 30
    # issue 12's targets for a told limit, token limits as request limits, asserted as they
    # are: >= 0.95 of the limit and <= 1% 429s. Measured 0.983-1.012 and no 429 in 18 runs
    # (19:27-19:56 UTC, load 1-7; with the client pinned to one core beside 6 busy loops,
    # and 4 runs at once, alike). Over 1.0: the provider's bucket holds a second of the limit
    assert input_rate / 6_000 >= 0.95, input_rate
    assert input_rate / 6_000 <= 1.05, input_rate
    assert stats.throttled <= 0.01 * stats.requests, (stats.throttled, stats.requests)


@pytest.mark.slow
async def test_output_token_limit_binds_and_holds(store: JsonlTraceStore) -> None:
    # ~20-token answers reserved against max_tokens=64, 300 output tokens/s: the output limit
    # binds (~15 answers/s), told; unused reservations are refunded so the limit is used.
    # Anthropic's output bucket holds a minute of the limit (the limiter models it so): a
    # shorter window here would be a provider the limiter is not modelled on.
    limits = (Limit("requests", 50, 1.0), Limit("output", 18_000, 60.0))
    with AnthropicProvider(api_key=KEY, latency=0.05, limits=limits, seed=3) as server:
        teacher = _anthropic_teacher(server)
        limiter = RateLimiter(
            RateLimits(requests_per_minute=3000, output_tokens_per_minute=18_000),
            max_concurrency=32,
        )
        await run_for(10.0, teacher=teacher, problems=endless("out"), store=store, limiter=limiter)
        await teacher.aclose()
    _, output_rate = _token_rates(server, 10.0)
    stats = server.stats
    # issue 12's targets for a told limit, token limits as request limits, asserted as they
    # are: >= 0.95 of the limit and <= 1% 429s. Measured 0.980-0.994 and no 429 in 18 runs
    # (19:27-19:56 UTC, load 1-7; with the client pinned to one core beside 6 busy loops,
    # and 4 runs at once, alike)
    assert output_rate / 300 >= 0.95, output_rate
    assert output_rate / 300 <= 1.05, output_rate
    assert stats.throttled <= 0.01 * stats.requests, (stats.throttled, stats.requests)


async def test_progress_and_summary_show_the_limiter(
    store: JsonlTraceStore, capsys: pytest.CaptureFixture[str]
) -> None:
    with provider(limits=(Limit("requests", 40, 1.0),), header_style="openai") as server:
        server.push(Fault.http(529), Fault.http(429, retry_after=0.1))
        teacher = openai_teacher(server, retry=RETRY)
        summary = await generate(teacher, math_problems(30), store, progress=True)
        await teacher.aclose()
    err = capsys.readouterr().err
    assert "rate=" in err and "conc=" in err and "429=" in err and "ovl=" in err
    assert summary.overloaded >= 1 and summary.throttled >= 1
    assert summary.limiter is not None and summary.limiter.header_rpm == pytest.approx(2400)
    assert "limiter: allowed 2,400/min" in str(summary)


def test_warning_when_rate_stays_low(caplog: pytest.LogCaptureFixture) -> None:
    from tracedistill.teachers.engine import _Watch

    limiter = RateLimiter(RateLimits(requests_per_minute=600))
    limiter._model.learned["requests"] = 2.0  # 120/min: under half the configured 600/min
    limiter._model.recompute("requests")
    watch = _Watch(limiter)
    watch.PERIOD = 0.05
    with caplog.at_level(logging.WARNING):
        watch.check()
        time.sleep(0.06)
        watch.check()
        watch.check()
    warnings = [r for r in caplog.records if "under half the configured" in r.getMessage()]
    assert len(warnings) == 1


def test_warning_when_a_token_rate_stays_low(caplog: pytest.LogCaptureFixture) -> None:
    from tracedistill.teachers.engine import _Watch

    limiter = RateLimiter(RateLimits(requests_per_minute=600, output_tokens_per_minute=6_000))
    limiter._model.learned["output"] = 20.0  # 1,200/min: under half the configured 6,000/min
    limiter._model.recompute("output")
    watch = _Watch(limiter)
    watch.PERIOD = 0.05
    with caplog.at_level(logging.WARNING):
        watch.check()
        time.sleep(0.06)
        watch.check()
        watch.check()
    warnings = [r.getMessage() for r in caplog.records if "under half" in r.getMessage()]
    assert len(warnings) == 1 and "6000 output tokens/min" in warnings[0], warnings


def test_summary_html_shows_the_limiter() -> None:
    from tracedistill.clients.ratelimit import LimiterState
    from tracedistill.teachers.engine import GenerationSummary

    state = LimiterState(
        request_rate=540.0,
        request_rate_min=450.0,
        configured_rpm=2400.0,
        header_rpm=None,
        learned_rpm=540.0,
        input_tokens_rate=None,
        output_tokens_rate=None,
        tokens_rate=None,
        concurrency=30,
        max_concurrency=32,
        concurrency_min=24,
        inflight=3,
        inflight_mean=2.5,
        throttled=17,
        overloaded=4,
        cuts=6,
        paused_s=3.25,
        stalls=1,
    )
    summary = _summary(GenerationSummary, state)
    html = summary._repr_html_()
    for shown in ("540/min", "lowest 450/min", "30/32", "17, 4", "3.2 s", ">6<"):
        assert shown in html, (shown, html)
    assert "allowed 540/min" in str(summary)  # the same figures as str()
    assert "rate cuts" not in _summary(GenerationSummary, None)._repr_html_()
    assert "request limit" not in html and state.limit_rpm == 2400.0  # nothing learned
    # a learned limit in place of the configured one shows in both forms
    learned = attrs.evolve(state, ceiling_rpm=600.0)
    assert learned.limit_rpm == 600.0
    text = "learned limit 600/min in place of the configured 2,400/min"
    assert text in _summary(GenerationSummary, learned)._repr_html_()
    assert text in str(_summary(GenerationSummary, learned))


def _summary(cls: Any, state: Any) -> Any:
    counts = dict.fromkeys(
        ("problems", "requested", "skipped", "done", "truncated", "failed", "resampled"), 1
    )
    return cls(
        teacher="t",
        model="m",
        **counts,
        attempts=1,
        throttled=17,
        input_tokens=1,
        output_tokens=1,
        spend_usd=0.0,
        total_spend_usd=0.0,
        elapsed_s=1.0,
        limiter=state,
    )
