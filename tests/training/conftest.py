from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from tracedistill.chat import ChatTokenizer, qwen3_offline_tokenizer
from tracedistill.records import Message


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> ChatTokenizer:
    return qwen3_offline_tokenizer(tmp_path_factory.mktemp("tok"))


def arithmetic(n: int, offset: int = 0) -> list[tuple[str, Sequence[Message]]]:
    """A small memorizable set of chat conversations with reasoning."""
    out: list[tuple[str, Sequence[Message]]] = []
    for i in range(offset, offset + n):
        out.append(
            (
                f"c{i:03d}",
                [
                    Message("user", f"What is {i} plus {i}?"),
                    Message(
                        "assistant",
                        f"<think>\n{i} plus {i} is {2 * i}.\n</think>\n\nThe answer is {2 * i}.",
                    ),
                ],
            )
        )
    return out


@pytest.fixture(scope="session")
def tiny_dense(tmp_path_factory: pytest.TempPathFactory, tokenizer: ChatTokenizer) -> Path:
    from tracedistill.training.local import build_tiny_model

    return build_tiny_model(
        tmp_path_factory.mktemp("tiny") / "qwen3", kind="qwen3", tokenizer=tokenizer
    )


@pytest.fixture(scope="session")
def tiny_moe(tmp_path_factory: pytest.TempPathFactory, tokenizer: ChatTokenizer) -> Path:
    from tracedistill.training.local import build_tiny_model

    return build_tiny_model(
        tmp_path_factory.mktemp("tiny") / "qwen3_moe", kind="qwen3_moe", tokenizer=tokenizer
    )
