from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.anthropic_server import AnthropicServer
from tests.servers.openai_server import OpenAIServer
from tracedistill import JsonlTraceStore, Problem, SamplingParams
from tracedistill.teachers import OpenAICompatTeacher, RetryPolicy

FAST_RETRY = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05)
KEY = "sk-test-PLANTED-0123456789abcdef"


def math_problems(count: int, prefix: str = "p") -> list[Problem]:
    return [
        Problem(kind="math", prompt=f"{prefix}{i}: what is {i} + {i}?", answer=str(2 * i))
        for i in range(count)
    ]


@pytest.fixture
def openai_server() -> Iterator[OpenAIServer]:
    with OpenAIServer(api_key=KEY) as server:
        yield server


@pytest.fixture
def anthropic_server() -> Iterator[AnthropicServer]:
    with AnthropicServer(api_key=KEY) as server:
        yield server


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JsonlTraceStore]:
    with JsonlTraceStore(tmp_path / "store") as s:
        yield s


def openai_teacher(server: OpenAIServer, **kwargs: object) -> OpenAICompatTeacher:
    options: dict[str, object] = {
        "base_url": server.url + "/v1",
        "api_key": KEY,
        "params": SamplingParams(max_tokens=64),
        "retry": FAST_RETRY,
        "timeout": 5.0,
        "reports_cost": True,
    }
    options.update(kwargs)
    return OpenAICompatTeacher("loop/model", **options)  # type: ignore[arg-type]
