"""LocalTrainer: LoRA fine-tuning with transformers + PEFT on this machine's CPU or GPU.

The same :class:`~tracedistill.training.base.TrainConfig` as the Tinker backend, the same loss
(the sum over trained tokens of their negative log-likelihood, which is what Tinker's
``cross_entropy`` computes) and the same run directory: an adapter directory to sample from and
the optimizer state to resume from every ``checkpoint_every`` steps. Torch work runs on a worker
thread so the event loop stays responsive. The loop is :meth:`Trainer.train`'s; this module
implements the narrow backend interface (:meth:`LocalTrainer.open` and a session).

Also here: :func:`build_tiny_model`, a randomly initialised Qwen3 or Qwen3-MoE model small enough
for tests and the offline demo, and :func:`warm_up_full`, the short full-parameter warm-up that
makes such a model trainable with LoRA (with frozen random embeddings LoRA barely moves the
logits).
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio
import anyio.to_thread
import orjson

from tracedistill.chat import ChatExample, ChatRenderer, ChatTokenizer, load_tokenizer
from tracedistill.errors import (
    CheckpointError,
    ConfigurationError,
    ModelNotAvailableError,
    TrainingError,
)
from tracedistill.records import Message, SamplerWeights, TrainingState
from tracedistill.training.base import (
    PendingStep,
    SavedWeights,
    SessionStatus,
    StepOutput,
    StepPlan,
    Trainer,
    TrainingSession,
)
from tracedistill.training.config import TrainConfig

if TYPE_CHECKING:
    import torch

__all__ = ["LocalTrainer", "build_tiny_model", "load_for_sampling", "warm_up_full"]

log = logging.getLogger(__name__)

_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
_MLP = ("gate_proj", "up_proj", "down_proj")
_STATE_FILE = "trainer_state.pt"
_ADAPTER = "adapter"


def _pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _load_base(base_model: str, device: str, dtype: str | None, download: bool) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    torch_dtype = (
        getattr(torch, dtype)
        if dtype
        else (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    )
    model: Any
    try:
        # The local cache first: no network round trip when the model is already here.
        model = AutoModelForCausalLM.from_pretrained(
            base_model, dtype=torch_dtype, local_files_only=True
        )
    except (OSError, ValueError) as local_exc:
        if not download or Path(base_model).expanduser().exists():
            raise ModelNotAvailableError(
                f"cannot load base model {base_model!r} locally ({local_exc}). Give a local "
                "model directory, or a Hub name already in the local cache."
            ) from local_exc
        try:
            model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch_dtype)
        except (OSError, ValueError) as exc:
            raise ModelNotAvailableError(
                f"cannot load base model {base_model!r}: not in the local cache and the Hugging "
                f"Face Hub did not provide it ({exc})"
            ) from exc
    return model.to(device)


def lora_targets(model: Any, config: TrainConfig) -> tuple[list[str], list[str]]:
    """The module names and 3-D parameter names LoRA adapts for ``config`` in ``model``.

    Attention and dense-MLP projections are ``nn.Linear`` modules (matched by name); the experts
    of a mixture-of-experts layer in transformers 5 are 3-D parameters, adapted through PEFT's
    ``target_parameters``; the router is never adapted.
    """
    import torch

    modules: set[str] = set()
    params: set[str] = set()
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if not isinstance(module, torch.nn.Linear):
            continue
        if config.train_attention and leaf in _ATTENTION:
            modules.add(leaf)
        elif ".experts." in name and leaf in _MLP:
            # Experts stored as a ModuleList of Linear layers (older transformers layouts).
            if config.train_experts:
                modules.add(leaf)
        elif config.train_mlp and leaf in _MLP:
            modules.add(leaf)
    if config.train_unembed and model.get_output_embeddings() is not None:
        modules.add("lm_head")
    if config.train_experts:
        for name, param in model.named_parameters():
            if param.ndim == 3 and ".experts." in name:
                parts = name.split(".")
                params.add(".".join(parts[-2:]))
    if not modules and not params:
        raise ConfigurationError(
            f"{config.base_model}: no module matches the LoRA targets of this configuration "
            "(attention/MLP/experts/unembed)"
        )
    return sorted(modules), sorted(params)


def _wrap_lora(model: Any, config: TrainConfig) -> Any:
    import torch
    from peft import LoraConfig, get_peft_model

    modules, params = lora_targets(model, config)
    alpha: Any = config.lora_alpha if config.lora_alpha is not None else config.lora_rank
    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=alpha,
        lora_dropout=0.0,
        bias="none",
        target_modules=modules or None,
        target_parameters=params or None,
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(config.seed)  # LoRA A matrices start from the run's seed
    with _quiet_peft():
        return get_peft_model(model, lora)


@contextlib.contextmanager
def _quiet_peft() -> Any:
    import warnings

    with warnings.catch_warnings():
        # PEFT warns about tied embeddings and target_parameters being experimental; both are
        # handled (the base weight stays frozen and shared).
        warnings.simplefilter("ignore", UserWarning)
        # PEFT reads transformers 5's deprecated `is_gradient_checkpointing` alias: the note is
        # for PEFT's maintainers, not for our users.
        warnings.filterwarnings(
            "ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning
        )
        yield


class _Engine:
    """The torch side of a local run: model, optimizer, one step, save and restore."""

    def __init__(
        self,
        config: TrainConfig,
        device: str,
        dtype: str | None,
        micro_batch: int | None,
        download: bool,
    ) -> None:
        import torch

        self.config = config
        self.device = device
        self.micro_batch = micro_batch or config.batch_size
        base = _load_base(config.base_model, device, dtype, download)
        base.config.use_cache = False
        self.model = _wrap_lora(base, config)
        self.model.train()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.params,
            lr=config.learning_rate,
            betas=(config.adam_beta1, config.adam_beta2),
            eps=config.adam_eps,
            weight_decay=config.weight_decay,
        )
        core = self.model.get_base_model()
        self._decoder = core.get_decoder() if hasattr(core, "get_decoder") else None
        self._head = self.model.get_output_embeddings()
        pad = getattr(base.config, "pad_token_id", None)
        self.pad_id = int(pad) if isinstance(pad, int) else 0

    def _nll_sum(self, batch: Sequence[ChatExample]) -> tuple[torch.Tensor, int]:
        """Sum of -log p over the weighted target tokens of a micro-batch, and their count."""
        import torch

        width = max(len(e) for e in batch) - 1
        inputs = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        targets = torch.zeros((len(batch), width), dtype=torch.long)
        weights = torch.zeros((len(batch), width), dtype=torch.float32)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ex in enumerate(batch):
            toks = torch.from_numpy(ex.tokens.astype("int64"))
            n = len(toks) - 1
            inputs[row, :n] = toks[:-1]
            targets[row, :n] = toks[1:]
            # weights[1:] as in a Tinker Datum: target t is learned iff token t carries loss.
            weights[row, max(ex.loss_start - 1, 0) : n] = 1.0
            mask[row, :n] = 1
        inputs, targets, weights, mask = (
            t.to(self.device) for t in (inputs, targets, weights, mask)
        )
        keep = weights > 0
        if self._decoder is not None and self._head is not None:
            hidden = self._decoder(input_ids=inputs, attention_mask=mask).last_hidden_state
            # Only positions that carry loss go through the (vocabulary-sized) output layer.
            logits = self._head(hidden[keep]).float()
        else:
            logits = self.model(input_ids=inputs, attention_mask=mask).logits[keep].float()
        nll = torch.nn.functional.cross_entropy(logits, targets[keep], reduction="sum")
        return nll, int(keep.sum().item())

    def step(self, batch: Sequence[ChatExample], lr: float) -> tuple[float, int]:
        """One optimizer step on ``batch``: returns (mean NLL per trained token, trained tokens)."""
        import torch

        self.optimizer.zero_grad(set_to_none=True)
        total_nll = 0.0
        total_tokens = 0
        for start in range(0, len(batch), self.micro_batch):
            nll, count = self._nll_sum(batch[start : start + self.micro_batch])
            nll.backward()  # type: ignore[no-untyped-call] # the gradient of the batch's summed NLL, as Tinker's cross_entropy
            total_nll += float(nll.detach())
            total_tokens += count
        if self.config.grad_clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.config.grad_clip_norm)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        if not math.isfinite(total_nll):
            raise TrainingError(f"the loss is {total_nll}: training diverged")
        return total_nll / max(total_tokens, 1), total_tokens

    def save(self, directory: Path, step: int, samples_seen: int) -> None:
        """Write the adapter and the optimizer state to ``directory`` (atomically)."""
        import torch

        tmp = directory.with_name(directory.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        # The base embeddings are frozen: the adapter needs only the LoRA weights.
        self.model.save_pretrained(str(tmp / _ADAPTER), save_embedding_layers=False)
        torch.save(
            {
                "optimizer": self.optimizer.state_dict(),
                "step": step,
                "samples_seen": samples_seen,
                "rng": torch.get_rng_state(),
            },
            tmp / _STATE_FILE,
        )
        shutil.rmtree(directory, ignore_errors=True)
        tmp.rename(directory)

    def restore(self, directory: Path) -> int:
        """Load adapter weights and optimizer state saved by :meth:`save`; return the step."""
        import torch
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        weights = directory / _ADAPTER / "adapter_model.safetensors"
        state_file = directory / _STATE_FILE
        if not weights.is_file() or not state_file.is_file():
            raise CheckpointError(f"{directory} is not a complete local training state")
        result = set_peft_model_state_dict(self.model, load_file(str(weights), device=self.device))
        missing = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
        if missing:
            raise CheckpointError(f"{directory}: adapter does not fit this model ({missing[:3]})")
        state = torch.load(state_file, map_location=self.device, weights_only=False)
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        return int(state["step"])


class LocalTrainer(Trainer):
    """LoRA SFT with transformers + PEFT on this machine.

    Args:
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...
        dtype: torch dtype name for the base weights (default float32 on CPU, bfloat16 on GPU).
        micro_batch_size: sequences per forward/backward pass; gradients of a step's micro
            batches are summed, so the step is the same as with the whole batch at once.
        tokenizer: the student's tokenizer (default: the one in the model directory, else the
            local Hub cache, else the offline Qwen3 tokenizer for Qwen models).
        download: fetch a Hub model that is not in the local cache (when the Hub is reachable).
    """

    backend = "local"

    def __init__(
        self,
        *,
        device: str = "auto",
        dtype: str | None = None,
        micro_batch_size: int | None = None,
        tokenizer: ChatTokenizer | str | Path | None = None,
        download: bool = True,
    ) -> None:
        if micro_batch_size is not None and micro_batch_size <= 0:
            raise ConfigurationError("micro_batch_size must be > 0")
        self.device = device
        self.dtype = dtype
        self.micro_batch_size = micro_batch_size
        self.download = download
        self._tokenizer = tokenizer
        # One torch job at a time: steps, saves and restores of a run never interleave.
        self._limiter = anyio.CapacityLimiter(1)

    async def open(self, config: TrainConfig, directory: Path) -> TrainingSession:
        """A session that loads the student on this machine when it starts."""
        return _LocalSession(self, config, directory)


class _LocalStep(PendingStep):
    """A finished torch step; its checkpoint is written when the loop asks for it.

    Saving then is still right: a local session takes no step before the loop has awaited
    this one (``lookahead`` 0), so the weights are this step's.
    """

    def __init__(self, session: _LocalSession, plan: StepPlan, output: StepOutput) -> None:
        self._session = session
        self._plan = plan
        self._output = output

    async def output(self) -> StepOutput:
        return self._output

    async def saved(self) -> SavedWeights:
        plan = self._plan
        if plan.save_as is None:
            raise TrainingError("this step did not save a checkpoint")
        return await self._session.save(plan.save_as, plan.number)


class _LocalSession(TrainingSession):
    """The student in this process; torch runs on one worker thread at a time."""

    lookahead = 0

    def __init__(self, trainer: LocalTrainer, config: TrainConfig, directory: Path) -> None:
        self._trainer = trainer
        self._config = config
        self._directory = directory
        self._engine: _Engine | None = None

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._trainer._limiter)

    async def start(self, state: TrainingState | None) -> None:
        trainer = self._trainer
        self._engine = await self._run(
            _Engine,
            self._config,
            _pick_device(trainer.device),
            trainer.dtype,
            trainer.micro_batch_size,
            trainer.download,
        )
        if state is not None:
            await self._run(self._engine.restore, Path(state.path))

    def _live(self) -> _Engine:
        if self._engine is None:
            raise TrainingError("the local training session was not started")
        return self._engine

    async def step(self, plan: StepPlan) -> PendingStep:
        nll, loss_tokens = await self._run(self._live().step, plan.batch, plan.learning_rate)
        return _LocalStep(self, plan, StepOutput(nll=nll, loss_tokens=loss_tokens))

    async def save(self, name: str, step: int) -> SavedWeights:
        """Save the adapter and the optimizer state under ``checkpoints/<name>``."""
        directory = self._directory / "checkpoints" / name
        samples_seen = step * self._config.batch_size
        await self._run(self._live().save, directory, step, samples_seen)
        return SavedWeights(
            SamplerWeights(str(directory / _ADAPTER)), TrainingState(str(directory))
        )

    async def close(self, status: SessionStatus) -> None:
        self._engine = None  # frees the model and optimizer


# --- sampling from adapters ------------------------------------------------------------------


def load_for_sampling(
    sampler: SamplerWeights | str | Path,
    *,
    base_model: str | Path | None = None,
    device: str = "auto",
    dtype: str | None = None,
) -> Any:
    """Load a base model with a saved adapter, ready for ``generate`` (blocking).

    ``base_model`` defaults to the one recorded in the adapter's ``adapter_config.json``.
    """
    from peft import PeftModel

    path = Path(sampler.path if isinstance(sampler, SamplerWeights) else sampler)
    config_file = path / "adapter_config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{path} is not an adapter directory (no adapter_config.json)")
    base = (
        str(base_model)
        if base_model
        else orjson.loads(config_file.read_bytes()).get("base_model_name_or_path")
    )
    if not base:
        raise CheckpointError(f"{config_file} does not name its base model: pass base_model")
    dev = _pick_device(device)
    model = _load_base(base, dev, dtype, download=False)
    with _quiet_peft():
        peft_model = PeftModel.from_pretrained(model, str(path))
    peft_model.eval()
    return peft_model


def greedy_generate(
    model: Any,
    renderer: ChatRenderer,
    messages: Sequence[Message],
    *,
    max_new_tokens: int,
) -> list[int]:
    """Greedy continuation of a chat prompt, stopped at the format's end token (blocking)."""
    import torch

    prompt = renderer.generation_prompt(messages)
    device = next(model.parameters()).device
    ids = torch.tensor([list(prompt.tokens)], dtype=torch.long, device=device)
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=list(prompt.stop_token_ids),
            pad_token_id=prompt.stop_token_ids[0],
        )
    return [int(t) for t in out[0, ids.shape[1] :].tolist()]


# --- tiny models for tests and the offline demo ----------------------------------------------


def build_tiny_model(
    directory: str | Path,
    *,
    kind: Literal["qwen3", "qwen3_moe"] = "qwen3",
    tokenizer: ChatTokenizer | None = None,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_experts: int = 4,
    tie_word_embeddings: bool = True,
    seed: int = 0,
) -> Path:
    """Write a randomly initialised Qwen3 (or Qwen3-MoE) model and its tokenizer to a directory.

    No download: the architecture comes from a transformers config, the weights from ``seed``
    and the tokenizer is the offline Qwen3 one unless given. The directory then works as a
    ``base_model`` for :class:`LocalTrainer` and for a self-hosted Tinker-compatible server.
    """
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tok = tokenizer if tokenizer is not None else load_tokenizer(None)
    heads = max(hidden_size // 16, 2)
    common: dict[str, Any] = {
        "vocab_size": tok.vocab_size,
        "hidden_size": hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": heads,
        "num_key_value_heads": max(heads // 2, 1),
        "head_dim": hidden_size // heads,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": tie_word_embeddings,
        "bos_token_id": tok.token_id("<|endoftext|>"),
        "eos_token_id": tok.token_id("<|im_end|>"),
        "pad_token_id": tok.token_id("<|endoftext|>"),
        "rope_theta": 10000.0,
    }
    torch.manual_seed(seed)
    model: Any
    if kind == "qwen3":
        model = Qwen3ForCausalLM(Qwen3Config(intermediate_size=hidden_size * 2, **common))
    elif kind == "qwen3_moe":
        cfg = Qwen3MoeConfig(
            intermediate_size=hidden_size * 2,
            moe_intermediate_size=hidden_size // 2,
            num_experts=num_experts,
            num_experts_per_tok=2,
            decoder_sparse_step=1,
            **common,
        )
        model = Qwen3MoeForCausalLM(cfg)
    else:
        raise ConfigurationError(f"kind must be 'qwen3' or 'qwen3_moe', got {kind!r}")
    model.save_pretrained(str(out))
    tok_backend = getattr(tok, "_fast", None)
    if tok_backend is None:
        raise ConfigurationError("build_tiny_model needs a fast (tokenizers) tokenizer")
    tok_backend.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_bytes(
        orjson.dumps(
            {
                "tokenizer_class": "Qwen2Tokenizer",
                "eos_token": "<|im_end|>",
                "pad_token": "<|endoftext|>",
                "model_max_length": 4096,
                "add_bos_token": False,
            }
        )
    )
    return out


def warm_up_full(
    model_dir: str | Path,
    texts: Sequence[str],
    *,
    tokenizer: ChatTokenizer | None = None,
    steps: int = 50,
    learning_rate: float = 3e-3,
    batch_size: int = 8,
    max_length: int = 256,
    seed: int = 0,
) -> list[float]:
    """Full-parameter training of a small model on plain texts, saved back in place (blocking).

    A randomly initialised model whose embeddings LoRA leaves frozen barely learns; a short
    warm-up on chat-formatted text fixes that. Returns the loss of each step.
    """
    import torch
    from transformers import AutoModelForCausalLM

    if not texts:
        raise ConfigurationError("warm_up_full needs at least one text")
    tok = tokenizer if tokenizer is not None else load_tokenizer(model_dir)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model.train()
    encoded = [ids[:max_length] for ids in tok.encode_batch(list(texts)) if len(ids) > 1]
    opt = torch.optim.AdamW(model.parameters(), lr=learning_rate, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    pad = tok.token_id("<|endoftext|>") or 0
    for _ in range(steps):
        pick = torch.randint(len(encoded), (min(batch_size, len(encoded)),), generator=gen)
        rows = [encoded[int(i)] for i in pick]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            labels[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.save_pretrained(str(model_dir))
    return losses
