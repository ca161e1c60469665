from __future__ import annotations

from collections import Counter

import pytest

from tracedistill.chat import ChatExample, ChatRenderer, ChatTokenizer
from tracedistill.errors import ConfigurationError
from tracedistill.records import FinishReason, Message, Trace
from tracedistill.training.base import TrainConfig
from tracedistill.training.data import (
    batch_indices,
    conversations,
    prepare_examples,
    select_indices,
)

from .conftest import arithmetic


def _trace(i: int, reasoning: str = "think", **kw: object) -> Trace:
    return Trace(
        problem_id=f"p{i}",
        teacher="t",
        model="m",
        prompt=(Message("user", f"q{i}"),),
        reasoning=reasoning,
        answer=f"a{i}",
        **kw,  # type: ignore[arg-type]
    )


def test_select_indices_deterministic_without_replacement() -> None:
    a = select_indices(1000, 250, seed=7)
    assert a == select_indices(1000, 250, seed=7)
    assert len(set(a)) == 250
    assert a != select_indices(1000, 250, seed=8)
    assert select_indices(10, None, seed=1) == list(range(10))
    assert select_indices(10, 50, seed=1) == list(range(10))


def test_batches_cover_each_epoch_once_and_are_reproducible() -> None:
    cfg = TrainConfig(base_model="m", batch_size=4, epochs=2, seed=3)
    n = 10  # 2 steps per epoch, 2 examples left out of each epoch
    seen: Counter[int] = Counter()
    epochs = []
    for step in range(4):
        epoch, idx = batch_indices(cfg, n, step)
        epochs.append(epoch)
        assert len(idx) == 4
        seen.update(idx)
        assert batch_indices(cfg, n, step) == (epoch, idx)
    assert epochs == [0, 0, 1, 1]
    assert sum(seen.values()) == 16
    e0 = batch_indices(cfg, n, 0)[1] + batch_indices(cfg, n, 1)[1]
    assert len(set(e0)) == 8  # no repeat within an epoch
    e1 = batch_indices(cfg, n, 2)[1] + batch_indices(cfg, n, 3)[1]
    assert e0 != e1  # reshuffled per epoch
    plain = TrainConfig(base_model="m", batch_size=4, shuffle=False)
    assert batch_indices(plain, n, 1) == (0, [4, 5, 6, 7])


def test_conversations_from_traces_skip_failures() -> None:
    ok = _trace(1)
    failed = _trace(2, reasoning="", finish_reason=FinishReason.ERROR, error="boom")
    convs, skipped = conversations([ok, failed])
    assert [c[0] for c in convs] == [ok.key]
    assert convs[0][1][-1].content.startswith("<think>\nthink\n</think>")
    assert skipped == [failed.key]
    with pytest.raises(ConfigurationError, match="ChatExamples, Traces"):
        conversations(["nope"])  # type: ignore[list-item]


def test_prepare_samples_after_length_policy(tokenizer: ChatTokenizer) -> None:
    renderer = ChatRenderer(tokenizer)
    long = [("zlong", [Message("user", "x"), Message("assistant", "word " * 200)])]
    pool = arithmetic(30) + long
    cfg = TrainConfig(base_model="m", max_length=64, num_samples=20, seed=5, batch_size=4)
    data = prepare_examples(pool, renderer, cfg)
    assert len(data.examples) == 20
    assert data.report.pool_size == 31
    assert data.report.length.dropped == ("zlong",)
    assert data.report.selected == 20
    assert data.report.seconds > 0
    # Independent of the pool's order; different seeds pick differently.
    again = prepare_examples(list(reversed(pool)), renderer, cfg)
    assert [e.id for e in again.examples] == [e.id for e in data.examples]
    other = prepare_examples(
        pool, renderer, TrainConfig(base_model="m", max_length=64, num_samples=20, seed=6)
    )
    assert [e.id for e in other.examples] != [e.id for e in data.examples]
    truncating = TrainConfig(base_model="m", max_length=64, length_policy="truncate")
    cut = prepare_examples(pool, renderer, truncating)
    assert cut.report.length.truncated == ("zlong",)
    assert len(next(e for e in cut.examples if e.id == "zlong")) == 64


def test_prepare_tokenized_examples_and_errors(tokenizer: ChatTokenizer) -> None:
    renderer = ChatRenderer(tokenizer)
    exs = [ChatExample(id=f"e{i}", tokens=list(range(10 + i)), loss_start=3) for i in range(5)]
    cfg = TrainConfig(base_model="m", max_length=12, length_policy="truncate")
    data = prepare_examples(exs, renderer, cfg)
    assert data.report.length.truncated == ("e3", "e4")
    assert max(len(e) for e in data.examples) == 12
    with pytest.raises(ConfigurationError, match="empty"):
        prepare_examples([], renderer, cfg)
    with pytest.raises(ConfigurationError, match="more than once"):
        prepare_examples([exs[0], exs[0]], renderer, cfg)
    with pytest.raises(ConfigurationError, match="no example fits"):
        prepare_examples(exs, renderer, TrainConfig(base_model="m", max_length=3))
    with pytest.raises(ConfigurationError, match="plain"):
        prepare_examples(exs, renderer, TrainConfig(base_model="m", chat_format="plain"))
