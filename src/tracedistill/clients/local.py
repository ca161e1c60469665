"""A sampler on a local transformers model, optionally with a PEFT LoRA adapter directory.

Concurrent requests are gathered into batches (left-padded, one ``generate`` call per batch)
that run in a worker thread, one batch at a time, so the event loop never waits on torch.
Prompts are rendered by the chat renderer shared with training.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import attrs
import orjson

from tracedistill.chat import ChatFormat, ChatRenderer, load_tokenizer
from tracedistill.clients.base import (
    Completion,
    Observer,
    Prompt,
    Reply,
    Sampler,
    SamplerError,
    cut_at_stop,
)
from tracedistill.errors import (
    CheckpointError,
    ConfigurationError,
    ModelNotAvailableError,
    ProviderError,
)
from tracedistill.records import (
    Checkpoint,
    FinishReason,
    ReasoningKind,
    SamplerWeights,
    SamplingParams,
    TokenUsage,
    split_completion,
)

__all__ = ["LocalSampler"]

log = logging.getLogger(__name__)

#: transformers' deprecation note that PEFT triggers when it wraps a model (see its use).
_PEFT_NOTE = r"`is_gradient_checkpointing` is deprecated"


@attrs.define(eq=False)
class _Request:
    tokens: list[int]
    max_new_tokens: int
    stop_ids: tuple[int, ...]
    done: anyio.Event = attrs.field(factory=anyio.Event)
    output: list[int] | None = None
    finish: FinishReason = FinishReason.STOP
    error: BaseException | None = None

    @property
    def group(self) -> tuple[int, tuple[int, ...]]:
        return self.max_new_tokens, self.stop_ids


def _adapter_path(
    adapter: str | Path | SamplerWeights | Checkpoint | None,
) -> tuple[Path | None, str]:
    if adapter is None:
        return None, ""
    base = ""
    if isinstance(adapter, Checkpoint):
        if adapter.sampler is None:
            raise CheckpointError(f"checkpoint at step {adapter.step} has no sampler weights")
        base = adapter.base_model
        adapter = adapter.sampler
    if isinstance(adapter, SamplerWeights):
        if adapter.is_tinker:
            raise CheckpointError(
                f"{adapter.path} lives on Tinker: sample it with TinkerSampler, not LocalSampler"
            )
        adapter = adapter.path
    path = Path(adapter).expanduser()
    config = path / "adapter_config.json"
    if not config.is_file():
        raise CheckpointError(f"{path} is not a PEFT adapter directory (no adapter_config.json)")
    if not base:
        base = str(orjson.loads(config.read_bytes()).get("base_model_name_or_path") or "")
    return path, base


class LocalSampler(Sampler):
    """Greedy (or sampled) generation with transformers on this machine.

    Args:
        base_model: a local model directory or a Hub name in the local cache (default: the one
            the adapter's ``adapter_config.json`` names).
        adapter: a PEFT adapter directory (or the :class:`SamplerWeights` /
            :class:`Checkpoint` a :class:`~tracedistill.training.local.LocalTrainer` wrote).
        renderer: the chat renderer the student was trained with (default: ``chat_format``
            with the base model's tokenizer).
        chat_format: the chat format when no renderer is given.
        tokenizer: a tokenizer source for :func:`load_tokenizer` (default: the base model).
        device: ``cpu``, ``cuda``, ``cuda:1`` ... or ``auto``.
        dtype: a torch dtype name (default: bfloat16 on CUDA, float32 on CPU).
        batch_size: prompts per ``generate`` call.
        model: an already loaded transformers model (then nothing is loaded).
    """

    name = "local"

    def __init__(
        self,
        base_model: str | Path | None = None,
        *,
        adapter: str | Path | SamplerWeights | Checkpoint | None = None,
        renderer: ChatRenderer | None = None,
        chat_format: ChatFormat | str = ChatFormat.QWEN3,
        tokenizer: Any = None,
        device: str = "auto",
        dtype: str | None = None,
        batch_size: int = 8,
        model: Any = None,
        max_concurrency: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ConfigurationError(f"batch_size must be >= 1, got {batch_size}")
        super().__init__(max_concurrency=max_concurrency or batch_size * 4)
        self.adapter, adapter_base = _adapter_path(adapter)
        base = str(base_model) if base_model is not None else adapter_base
        if not base and model is None:
            raise ConfigurationError("LocalSampler needs a base_model (or an adapter naming one)")
        self.base_model = base
        self.model = str(self.adapter) if self.adapter is not None else base
        self.chat_format = ChatFormat(chat_format)
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self._renderer = renderer
        self._tokenizer_source = tokenizer
        self._model = model
        self._given_model = model
        self._pending: list[_Request] = []
        self._gen_lock: anyio.Lock | None = None
        self._start_lock: anyio.Lock | None = None
        self._thread_limit: anyio.CapacityLimiter | None = None
        self.batches_run = 0

    def describe(self) -> Mapping[str, Any]:
        """Backend, base model, adapter and chat format."""
        return {
            "backend": self.name,
            "model": self.model,
            "base_model": self.base_model,
            "adapter": None if self.adapter is None else str(self.adapter),
            "chat_format": str(self._renderer.format if self._renderer else self.chat_format),
        }

    # --- loading -----------------------------------------------------------------------------

    def _load(self) -> tuple[Any, ChatRenderer]:
        import torch

        renderer = self._renderer
        if renderer is None:
            source = (
                self._tokenizer_source if self._tokenizer_source is not None else self.base_model
            )
            renderer = ChatRenderer(load_tokenizer(source), self.chat_format)
        model = self._model
        if model is None:
            from transformers import AutoModelForCausalLM

            device = self.device
            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"
            dtype = (
                getattr(torch, self.dtype)
                if self.dtype
                else (torch.bfloat16 if device.startswith("cuda") else torch.float32)
            )
            try:
                model = AutoModelForCausalLM.from_pretrained(
                    self.base_model, dtype=dtype, local_files_only=True
                )
            except (OSError, ValueError) as exc:
                raise ModelNotAvailableError(
                    f"cannot load base model {self.base_model!r} locally ({exc!s:.300}): give a "
                    "local model directory or a Hub name already in the local cache"
                ) from exc
            if self.adapter is not None:
                from peft import PeftModel

                with warnings.catch_warnings():
                    # PEFT's constructor reads transformers 5's deprecated
                    # `is_gradient_checkpointing` (peft 0.21's call, not ours): the note is for
                    # PEFT's maintainers, not for our users. Only that note is silenced.
                    warnings.filterwarnings("ignore", message=_PEFT_NOTE, category=FutureWarning)
                    model = PeftModel.from_pretrained(model, str(self.adapter))
            model = model.to(device)
        model.eval()
        return model, renderer

    async def start(self) -> None:
        """Load the model and tokenizer (in a worker thread) now instead of on first use."""
        if self._start_lock is None:
            self._start_lock = anyio.Lock()
        async with self._start_lock:
            if self._model is not None and self._renderer is not None:
                return
            self._model, self._renderer = await anyio.to_thread.run_sync(self._load)

    # --- sampling ----------------------------------------------------------------------------

    def _tokens(self, prompt: Prompt) -> tuple[list[int], tuple[int, ...]]:
        renderer = self._renderer
        assert renderer is not None
        if isinstance(prompt, str):
            end = renderer.tokenizer.token_id("<|endoftext|>")
            stops = tuple(i for i in (end, renderer.stop_token_id) if i is not None)
            return renderer.tokenizer.encode(prompt), stops
        generation = renderer.generation_prompt(prompt)
        return list(generation.tokens), generation.stop_token_ids

    async def _sample(self, prompt: Prompt, params: SamplingParams) -> Completion:
        if params.temperature != 0.0 and params.top_k != 1:
            raise ConfigurationError(
                "LocalSampler samples greedily only: use temperature=0.0 (see greedy())"
            )
        await self.start()
        tokens, stop_ids = self._tokens(prompt)
        request = _Request(tokens, params.max_tokens, stop_ids)
        self._pending.append(request)
        try:
            await self._drive(request)
        finally:
            if not request.done.is_set() and request in self._pending:
                self._pending.remove(request)  # cancelled while waiting: not generated
        if request.error is not None:
            raise SamplerError(
                f"local generation failed: {type(request.error).__name__}: {request.error}"
            ) from request.error
        assert self._renderer is not None and request.output is not None
        out = request.output
        if isinstance(prompt, str):
            text = self._renderer.tokenizer.decode(out, skip_special_tokens=True)
        else:
            text = self._renderer.parse_response(out).content
        finish = request.finish
        text, cut = cut_at_stop(text, params.stop)
        if cut:
            finish = FinishReason.STOP
        return Completion(
            text=text,
            finish_reason=finish,
            prompt_tokens=len(tokens),
            completion_tokens=len(out),
        )

    async def reply(
        self, prompt: Prompt, params: SamplingParams | None, *, observe: Observer | None = None
    ) -> Reply:
        """One greedy generation of ``prompt`` (batched with the concurrent ones): a chat
        answer's ``<think>`` block as the reasoning, a raw text prompt's continuation as the
        answer.

        Raises:
            ConfigurationError: ``params`` missing or not greedy.
            ProviderError: the generation failed (not retryable).
        """
        if params is None:
            raise ConfigurationError("LocalSampler.reply needs sampling params (max_tokens)")
        try:
            completion = await self._sample(prompt, params)
        except SamplerError as exc:
            raise ProviderError(str(exc)) from exc
        reasoning, answer = ("", completion.text)
        if not isinstance(prompt, str):
            reasoning, answer = split_completion(completion.text)
        return Reply(
            reasoning=reasoning,
            answer=answer,
            reasoning_kind=ReasoningKind.RAW if reasoning else ReasoningKind.NONE,
            finish_reason=completion.finish_reason,
            usage=TokenUsage(
                prompt_tokens=completion.prompt_tokens or 0,
                completion_tokens=completion.completion_tokens or 0,
            ),
        )

    async def _drive(self, request: _Request) -> None:
        """Wait for ``request``'s result, generating batches while holding the lock.

        Whoever holds the lock runs the next batch (its own request or others'); there is no
        background task to outlive the callers.
        """
        if self._gen_lock is None:
            self._gen_lock = anyio.Lock()
            self._thread_limit = anyio.CapacityLimiter(1)
        while not request.done.is_set():
            async with self._gen_lock:
                if request.done.is_set():
                    return
                # Let the other prompts sent at the same moment join this batch.
                await anyio.lowlevel.checkpoint()
                batch = self._next_batch()
                try:
                    await anyio.to_thread.run_sync(
                        self._generate, batch, limiter=self._thread_limit
                    )
                finally:
                    for item in batch:
                        if item.output is None and item.error is None:
                            item.error = RuntimeError("generation was interrupted")
                        item.done.set()

    def _next_batch(self) -> list[_Request]:
        first = self._pending[0]
        batch = [r for r in self._pending if r.group == first.group][: self.batch_size]
        for item in batch:
            self._pending.remove(item)
        return batch

    def _generate(self, batch: Sequence[_Request]) -> None:
        """Left-padded greedy generation of one batch (blocking; runs in a worker thread)."""
        import torch

        try:
            model = self._model
            renderer = self._renderer
            assert model is not None and renderer is not None
            stop_ids = list(batch[0].stop_ids)
            pad = renderer.tokenizer.token_id("<|endoftext|>")
            pad = stop_ids[0] if pad is None else pad
            width = max(len(r.tokens) for r in batch)
            device = next(model.parameters()).device
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, item in enumerate(batch):
                n = len(item.tokens)
                ids[row, width - n :] = torch.tensor(item.tokens, dtype=torch.long)
                mask[row, width - n :] = 1
            with torch.no_grad():
                out = model.generate(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    max_new_tokens=batch[0].max_new_tokens,
                    do_sample=False,
                    temperature=None,
                    top_p=None,
                    top_k=None,
                    eos_token_id=stop_ids,
                    pad_token_id=pad,
                )
            self.batches_run += 1
            stops = set(stop_ids)
            for row, item in enumerate(batch):
                generated = [int(t) for t in out[row, width:].tolist()]
                end = next((i for i, t in enumerate(generated) if t in stops), None)
                if end is not None:
                    item.output, item.finish = generated[:end], FinishReason.STOP
                else:
                    item.output = generated[: item.max_new_tokens]
                    item.finish = (
                        FinishReason.LENGTH
                        if len(item.output) >= item.max_new_tokens
                        else FinishReason.STOP
                    )
        except Exception as exc:  # handed to every caller of the batch
            for item in batch:
                item.error = exc

    async def aclose(self) -> None:
        """Drop the model (idempotent); it is loaded again if used."""
        if self._start_lock is not None:
            async with self._start_lock:
                self._model = self._given_model
