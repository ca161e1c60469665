from __future__ import annotations

from pathlib import Path

import pytest

from tracedistill.chat import ChatTokenizer, qwen3_offline_tokenizer

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture(scope="session")
def math500_path() -> Path:
    path = DATA / "math500_test.jsonl"
    if not path.is_file():
        pytest.skip("../shared/data/math500_test.jsonl is not present")
    return path


@pytest.fixture(scope="session")
def mbpp_path() -> Path:
    path = DATA / "mbppplus_378.jsonl"
    if not path.is_file():
        pytest.skip("../shared/data/mbppplus_378.jsonl is not present")
    return path


@pytest.fixture(scope="session")
def tokenizer() -> ChatTokenizer:
    # The default on-disk cache: built once per machine, not once per test session.
    return qwen3_offline_tokenizer()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, tokenizer: ChatTokenizer) -> Path:
    from tracedistill.training.local import build_tiny_model

    return build_tiny_model(
        tmp_path_factory.mktemp("tiny") / "qwen3", kind="qwen3", tokenizer=tokenizer, seed=1
    )
