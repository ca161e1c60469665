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
    body: dict[str, Any] = {
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


async def test_handoff_bounds_the_queue_and_passes_wakeups_on() -> None:
    """The producer-to-worker queue holds at most its size, wakes the producer once it drained
    to half, loses no request when a woken worker is cancelled, and ends workers on close."""
    import anyio

    from tracedistill.teachers._handoff import Handoff

    queue: Handoff[object] = Handoff(4)
    items = [object() for _ in range(10)]
    for item in items[:4]:
        queue.put(item)
    assert queue.full
    resumed = anyio.Event()

    async def producer() -> None:
        await queue.room()
        resumed.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(producer)
        await anyio.sleep(0.01)
        assert queue.take_nowait() is items[0] and not resumed.is_set()  # 3 left, low is 2
        assert queue.take_nowait() is items[1]
        await anyio.sleep(0.01)
        assert resumed.is_set()
    assert queue.take_nowait() is items[2] and queue.take_nowait() is items[3]
    assert queue.take_nowait() is None

    got: list[object] = []

    async def taker(scope: anyio.CancelScope | None = None) -> None:
        if scope is not None:
            with scope:
                got.append(await queue.take())
            return
        got.append(await queue.take())

    with anyio.fail_after(5):  # a lost wake-up would leave a taker waiting forever
        await _cancelled_taker_loses_nothing(queue, items[4], got, taker)
    # Whoever took it (the cancel may land after the wake-up), it was taken once, and the
    # close ended the other taker(s).
    assert got.count(items[4]) == 1 and set(got) == {items[4], None}


async def _cancelled_taker_loses_nothing(
    queue: Any, item: object, got: list[object], taker: Any
) -> None:
    import anyio

    async with anyio.create_task_group() as tg:
        doomed = anyio.CancelScope()
        tg.start_soon(taker, doomed)
        await anyio.sleep(0.01)
        tg.start_soon(taker)
        await anyio.sleep(0.01)
        queue.put(item)  # wakes the first taker, and it is cancelled before it runs: either it
        doomed.cancel()  # still takes the item or its wake-up passes on to the second taker
        await anyio.sleep(0.01)
        assert got == [item]
        tg.start_soon(taker)
        await anyio.sleep(0.01)
        queue.close()  # an empty, closed queue ends every waiting worker
