from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from tracedistill.chat import ChatFormat, ChatRenderer, ChatTokenizer
from tracedistill.clients.local import LocalSampler
from tracedistill.errors import CheckpointError, ConfigurationError
from tracedistill.evaluation import Evaluator, greedy
from tracedistill.evaluation.samplers import make_sampler
from tracedistill.records import FinishReason, Message, SamplingParams
from tracedistill.training.base import Checkpoint

from .helpers import arithmetic_benchmark

PROMPTS = [[Message("user", f"What is {i} plus {i + 3}?")] for i in range(5)]
MAX = 10


@contextlib.contextmanager
def _peft_quietly() -> Iterator[None]:
    # PEFT 0.21 reads transformers 5's deprecated `is_gradient_checkpointing` when it wraps a
    # model: its note, not this test's concern (LocalSampler's own load is checked below).
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
        )
        yield


@functools.cache
def _load(model_dir: Path, adapter: Path | None) -> object:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        with _peft_quietly():
            model = PeftModel.from_pretrained(model, str(adapter))
    return model.eval()


def reference_greedy(
    model_dir: Path, renderer: ChatRenderer, messages: list[Message], adapter: Path | None = None
) -> list[int]:
    """An independent greedy decoder: argmax of the full forward pass, one token at a time."""
    model: Any = _load(model_dir, adapter)
    ids = list(renderer.generation_prompt(messages).tokens)
    out: list[int] = []
    with torch.no_grad():
        for _ in range(MAX):
            logits = model(input_ids=torch.tensor([ids + out])).logits[0, -1]
            token = int(torch.argmax(logits))
            if token == renderer.stop_token_id:
                break
            out.append(token)
    return out


@pytest.fixture(scope="module")
def adapter_dir(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(3)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model), dtype=torch.float32)
    config = LoraConfig(
        r=4,
        lora_alpha=64,
        target_modules=["q_proj", "v_proj", "down_proj"],
        init_lora_weights=False,
    )
    with _peft_quietly():
        peft_model = get_peft_model(model, config)
    out = tmp_path_factory.mktemp("adapter") / "adapter"
    peft_model.save_pretrained(str(out))
    return out


async def test_greedy_batched_matches_independent_decoder(
    tiny_model: Path, tokenizer: ChatTokenizer
) -> None:
    renderer = ChatRenderer(tokenizer, ChatFormat.QWEN3)
    async with LocalSampler(tiny_model, renderer=renderer, device="cpu", batch_size=4) as sampler:
        import anyio

        results: list[object] = [None] * len(PROMPTS)

        async def one(i: int) -> None:
            results[i] = await sampler.sample(PROMPTS[i], greedy(MAX))

        async with anyio.create_task_group() as tg:
            for i in range(len(PROMPTS)):
                tg.start_soon(one, i)
        assert sampler.batches_run == 2  # 5 prompts at once in batches of 4
        again = [await sampler.sample(p, greedy(MAX)) for p in PROMPTS]
    texts = [r.text for r in results]  # type: ignore[attr-defined]
    assert texts == [c.text for c in again]  # deterministic, batched or alone
    for messages, completion in zip(PROMPTS, again, strict=True):
        expected = reference_greedy(tiny_model, renderer, messages)
        assert completion.text == renderer.parse_response(expected).content
        assert completion.completion_tokens == len(expected)
        assert completion.finish_reason is (
            FinishReason.LENGTH if len(expected) == MAX else FinishReason.STOP
        )


async def test_adapter_directory_and_checkpoint(
    tiny_model: Path, adapter_dir: Path, tokenizer: ChatTokenizer
) -> None:
    renderer = ChatRenderer(tokenizer, ChatFormat.QWEN3)
    ckpt = Checkpoint(
        step=100, samples_seen=400, sampler=str(adapter_dir), state=None, base_model=str(tiny_model)
    )
    sampler = make_sampler(ckpt, renderer=renderer, device="cpu")
    assert isinstance(sampler, LocalSampler) and sampler.adapter == adapter_dir
    with warnings.catch_warnings():
        # PEFT reads a deprecated transformers property when it wraps the model; the sampler
        # keeps that note, meant for PEFT's maintainers, from its users.
        warnings.simplefilter("error", FutureWarning)
        await sampler.start()  # loads the model in a worker thread: errors come back here
    async with sampler:
        tuned = [await sampler.sample(p, greedy(MAX)) for p in PROMPTS[:2]]
    async with LocalSampler(tiny_model, renderer=renderer, device="cpu") as base:
        plain = [await base.sample(p, greedy(MAX)) for p in PROMPTS[:2]]
    for messages, completion in zip(PROMPTS[:2], tuned, strict=True):
        expected = reference_greedy(tiny_model, renderer, messages, adapter=adapter_dir)
        assert completion.text == renderer.parse_response(expected).content
    assert [c.text for c in tuned] != [c.text for c in plain]  # the adapter is applied


async def test_completion_prompt_stop_strings_and_evaluator(
    tiny_model: Path, tokenizer: ChatTokenizer
) -> None:
    renderer = ChatRenderer(tokenizer, ChatFormat.QWEN3)
    async with LocalSampler(tiny_model, renderer=renderer, device="cpu") as sampler:
        full = await sampler.sample("def add(a, b):", greedy(MAX))
        assert full.completion_tokens is not None and full.prompt_tokens == len(
            tokenizer.encode("def add(a, b):")
        )
        if len(full.text) > 2:
            stop = full.text[1:3]
            cut = await sampler.sample("def add(a, b):", greedy(MAX, stop=[stop]))
            assert cut.text == full.text[: full.text.find(stop)]
            assert cut.finish_reason is FinishReason.STOP
        with pytest.raises(ConfigurationError, match="greedily"):
            await sampler.sample("x", SamplingParams(max_tokens=4, temperature=0.7))
        # The evaluator runs end to end on the local model (random weights: all wrong).
        result = await Evaluator().evaluate(sampler, arithmetic_benchmark(3), params=greedy(6))
    assert result.n == 3 and result.correct == 0


def test_bad_adapter_paths(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"adapter_config\.json"):
        LocalSampler("base", adapter=tmp_path)
    with pytest.raises(CheckpointError, match="TinkerSampler"):
        LocalSampler(
            "base",
            adapter=Checkpoint(
                step=1, samples_seen=1, sampler="tinker://r/sampler_weights/a", state=None
            ),
        )
    with pytest.raises(ConfigurationError):
        make_sampler(tmp_path)
