"""Streaming (server-sent events) for the OpenAI-compatible and Anthropic teachers.

A streamed answer must be the same trace as a whole-body one; a stalled stream is cut after the
idle timeout and retried, a slow but live one is never cut; a stream that drops or ends with an
error event is retried like a dropped body, and stored (and paid for in our records) once.
"""

from __future__ import annotations

import anyio
import httpx
import pytest

from tests.servers.anthropic_server import AnthropicServer
from tests.servers.openai_server import Fault, OpenAIServer, Reply
from tracedistill import FinishReason, JsonlTraceStore, Problem, ReasoningKind, SamplingParams
from tracedistill.clients.ratelimit import RateInfo
from tracedistill.clients.sse import SSEDecoder
from tracedistill.errors import InsufficientCreditsError
from tracedistill.teachers import AnthropicTeacher, RetryPolicy, generate

from .conftest import FAST_RETRY, KEY, math_problems, openai_teacher

pytestmark = pytest.mark.anyio

IDLE = 0.5


def anthropic_teacher(server: AnthropicServer, **kwargs: object) -> AnthropicTeacher:
    options: dict[str, object] = {
        "base_url": server.url,
        "api_key": KEY,
        "params": SamplingParams(max_tokens=4096, temperature=1.0),
        "thinking": 1024,
        "retry": FAST_RETRY,
        "timeout": 5.0,
        "stream": True,
        "idle_timeout": IDLE,
    }
    options.update(kwargs)
    return AnthropicTeacher("claude-loop", **options)  # type: ignore[arg-type]


def long_reply(prompt: str, request: object) -> Reply:
    """A reasoning long enough to stream in many deltas."""
    return Reply(reasoning="Step by step, carefully. " * 24, answer="The answer is \\boxed{7}.")


#: the transports a stream is read through: the default (a bare aiohttp session) and httpx's
#: client layer over a transport the user passes (httpx's own)
PATHS = pytest.mark.parametrize(
    "transport", [None, httpx.AsyncHTTPTransport], ids=["bare", "httpx"]
)


#: room for :func:`long_reply` (~155 tokens): the servers cut answers at max_tokens
ROOM = SamplingParams(max_tokens=4096)


# --- the decoder -----------------------------------------------------------------------------


def test_sse_decoder_framing() -> None:
    decoder = SSEDecoder()
    stream = (
        b': OPENROUTER PROCESSING\r\n\r\nevent: message_start\r\ndata: {"a":'
        b" 1}\r\n\r\ndata: line one\ndata: line two\n\nid: 7\nretry: 10\ndata:nospace\r"
        b"\n\r\ndata: [DONE]\n\n"
    )
    events: list[tuple[str, bytes]] = []
    for i in range(0, len(stream), 5):  # arbitrary chunk borders, CRLF split across them
        events.extend(decoder.feed(stream[i : i + 5]))
    assert events == [
        ("message_start", b'{"a": 1}'),
        ("message", b"line one\nline two"),
        ("message", b"nospace"),
        ("message", b"[DONE]"),
    ]
    assert decoder.comments == 1


# --- OpenAI-compatible ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "layout",
    [
        {},  # OpenRouter: reasoning + reasoning_details, usage.cost in the last chunk
        {"reasoning_field": "reasoning_content", "processing_comments": False},  # vLLM
        {"inline_think": True, "processing_comments": False},  # <think> inline in the content
    ],
)
async def test_openai_stream_matches_whole_body(
    layout: dict[str, object], store: JsonlTraceStore
) -> None:
    with OpenAIServer(api_key=KEY, record_headers=True, **layout) as server:  # type: ignore[arg-type]
        plain = openai_teacher(server)
        streamed = openai_teacher(server, stream=True, idle_timeout=IDLE)
        problem = math_problems(1)[0]
        whole = await plain.generate(problem)
        trace = await streamed.generate(problem)
        assert trace.ok and trace.attempts == 1
        assert (trace.reasoning, trace.answer) == (whole.reasoning, whole.answer)
        assert trace.reasoning and trace.reasoning_kind is ReasoningKind.RAW
        assert trace.usage == whole.usage and trace.usage.reasoning_tokens > 0
        assert trace.cost_usd == pytest.approx(0.001) and not trace.cost_estimated
        assert trace.finish_reason is FinishReason.STOP
        assert trace.metadata["native_finish_reason"] == "stop"
        assert trace.key == whole.key  # streaming is not part of the request key
        sent = server.stats.seen_headers[-1]
        assert sent["authorization"] == f"Bearer {KEY}"
        await plain.aclose()
        await streamed.aclose()


@PATHS
async def test_openai_stream_faults_retried_and_stored_once(
    store: JsonlTraceStore, transport: object
) -> None:
    with OpenAIServer(api_key=KEY) as server:
        teacher = openai_teacher(server, stream=True, idle_timeout=IDLE, transport=transport)
        problems = math_problems(8)
        faults = {
            "p0:": Fault.drop(after=3),
            "p1:": Fault.stream_error(502, after=4),
            "p2:": Fault.stream_error(529, after=0),
            "p3:": Fault.malformed(),
            "p4:": Fault.error_body(503),
            "p5:": Fault.reset(),
            "p6:": Fault.http(429, retry_after_ms=20),
        }
        for match, fault in faults.items():
            server.script(match, fault)
        summary = await generate(teacher, problems, store, concurrency=4)
        assert summary.done == 8 and summary.failed == 0
        traces = {t.problem_id: t for t in store.traces()}
        for i, problem in enumerate(problems):
            assert traces[problem.id].attempts == (2 if i < 7 else 1), i
            assert traces[problem.id].answer.startswith("The answer")
        # each prompt was answered in full exactly once; our records count each cost once
        assert set(server.stats.answers_by_prompt.values()) == {1}
        assert store.spend_usd() == pytest.approx(8 * 0.001)
        await teacher.aclose()


@PATHS
async def test_openai_stalled_stream_cut_live_stream_kept(
    store: JsonlTraceStore, transport: object
) -> None:
    stall = 60.0
    with OpenAIServer(api_key=KEY, responder=long_reply, event_delay=IDLE / 10) as server:
        teacher = openai_teacher(
            server,
            stream=True,
            idle_timeout=IDLE,
            timeout=60.0,
            params=ROOM,
            transport=transport,
        )
        server.script("p0:", Fault.stall(stall, after=5))
        # a quiet stretch three idle timeouts long, kept open by keep-alive comments
        server.script("p1:", Fault.stall(3 * IDLE, after=5, keepalive=IDLE / 5))
        summary = await generate(teacher, math_problems(3), store, concurrency=3)
        assert summary.done == 3 and summary.failed == 0
        traces = sorted(store.traces(), key=lambda t: t.prompt[-1].content)
        cut, kept, live = traces
        assert cut.attempts == 2 and cut.latency_s < stall / 4
        assert kept.attempts == 1 and kept.latency_s > 3 * IDLE
        # ~45 events, each IDLE/10 apart: the answer took several idle timeouts, uncut
        assert live.attempts == 1 and live.latency_s > 3 * IDLE
        assert set(server.stats.answers_by_prompt.values()) == {1}
        await teacher.aclose()


@PATHS
async def test_openai_gzip_stream_decoded_and_stall_cut(
    store: JsonlTraceStore, transport: object
) -> None:
    # A proxy compressing SSE (gzip, flushed per event): the answer reads as the plain one, a
    # stalled stream is still cut after the idle timeout and a slow live one is not.
    with OpenAIServer(api_key=KEY, responder=long_reply, event_delay=IDLE / 10) as plain_server:
        plain = openai_teacher(plain_server, params=ROOM)
        whole = await plain.generate(math_problems(1)[0])
        await plain.aclose()
    server = OpenAIServer(
        api_key=KEY, responder=long_reply, event_delay=IDLE / 10, gzip_stream=True
    )
    with server:
        teacher = openai_teacher(
            server, stream=True, idle_timeout=IDLE, timeout=60.0, params=ROOM, transport=transport
        )
        server.script("p1:", Fault.stall(60.0, after=5))
        server.script("p2:", Fault.stall(3 * IDLE, after=5, keepalive=IDLE / 5))
        summary = await generate(teacher, math_problems(3), store, concurrency=3)
        assert summary.done == 3 and summary.failed == 0
        assert server.stats.gzipped_streams == 4  # three answers and the stalled attempt
        live, cut, kept = sorted(store.traces(), key=lambda t: t.prompt[-1].content)
        assert (live.reasoning, live.answer) == (whole.reasoning, whole.answer)
        assert live.attempts == 1 and live.latency_s > 3 * IDLE
        assert cut.attempts == 2 and cut.latency_s < 60.0 / 4
        assert kept.attempts == 1 and kept.latency_s > 3 * IDLE
        assert set(server.stats.answers_by_prompt.values()) == {1}
        await teacher.aclose()


@PATHS
async def test_openai_stream_held_by_comments_only_is_cut_at_the_start_timeout(
    store: JsonlTraceStore, transport: object
) -> None:
    # an upstream that never answers behind a proxy's keep-alive comments: the comments alone
    # may hold the attempt for its start timeout (``timeout``), then it is retried
    with OpenAIServer(api_key=KEY, responder=long_reply, event_delay=IDLE / 10) as server:
        teacher = openai_teacher(
            server,
            stream=True,
            idle_timeout=IDLE,
            timeout=4 * IDLE,
            params=ROOM,
            transport=transport,
        )
        server.script("p0:", Fault.stall(60.0, after=2, keepalive=IDLE / 5))
        summary = await generate(teacher, math_problems(2), store, concurrency=2)
        assert summary.done == 2 and summary.failed == 0
        held, live = sorted(store.traces(), key=lambda t: t.prompt[-1].content)
        assert held.attempts == 2 and held.latency_s < 60.0 / 4
        # the live answer took longer than the start timeout in all and was not cut
        assert live.attempts == 1 and live.latency_s > 4 * IDLE
        await teacher.aclose()


async def test_openai_stream_truncation_stored_not_rebought(store: JsonlTraceStore) -> None:
    with OpenAIServer(api_key=KEY) as server:
        teacher = openai_teacher(server, stream=True, idle_timeout=IDLE)
        server.script("p0:", Fault.truncated())
        await generate(teacher, math_problems(2), store)
        truncated = [t for t in store.traces() if t.truncated]
        assert len(truncated) == 1 and truncated[0].finish_reason is FinishReason.LENGTH
        before = server.stats.requests
        summary = await generate(teacher, math_problems(2), store)
        assert summary.skipped == 2 and server.stats.requests == before
        await teacher.aclose()


async def test_openai_stream_fatal_error_event_stops_run(store: JsonlTraceStore) -> None:
    with OpenAIServer(api_key=KEY) as server:
        teacher = openai_teacher(server, stream=True, idle_timeout=IDLE)
        server.push(Fault.stream_error(402, after=2, message="out of credits"))
        with pytest.raises(InsufficientCreditsError):
            await generate(teacher, math_problems(20), store, concurrency=1)
        assert server.stats.requests <= 2
        await teacher.aclose()


async def test_openai_stream_reports_rate_headers() -> None:
    with OpenAIServer(api_key=KEY, rpm=600, rate_headers=True) as server:
        teacher = openai_teacher(server, stream=True, idle_timeout=IDLE)
        seen: list[RateInfo] = []
        request = teacher.request(math_problems(1)[0])
        completion = await teacher.complete(request, observe=seen.append)
        assert completion.answer and seen and seen[0].requests_limit == 600
        await teacher.aclose()


# --- Anthropic ------------------------------------------------------------------------------


async def test_anthropic_stream_matches_whole_body() -> None:
    with AnthropicServer(api_key=KEY) as server:
        plain = anthropic_teacher(server, stream=False)
        streamed = anthropic_teacher(server)
        problem = Problem(kind="math", prompt="what is 2 + 2?", answer="4")
        whole = await plain.generate(problem)
        trace = await streamed.generate(problem)
        assert trace.ok and trace.attempts == 1
        assert (trace.reasoning, trace.answer) == (whole.reasoning, whole.answer)
        assert trace.reasoning and trace.reasoning_kind is ReasoningKind.SUMMARY
        assert trace.usage == whole.usage and trace.usage.completion_tokens > 1
        assert trace.metadata == whole.metadata  # redacted thinking counted, never stored
        assert trace.metadata["redacted_thinking_blocks"] == 1
        await plain.aclose()
        await streamed.aclose()


async def test_anthropic_stream_faults(store: JsonlTraceStore) -> None:
    with AnthropicServer(api_key=KEY, responder=long_reply) as server:
        teacher = anthropic_teacher(server, retry=RetryPolicy(max_attempts=3, base_delay=0.01))
        server.script("p0:", Fault.stream_error(529, after=6))  # overloaded_error mid-stream
        server.script("p1:", Fault.stall(60.0, after=8))
        server.script("p2:", Fault.drop(after=4))
        server.script("p3:", Fault.truncated())
        server.script("p4:", Fault.stall(3 * IDLE, after=3, keepalive=IDLE / 5))  # pings
        summary = await generate(teacher, math_problems(5), store, concurrency=5)
        assert summary.done == 5 and summary.failed == 0 and summary.truncated == 1
        by_prompt = {t.prompt[-1].content.split(":")[0]: t for t in store.traces()}
        assert [by_prompt[f"p{i}"].attempts for i in range(5)] == [2, 2, 2, 1, 1]
        assert by_prompt["p1"].latency_s < 15.0  # cut long before the 60 s stall ended
        assert by_prompt["p3"].finish_reason is FinishReason.LENGTH
        assert set(server.stats.answers_by_prompt.values()) == {1}
        await teacher.aclose()


async def test_stream_cancel_leaves_nothing_half_stored(store: JsonlTraceStore) -> None:
    with OpenAIServer(api_key=KEY, responder=long_reply, event_delay=0.02) as server:
        teacher = openai_teacher(server, stream=True, idle_timeout=IDLE, params=ROOM)
        with anyio.move_on_after(1.0):
            await generate(teacher, math_problems(200), store, concurrency=8)
        for trace in store.traces():
            assert trace.reasoning == long_reply("", None).reasoning
        await teacher.aclose()
