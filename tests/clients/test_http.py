"""The HTTP client's attempt deadline and its public transport methods.

A body that trickles in (every silence shorter than any read timeout, the whole far longer than
the attempt's limit) is the case a per-read timeout misses: the attempt must still be cut at
``timeout`` and retried, whether the client's own aiohttp session enforces the limit or the
teacher's cancel scope does (another transport).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.servers.raw import read_request
from tracedistill.clients.openai_compat import OpenAICompatibleSampler
from tracedistill.errors import ProviderTimeoutError
from tracedistill.records import FinishReason, Problem, SamplingParams, TaskKind
from tracedistill.teachers import OpenAICompatTeacher, RetryPolicy

pytestmark = pytest.mark.anyio

ANSWER = {
    "id": "gen-1",
    "choices": [{"message": {"content": "4"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1},
}


class TrickleServer:
    """Answers every POST with a whole answer, sending ``trickle`` requests' bodies one byte per
    ``gap`` seconds instead; counts requests."""

    def __init__(self, *, trickle: int, gap: float = 0.05) -> None:
        self.trickle = trickle
        self.gap = gap
        self.requests = 0
        self.url = ""
        self.writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                await read_request(reader)
                self.requests += 1
                body = json.dumps(ANSWER).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    + f"content-length: {len(body)}\r\n\r\n".encode()
                )
                if self.requests <= self.trickle:
                    for index in range(len(body)):
                        if writer.is_closing():
                            return
                        writer.write(body[index : index + 1])
                        await writer.drain()
                        await asyncio.sleep(self.gap)
                else:
                    writer.write(body)
                    await writer.drain()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[TrickleServer]:
        server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
        try:
            yield self
        finally:
            for writer in self.writers:
                writer.transport.abort()
            server.close()
            await asyncio.sleep(2 * self.gap)  # the handlers see their connections gone


def problem(index: int) -> Problem:
    return Problem(id=f"p{index}", kind=TaskKind.MATH, prompt=f"2 + {index}?", answer="4")


def teacher(url: str, **kwargs: Any) -> OpenAICompatTeacher:
    return OpenAICompatTeacher(
        "loop/model",
        base_url=url,
        api_key="k",
        params=SamplingParams(max_tokens=8),
        retry=RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.02),
        **kwargs,
    )


def httpx_transport() -> httpx.AsyncBaseTransport:
    return httpx.AsyncHTTPTransport()


@pytest.mark.parametrize("transport", [None, httpx_transport], ids=["aiohttp", "httpx"])
async def test_a_trickling_answer_is_cut_at_the_attempt_limit_and_retried(
    transport: Any,
) -> None:
    # Each trickled body takes about 200 bytes x 50 ms = 10 s; the attempt limit is 0.6 s.
    async with TrickleServer(trickle=0).running() as server:
        t = teacher(server.url, timeout=0.6, transport=transport)
        assert (await t.generate(problem(0))).ok  # warm: the client exists in this loop now
        server.trickle = server.requests + 2
        started = time.monotonic()
        trace = await t.generate(problem(1))
        elapsed = time.monotonic() - started
        keeps = t._client_keeps_deadline()
        await t.aclose()
    assert trace.ok and trace.attempts == 3
    assert trace.finish_reason is FinishReason.STOP
    # Two cut attempts cost 1.2 s; uncut they would cost 20 s. The margin is for a busy machine.
    assert elapsed < 6.0
    # The default path leaves the deadline to the client's session; another transport does not.
    assert keeps is (transport is None)


async def test_a_trickling_answer_that_always_trickles_fails_as_a_timeout() -> None:
    async with TrickleServer(trickle=10**6).running() as server:
        client = OpenAICompatibleSampler("loop/model", base_url=server.url, timeout_s=0.3)
        client.start_timeout = 30.0  # no read timeout could cut a 50 ms silence anyway
        await client.start()
        assert client.bounds_replies(0.3) and not client.bounds_replies(0.4)
        with pytest.raises(ProviderTimeoutError, match=r"no complete response within 0\.3s"):
            await client.reply([], None)
        await client.aclose()


async def test_public_transport_methods_are_the_real_ones() -> None:
    async with TrickleServer(trickle=0).running() as server:
        client = OpenAICompatibleSampler("loop/model", base_url=server.url)
        seen: list[Any] = []
        data, headers = await client.post_json("/chat/completions", {"x": 1}, observe=seen.append)
        assert data == ANSWER and isinstance(headers, dict)
        response = await client.send("POST", "/chat/completions", content=b"{}")
        assert client.json_object(response) == ANSWER
        await client.aclose()
    assert server.requests == 2
    assert client.error_message({"error": {"message": "m", "type": "t"}}, "") == "t: m"
    assert not hasattr(client, "_post_json") and not hasattr(client, "_send")


async def test_a_teacher_whose_attempt_is_more_than_one_reply_keeps_its_own_deadline() -> None:
    class Twice(OpenAICompatTeacher):
        async def complete(self, request: Any, *, observe: Any = None) -> Any:
            await super().complete(request, observe=observe)
            return await super().complete(request, observe=observe)

    async with TrickleServer(trickle=0).running() as server:
        plain, twice = (
            teacher(server.url, timeout=5.0),
            Twice("loop/model", base_url=server.url, api_key="k", timeout=5.0),
        )
        assert (await plain.generate(problem(0))).ok and (await twice.generate(problem(0))).ok
        assert plain._client_keeps_deadline() and not twice._client_keeps_deadline()
        await plain.aclose()
        await twice.aclose()


class EncodingServer:
    """Answers every POST compressed in the best encoding the request offers (zstd, then gzip),
    as a CDN in front of a provider does; records what each request offered."""

    def __init__(self) -> None:
        self.offered: list[str] = []
        self.url = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        import gzip

        import zstandard

        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                fields = await read_request(reader)
                offered = fields.get(b"accept-encoding", "")
                self.offered.append(offered)
                body = json.dumps(ANSWER).encode()
                if "zstd" in offered:
                    encoding, body = "zstd", zstandard.ZstdCompressor().compress(body)
                elif "gzip" in offered:
                    encoding, body = "gzip", gzip.compress(body)
                else:
                    encoding = "identity"
                head = f"content-encoding: {encoding}\r\ncontent-length: {len(body)}\r\n\r\n"
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n" + head.encode() + body
                )
                await writer.drain()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[EncodingServer]:
        server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
        try:
            yield self
        finally:
            server.close()


@pytest.mark.parametrize("transport", [None, httpx_transport], ids=["aiohttp", "httpx"])
async def test_compressed_answers_are_read_on_every_path(transport: Any) -> None:
    # httpx offers zstd when zstandard is installed; the bare aiohttp path decodes zstd only
    # with backports.zstd, so it must not offer what it cannot read
    pytest.importorskip("zstandard")
    from aiohttp import compression_utils

    server = EncodingServer()
    async with server.running():
        t = teacher(server.url, timeout=5.0, transport=transport)
        trace = await t.generate(problem(1))
        await t.aclose()
    assert trace.ok and trace.answer == "4", trace.error
    if transport is None and not compression_utils.HAS_ZSTD:
        assert "zstd" not in server.offered[0] and "gzip" in server.offered[0]
