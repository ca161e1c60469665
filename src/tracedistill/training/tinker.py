"""TinkerTrainer: LoRA SFT on Tinker (or any server that speaks the Tinker API) with its SDK.

What it does beyond calling the SDK:

- The SDK's first calls block (configuration, session, model creation, with retries for minutes
  when the service is unreachable): they run in a worker thread under ``connect_timeout``.
- The base model is checked against what the server serves; a missing one is a
  :class:`~tracedistill.errors.ModelNotAvailableError` that lists the served models.
- Pipelining: step N+1's ``forward_backward`` and ``optim_step`` are submitted before step N's
  results are awaited (requests on one client run in submission order), so the service never
  waits for the client between steps.
- Every ``checkpoint_every`` steps both ``save_state`` (weights + optimizer, to resume) and
  ``save_weights_for_sampler`` (to evaluate) are submitted right after that step's
  ``optim_step``; their paths are kept apart as :class:`TrainingState` and
  :class:`SamplerWeights`.
- After a failed request the training client is poisoned: the session raises
  :class:`~tracedistill.training.base.RecoverableTrainingError` and :meth:`Trainer.train`
  starts it again (a new client from the last saved state, with optimizer) and trains the
  batches after it again, up to ``max_recoveries`` times. A restarted process resumes the same
  way from the training directory.

The loop itself (resume, schedule, checkpoints, metrics) is :meth:`Trainer.train`'s; this module
implements the narrow backend interface (:meth:`TinkerTrainer.open` and a session).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import numpy as np

from tracedistill._secrets import Secret, resolve_secret
from tracedistill.chat import ChatExample, ChatTokenizer
from tracedistill.errors import (
    CheckpointError,
    ModelNotAvailableError,
    TraceDistillError,
    TrainingError,
)
from tracedistill.records import SamplerWeights, TrainingState
from tracedistill.training.base import (
    PendingStep,
    RecoverableTrainingError,
    SavedWeights,
    SessionStatus,
    StepOutput,
    StepPlan,
    Trainer,
    TrainingSession,
)
from tracedistill.training.config import TrainConfig

__all__ = ["TinkerTrainer", "to_datum"]

log = logging.getLogger(__name__)
T = TypeVar("T")


def to_datum(example: ChatExample) -> Any:
    """The Tinker ``Datum`` of an example: inputs ``tokens[:-1]``, targets and weights ``[1:]``."""
    from tinker import types

    tokens = example.tokens
    return types.Datum(
        model_input=types.ModelInput.from_ints(tokens[:-1].tolist()),
        loss_fn_inputs={
            "target_tokens": types.TensorData.from_numpy(tokens[1:].astype(np.int64)),
            "weights": types.TensorData.from_numpy(example.weights[1:]),
        },
    )


def _nll(output: Any, batch: Sequence[ChatExample]) -> tuple[float, int]:
    """Summed NLL over trained tokens from ``forward_backward``'s per-datum logprobs."""
    total = 0.0
    count = 0
    outputs = output.loss_fn_outputs
    if len(outputs) != len(batch):
        raise TrainingError(
            f"forward_backward returned {len(outputs)} outputs for {len(batch)} sequences"
        )
    for out, ex in zip(outputs, batch, strict=True):
        logprobs = np.asarray(out["logprobs"].to_numpy(), dtype=np.float64).reshape(-1)
        weights = ex.weights[1:].astype(np.float64)
        if logprobs.shape != weights.shape:
            raise TrainingError(
                f"forward_backward returned {logprobs.shape[0]} logprobs for "
                f"{weights.shape[0]} targets of {ex.id!r}"
            )
        total += float(-(logprobs * weights).sum())
        count += int(weights.sum())
    return total, count


class _Poisoned(RecoverableTrainingError):
    """A request failed: the training client must be replaced."""


class TinkerTrainer(Trainer):
    """LoRA SFT on Tinker or a self-hosted Tinker-compatible server.

    Args:
        base_url: the service's URL (default: ``TINKER_BASE_URL``, else Tinker's production
            API). Point it at a self-hosted server to train on your own GPUs.
        api_key: the API key (default: ``TINKER_API_KEY``); never logged or recorded.
        tokenizer: the student's tokenizer: a :class:`ChatTokenizer`, a local directory or a
            Hub name in the local cache (default: the base model's, found without the Hub;
            Qwen models fall back to the offline Qwen3 tokenizer).
        connect_timeout: seconds allowed for the blocking first calls (capabilities, client
            creation, resuming from a state).
        request_timeout: seconds allowed for one step's results once awaited.
        max_recoveries: how many times a poisoned client is replaced before giving up.
        checkpoint_ttl_seconds: lifetime of saved checkpoints on the service (None: forever).
        pipeline: submit step N+1 before awaiting step N (turn off only to measure).
        check_model: check the base model against the server's capabilities first.
    """

    backend = "tinker"

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: str | Secret | None = None,
        tokenizer: ChatTokenizer | str | Path | None = None,
        connect_timeout: float = 300.0,
        request_timeout: float = 3600.0,
        max_recoveries: int = 3,
        checkpoint_ttl_seconds: int | None = None,
        pipeline: bool = True,
        check_model: bool = True,
    ) -> None:
        self.base_url = base_url
        self._api_key = resolve_secret(api_key, "TINKER_API_KEY")
        self._tokenizer = tokenizer
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.max_recoveries = max_recoveries
        self.checkpoint_ttl_seconds = checkpoint_ttl_seconds
        self.pipeline = pipeline
        self.check_model = check_model
        self._service: Any = None

    def __repr__(self) -> str:
        return f"TinkerTrainer(base_url={self.base_url!r}, api_key={self._api_key!r})"

    # --- blocking SDK calls, always in a worker thread and bounded -----------------------------

    async def _blocking(self, fn: Callable[[], T], limit_s: float, what: str) -> T:
        try:
            with anyio.fail_after(limit_s):
                return await anyio.to_thread.run_sync(fn, abandon_on_cancel=True)
        except TimeoutError as exc:
            raise TrainingError(
                f"{what} took longer than {limit_s:.0f}s (service at "
                f"{self.base_url or 'the default Tinker URL'}); check the URL, the network and "
                "the service's status"
            ) from exc

    def _service_client(self) -> Any:
        import tinker

        if self._service is None:
            self._service = tinker.ServiceClient(
                base_url=self.base_url,
                api_key=None if self._api_key is None else self._api_key.reveal(),
            )
        return self._service

    def _redact(self, text: str) -> str:
        return text if self._api_key is None else self._api_key.redact(text)

    async def served_models(self) -> list[str]:
        """Names of the models the service can train."""
        import tinker

        def fetch() -> Any:
            rest = tinker.RestClient(
                base_url=self.base_url,
                api_key=None if self._api_key is None else self._api_key.reveal(),
            )
            return rest.get_server_capabilities().result(timeout=self.connect_timeout)

        try:
            caps = await self._blocking(fetch, self.connect_timeout, "asking the served models")
        except TrainingError:
            raise
        except Exception as exc:
            raise TrainingError(
                f"cannot reach the Tinker service at {self.base_url or 'the default URL'}: "
                f"{self._redact(str(exc))}"
            ) from exc
        return [
            m.model_name for m in caps.supported_models if m.model_name and m.trainable is not False
        ]

    async def _check_model(self, base_model: str) -> None:
        served = await self.served_models()
        if base_model not in served:
            raise ModelNotAvailableError(
                f"{base_model!r} is not served by {self.base_url or 'Tinker'}; it serves: "
                f"{', '.join(served) or '(nothing)'}. Set TrainConfig.base_model to one of these."
            )

    async def _new_client(self, config: TrainConfig, state: TrainingState | None) -> Any:
        service = self._service_client()

        def create_lora() -> Any:
            return service.create_lora_training_client(
                base_model=config.base_model,
                rank=config.lora_rank,
                seed=config.seed,
                train_mlp=config.train_mlp or config.train_experts,
                train_attn=config.train_attention,
                train_unembed=config.train_unembed,
            ).result(timeout=self.connect_timeout)

        if state is None:
            return await self._create(
                create_lora, f"creating a LoRA training client for {config.base_model}", None
            )

        def from_state() -> Any:
            import tinker

            try:
                return service.create_training_client_from_state_with_optimizer(state.path).result(
                    timeout=self.connect_timeout
                )
            except (tinker.UnprocessableEntityError, tinker.NotFoundError) as exc:
                # Servers that predate the one-request restore (e.g. self-hosted
                # Tinker-compatible ones) take the older two steps: a client of the same shape,
                # then its state and optimizer loaded into it.
                log.info(
                    "one-request restore refused (%s); loading the state into a new client",
                    type(exc).__name__,
                )
                client = create_lora()
                with warnings.catch_warnings():
                    # Deprecated in the SDK, but the only restore such servers speak.
                    warnings.simplefilter("ignore", FutureWarning)
                    future = client.load_state_with_optimizer(state.path)
                future.result(timeout=self.connect_timeout)
                return client

        return await self._create(from_state, f"loading the training state {state.path}", state)

    async def _create(self, fn: Callable[[], Any], what: str, state: TrainingState | None) -> Any:
        try:
            return await self._blocking(fn, self.connect_timeout, what)
        except TrainingError:
            raise
        except Exception as exc:
            message = self._redact(str(exc))
            if state is not None:
                raise CheckpointError(f"{what} failed: {message}") from exc
            raise TrainingError(f"{what} failed: {message}") from exc

    # --- the narrow backend methods ----------------------------------------------------------

    async def open(self, config: TrainConfig, directory: Path) -> TrainingSession:
        """Check that the service trains ``config.base_model``; a session that trains it."""
        if self.check_model:
            await self._check_model(config.base_model)
        return _TinkerSession(self, config)

    def _submit(
        self,
        client: Any,
        config: TrainConfig,
        batch: list[ChatExample],
        lr: float,
        save: str | None,
    ) -> tuple[Any, Any, tuple[Any, Any] | None]:
        """Submit one step's requests (blocking SDK calls): the futures of each."""
        from tinker import types

        data = [to_datum(e) for e in batch]
        fwd = client.forward_backward(data, "cross_entropy")
        opt = client.optim_step(
            types.AdamParams(
                learning_rate=lr,
                beta1=config.adam_beta1,
                beta2=config.adam_beta2,
                eps=config.adam_eps,
                weight_decay=config.weight_decay,
                grad_clip_norm=config.grad_clip_norm,
            )
        )
        saves = None
        if save is not None:
            # Submitted after this step's optim_step: requests run in order, so both capture it.
            saves = (
                client.save_state(save, ttl_seconds=self.checkpoint_ttl_seconds),
                client.save_weights_for_sampler(save, ttl_seconds=self.checkpoint_ttl_seconds),
            )
        return fwd, opt, saves

    async def _wait(self, future: Any) -> Any:
        try:
            return await self._blocking(
                lambda: future.result(timeout=self.request_timeout),
                self.request_timeout + 5.0,
                "waiting for a training request",
            )
        except Exception as exc:
            raise _Poisoned(self._redact(f"{type(exc).__name__}: {exc}")) from exc

    async def _close(self, status: SessionStatus) -> None:
        service, self._service = self._service, None
        if service is None:
            return
        try:
            await self._blocking(
                lambda: service.close(status).result(timeout=30), 35.0, "closing the session"
            )
        except (TraceDistillError, Exception) as exc:  # closing is best effort
            log.debug("closing the Tinker session failed: %s", self._redact(str(exc)))


class _TinkerStep(PendingStep):
    """The futures of one submitted step."""

    def __init__(
        self, trainer: TinkerTrainer, batch: Sequence[ChatExample], futures: tuple[Any, Any, Any]
    ) -> None:
        self._trainer = trainer
        self._batch = batch
        self._fwd, self._opt, self._saves = futures

    async def output(self) -> StepOutput:
        output = await self._trainer._wait(self._fwd)
        await self._trainer._wait(self._opt)
        nll_sum, loss_tokens = _nll(output, self._batch)
        return StepOutput(nll=nll_sum / max(loss_tokens, 1), loss_tokens=loss_tokens)

    async def saved(self) -> SavedWeights:
        if self._saves is None:
            raise TrainingError("this step did not save a checkpoint")
        state = await self._trainer._wait(self._saves[0])
        sampler = await self._trainer._wait(self._saves[1])
        return SavedWeights(SamplerWeights(sampler.path), TrainingState(state.path))


class _TinkerSession(TrainingSession):
    """A training client on the service; replaced from a saved state after a failed request."""

    def __init__(self, trainer: TinkerTrainer, config: TrainConfig) -> None:
        self._trainer = trainer
        self._config = config
        self._client: Any = None
        # Requests on one client run in submission order, so step N+1 can be submitted before
        # step N's results are awaited and the service never waits for the client.
        self.lookahead = 1 if trainer.pipeline else 0

    async def start(self, state: TrainingState | None) -> None:
        self._client = await self._trainer._new_client(self._config, state)

    async def step(self, plan: StepPlan) -> PendingStep:
        batch = list(plan.batch)
        try:
            futures = await anyio.to_thread.run_sync(
                self._trainer._submit,
                self._client,
                self._config,
                batch,
                plan.learning_rate,
                plan.save_as,
            )
        except Exception as exc:
            raise _Poisoned(self._trainer._redact(f"{type(exc).__name__}: {exc}")) from exc
        return _TinkerStep(self._trainer, batch, futures)

    async def close(self, status: SessionStatus) -> None:
        self._client = None
        await self._trainer._close(status)
