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
- After a failed request the training client is poisoned: a new one is created from the last
  saved state (with optimizer) and the batches after it are trained again, up to
  ``max_recoveries`` times. A restarted process resumes the same way from the run directory.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import anyio
import anyio.to_thread
import attrs
import numpy as np

from tracedistill._secrets import Secret, resolve_secret
from tracedistill.chat import ChatExample, ChatTokenizer
from tracedistill.errors import (
    CheckpointError,
    ModelNotAvailableError,
    TraceDistillError,
    TrainingError,
)
from tracedistill.records import utcnow
from tracedistill.training.base import (
    Checkpoint,
    RunDirectory,
    SamplerWeights,
    StepCallback,
    StepMetrics,
    TrainConfig,
    Trainer,
    TrainingInput,
    TrainingRun,
    TrainingState,
)
from tracedistill.training.data import batch_indices

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


@attrs.define
class _Pending:
    step: int  # 1-based step this submission completes
    epoch: int
    batch: list[ChatExample]
    lr: float
    submitted: float
    fwd: Any
    opt: Any
    saves: tuple[Any, Any] | None


class _Poisoned(Exception):
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

    # --- the training loop ---------------------------------------------------------------------

    def _submit(
        self,
        client: Any,
        config: TrainConfig,
        batch: list[ChatExample],
        lr: float,
        save: str | None,
    ) -> tuple[Any, Any, tuple[Any, Any] | None]:
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

    async def train(
        self,
        examples: TrainingInput,
        config: TrainConfig,
        run_dir: str | Path,
        *,
        on_step: StepCallback | None = None,
    ) -> TrainingRun:
        """Train LoRA adapters on the service; see :meth:`Trainer.train`."""
        started = utcnow()
        rd = RunDirectory(run_dir)
        rd.prepare(config, self.backend)
        if self.check_model:
            await self._check_model(config.base_model)
        data = await self.prepare(examples, config)
        rd.write_data_report(data.report)
        pool = data.examples
        total = config.total_steps(len(pool))
        last = rd.last_resumable()
        resumed_from = None if last is None else last.step
        step = 0 if last is None else last.step
        status: Literal["success", "errored", "interrupted"] = "interrupted"
        try:
            client = None
            if step < total:
                client = await self._new_client(config, None if last is None else last.state)
                if last is not None:
                    log.info("resuming %s from step %d (%s)", rd.path, step, last.state)
            recoveries = 0
            while step < total:
                assert client is not None
                try:
                    step = await self._run_steps(client, config, rd, pool, step, total, on_step)
                except _Poisoned as exc:
                    recoveries += 1
                    if recoveries > self.max_recoveries:
                        raise TrainingError(
                            f"training requests kept failing after {self.max_recoveries} "
                            f"recoveries (last: {exc}). Saved checkpoints are in {rd.path}; run "
                            "again to resume from the last one."
                        ) from exc
                    last = rd.last_resumable()
                    step = 0 if last is None else last.step
                    log.warning(
                        "Tinker request failed (%s); recovering from %s (step %d), try %d of %d",
                        exc,
                        "scratch" if last is None else last.state,
                        step,
                        recoveries,
                        self.max_recoveries,
                    )
                    client = await self._new_client(config, None if last is None else last.state)
            status = "success"
        except Exception:
            status = "errored"
            raise
        finally:
            # Ends the session even on errors and cancellation, so the service frees the
            # training client's resources now rather than at its session timeout.
            with anyio.CancelScope(shield=True):
                await self._close(status)
        run = TrainingRun(
            run_dir=rd.path,
            backend=self.backend,
            config=config,
            total_steps=total,
            checkpoints=rd.checkpoints(),
            metrics=rd.metrics(),
            data=data.report,
            resumed_from=resumed_from,
            started_at=started,
            finished_at=utcnow(),
        )
        rd.write_run(run)
        return run

    async def _run_steps(
        self,
        client: Any,
        config: TrainConfig,
        rd: RunDirectory,
        pool: Sequence[ChatExample],
        start: int,
        total: int,
        on_step: StepCallback | None,
    ) -> int:
        """Train steps ``start+1 .. total``; return the last step completed."""
        pending: _Pending | None = None
        done = start
        last_finish = time.perf_counter()
        for step in range(start, total):
            epoch, idx = batch_indices(config, len(pool), step)
            batch = [pool[i] for i in idx]
            lr = config.learning_rate_at(step, total)
            number = step + 1
            save = (
                f"step_{number:06d}"
                if number % config.checkpoint_every == 0 or number == total
                else None
            )
            submitted = time.perf_counter()
            try:
                fwd, opt, saves = await anyio.to_thread.run_sync(
                    self._submit, client, config, batch, lr, save
                )
            except Exception as exc:
                raise _Poisoned(self._redact(f"{type(exc).__name__}: {exc}")) from exc
            current = _Pending(number, epoch, batch, lr, submitted, fwd, opt, saves)
            if pending is not None:
                last_finish = await self._finish(pending, config, rd, total, last_finish, on_step)
                done = pending.step
            if not self.pipeline:
                last_finish = await self._finish(current, config, rd, total, last_finish, on_step)
                done = current.step
                pending = None
            else:
                pending = current
        if pending is not None:
            await self._finish(pending, config, rd, total, last_finish, on_step)
            done = pending.step
        return done

    async def _finish(
        self,
        p: _Pending,
        config: TrainConfig,
        rd: RunDirectory,
        total: int,
        last_finish: float,
        on_step: StepCallback | None,
    ) -> float:
        output = await self._wait(p.fwd)
        await self._wait(p.opt)
        nll_sum, loss_tokens = _nll(output, p.batch)
        finished = time.perf_counter()
        metrics = StepMetrics(
            step=p.step,
            epoch=p.epoch,
            samples_seen=p.step * config.batch_size,
            nll=nll_sum / max(loss_tokens, 1),
            tokens=sum(len(e) for e in p.batch),
            loss_tokens=loss_tokens,
            learning_rate=p.lr,
            # Wall time this step added to the run: from when the previous one finished (or
            # this one was submitted, if later) to when this one did.
            seconds=finished - max(last_finish, p.submitted),
        )
        rd.add_metrics(metrics)
        if p.saves is not None:
            state = await self._wait(p.saves[0])
            sampler = await self._wait(p.saves[1])
            rd.add_checkpoint(
                Checkpoint(
                    step=p.step,
                    samples_seen=p.step * config.batch_size,
                    sampler=SamplerWeights(sampler.path),
                    state=TrainingState(state.path),
                    base_model=config.base_model,
                    final=p.step == total,
                )
            )
        if on_step is not None:
            maybe = on_step(metrics)
            if maybe is not None:
                await maybe
        return finished

    async def _close(self, status: Literal["success", "errored", "interrupted"]) -> None:
        service, self._service = self._service, None
        if service is None:
            return
        try:
            await self._blocking(
                lambda: service.close(status).result(timeout=30), 35.0, "closing the session"
            )
        except (TraceDistillError, Exception) as exc:  # closing is best effort
            log.debug("closing the Tinker session failed: %s", self._redact(str(exc)))
