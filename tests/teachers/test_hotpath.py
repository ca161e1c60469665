"""The per-request fast paths keep the meaning of the general ones (issue 12, client overhead)."""

from __future__ import annotations

from typing import Any

import pytest

from tracedistill.clients.openai_compat import parse_chat, usage_of
from tracedistill.records import FinishReason, TokenUsage


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        ({"prompt_tokens": 12, "completion_tokens": 20}, (12, 20, 0)),
        (
            {
                "prompt_tokens": 3,
                "completion_tokens": 9,
                "completion_tokens_details": {"reasoning_tokens": 7},
            },
            (3, 9, 7),
        ),
        ({"prompt_tokens": 12.9, "completion_tokens": -4}, (12, 0, 0)),  # cleaned, not trusted
        ({"prompt_tokens": True, "completion_tokens": "5"}, (1, 0, 0)),
        ({"completion_tokens_details": {"reasoning_tokens": -1}}, (0, 0, 0)),
        ({"completion_tokens_details": {"reasoning_tokens": 2.5}}, (0, 0, 2)),
        ({"prompt_tokens": None, "completion_tokens_details": None}, (0, 0, 0)),
        (None, (0, 0, 0)),
        ([1, 2], (0, 0, 0)),
    ],
)
def test_usage_counts_are_taken_or_cleaned(usage: Any, expected: tuple[int, int, int]) -> None:
    got = usage_of(usage)
    assert type(got) is TokenUsage
    assert (got.prompt_tokens, got.completion_tokens, got.reasoning_tokens) == expected
    assert all(type(n) is int for n in expected)


def test_parse_chat_reads_metadata_and_cost_as_before() -> None:
    body = {
        "id": "gen-1",
        "model": "served/model",
        "provider": "SomeCloud",
        "choices": [
            {
                "message": {"content": "4", "reasoning": "2 + 2"},
                "finish_reason": "weird",
                "native_finish_reason": "end_turn",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 6, "cost": 0},
    }
    reply = parse_chat(body)
    assert reply.metadata == {
        "served_model": "served/model",
        "provider": "SomeCloud",
        "response_id": "gen-1",
        "native_finish_reason": "end_turn",
    }
    assert reply.finish_reason is FinishReason.OTHER and reply.cost_usd == 0.0
    assert isinstance(reply.cost_usd, float)
    body["usage"] = {"cost": -1}
    body["id"] = 7
    reply = parse_chat(body)
    assert reply.cost_usd is None and "response_id" not in reply.metadata
    body["usage"] = {"cost": True}  # a bool is a number to isinstance, as it always was
    assert parse_chat(body).cost_usd == 1.0
