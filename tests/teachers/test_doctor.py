"""``python -m tracedistill doctor`` against the local provider-compatible servers."""

from __future__ import annotations

import pytest

from tests.servers.anthropic_server import AnthropicServer
from tests.servers.openai_server import Fault, OpenAIServer
from tracedistill.errors import ConfigurationError
from tracedistill.teachers.doctor import DoctorConfig, run_doctor

from .conftest import KEY


async def doctor(config: DoctorConfig) -> tuple[int, list[str]]:
    lines: list[str] = []
    status = await run_doctor(config, out=lines.append)
    return status, lines


@pytest.mark.anyio
async def test_doctor_openrouter_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCTOR_TEST_KEY", KEY)
    with OpenAIServer(api_key=KEY, rpm=600, rate_headers=True, burst_s=10.0) as server:
        # the second request (max_tokens=16) stops at max_tokens, as a reasoning model would
        server.push(Fault.slow(0.0), Fault.truncated())
        status, lines = await doctor(
            DoctorConfig(
                provider="openrouter",
                model="anthropic/claude-sonnet-4.5",
                base_url=server.url + "/v1",
                api_key_env="DOCTOR_TEST_KEY",
                price_in=3.0,
                price_out=15.0,
            )
        )
        text = "\n".join(lines)
        assert status == 0, text
        assert "hard cost cap: $0.0100" in lines[1]  # printed before anything was sent
        assert KEY not in text
        assert "x-ratelimit-limit-requests: 600" in text
        assert "'requests_limit': 600.0" in text  # the parsed headers
        # the limiter's reading: what it keeps to
        assert "limiter's reading: keeps to requests 600/min (paced at 588/min)" in text
        assert "separate field `reasoning`" in text and "reasoning.text" in text
        assert "cost per response: reported" in text
        assert "finish reason: stop" in text and "max_tokens=16: length" in text
        assert "streaming: works" in text and "with usage" in text
        assert server.stats.requests == 3
        committed = float(text.split("worst-case spend committed: $")[1].split()[0])
        assert 0 < committed <= 0.01


@pytest.mark.anyio
async def test_doctor_anthropic_and_inline_think(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    with AnthropicServer(api_key=KEY, rpm=600, rate_headers=True, burst_s=10.0) as server:
        server.push(Fault.slow(0.0), Fault.truncated())
        status, lines = await doctor(
            DoctorConfig(provider="anthropic", model="claude-loop", base_url=server.url)
        )
        text = "\n".join(lines)
        assert status == 0, text
        assert "anthropic-ratelimit-requests-limit: 600" in text
        assert "assumed" in text  # no published prices: the dearest ones are assumed
        assert "cost per response: not reported" in text
        assert "streaming: works" in text
        # $0.01 at the assumed prices affords no 1,024-token thinking budget: said, not hidden
        assert "thinking was off in this check" in text
        assert "max_tokens=16: length" in text
    with AnthropicServer(api_key=KEY) as server:
        server.push(Fault.slow(0.0), Fault.truncated())
        status, lines = await doctor(
            DoctorConfig(
                provider="anthropic", model="claude-loop", base_url=server.url, max_usd=0.5
            )
        )
        text = "\n".join(lines)
        assert status == 0, text
        # a cap that affords the thinking budget: thinking is asked for (the server sends
        # thinking blocks only then), so where Claude's reasoning arrives is checked
        assert "separate `thinking` content blocks" in text
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with OpenAIServer(api_key=KEY, inline_think=True) as server:
        server.push(Fault.slow(0.0), Fault.truncated())
        status, lines = await doctor(
            DoctorConfig(provider="openai", model="m", base_url=server.url + "/v1")
        )
        text = "\n".join(lines)
        assert status == 0, text
        assert (
            "inline `<think>` block" in text
            and "rate-limit headers on a normal answer: none" in text
        )


@pytest.mark.anyio
async def test_doctor_respects_the_cap_and_needs_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with OpenAIServer(api_key=KEY) as server:
        _, lines = await doctor(
            DoctorConfig(provider="openai", model="m", base_url=server.url + "/v1", max_usd=0.0001)
        )
        assert server.stats.requests == 0  # at the assumed prices nothing fits in $0.0001
        assert sum("skipped" in line for line in lines) == 3
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(ConfigurationError, match="OPENAI_API_KEY"):
        await doctor(DoctorConfig(provider="openai", model="m", base_url="http://127.0.0.1:1"))


def test_doctor_command_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tracedistill.__main__ import main

    monkeypatch.setenv("MY_KEY", KEY)
    with OpenAIServer(api_key=KEY) as server:
        argv = ["doctor", "openai", "--model", "m", "--base-url", server.url + "/v1"]
        server.push(Fault.slow(0.0), Fault.truncated())
        assert main([*argv, "--api-key-env", "MY_KEY", "--max-usd", "0.02"]) == 0
        assert main([*argv, "--api-key-env", "NO_SUCH_KEY_VAR"]) == 2
    captured = capsys.readouterr()
    assert "hard cost cap: $0.0200" in captured.out and KEY not in captured.out
    assert "NO_SUCH_KEY_VAR" in captured.err


@pytest.mark.anyio
async def test_doctor_fails_a_provider_that_ignores_max_tokens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # this server answers in full whatever max_tokens says (and reports "stop"): truncation
    # would go unnoticed and budgets would not hold, so the doctor must not say all is well
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with OpenAIServer(api_key=KEY, honour_max_tokens=False) as server:
        status, lines = await doctor(
            DoctorConfig(provider="openai", model="m", base_url=server.url + "/v1")
        )
    text = "\n".join(lines)
    assert status == 1, text
    assert "ignored max_tokens" in text and "everything checked works" not in text


@pytest.mark.anyio
async def test_doctor_tells_a_daily_budget_from_a_per_minute_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a Groq-like host: requests per day and tokens per minute under OpenAI's header names
    from tests.servers.provider import Limit, OpenAIProvider

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    limits = (Limit("requests", 100, 86_400.0), Limit("input", 18_000, 60.0))
    with OpenAIProvider(api_key=KEY, limits=limits, header_style="openai") as server:
        server.push(Fault.slow(0.0), Fault.truncated())
        status, lines = await doctor(
            DoctorConfig(provider="openai", model="m", base_url=server.url + "/v1")
        )
    text = "\n".join(lines)
    assert status == 0, text
    assert "x-ratelimit-limit-requests: 100" in text
    reading = next(line for line in lines if "limiter's reading" in line)
    assert "keeps to tokens 18,000/min" in reading, reading
    assert "not per-minute, so not paced (a budget): requests 100 (resets in" in reading, reading
    assert "requests 100/min" not in reading
