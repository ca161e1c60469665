"""Small helpers shared by the backends that talk to Tinker through the tinker SDK."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import anyio.to_thread

from tracedistill._secrets import Secret
from tracedistill.chat import GenerationPrompt
from tracedistill.errors import InvalidRequestError
from tracedistill.records import SamplingParams

__all__ = [
    "chat_stop",
    "create_sampling_client",
    "new_service_client",
    "resolve_future",
    "served_models",
    "tinker_sampling_params",
]

log = logging.getLogger(__name__)


async def resolve_future(future: Any) -> Any:
    """The value of a tinker SDK future: awaited on asyncio, else waited for in a worker thread.

    The SDK's futures are awaitable only on an asyncio loop; under another anyio backend the
    blocking ``result()`` runs in a worker thread so the loop never blocks.
    """
    try:
        asyncio.get_running_loop()
        on_asyncio = True
    except RuntimeError:
        on_asyncio = False
    if on_asyncio and hasattr(future, "__await__"):
        return await future
    return await anyio.to_thread.run_sync(future.result, abandon_on_cancel=True)


def chat_stop(params: SamplingParams, generation: GenerationPrompt) -> list[int] | list[str]:
    """Where a chat completion stops: the user's stop strings plus the format's end, as strings
    when there are user strings (the API takes one kind), else the format's end token ids.
    """
    if params.stop:
        return [*generation.stop_strings, *params.stop]
    return list(generation.stop_token_ids)


def tinker_sampling_params(params: SamplingParams, stop: list[int] | list[str]) -> Any:
    """The tinker SDK's ``SamplingParams`` for ours (``top_k=None`` is the SDK's -1: no limit)."""
    import tinker

    return tinker.types.SamplingParams(
        max_tokens=params.max_tokens,
        temperature=params.temperature,
        top_k=params.top_k if params.top_k is not None else -1,
        top_p=params.top_p,
        seed=params.seed,
        stop=stop,
    )


def new_service_client(*, base_url: str | None, api_key: Secret | None) -> Any:
    """A new ``tinker.ServiceClient`` for ``base_url`` and ``api_key`` (SDK defaults if None)."""
    import tinker

    return tinker.ServiceClient(
        base_url=base_url, api_key=None if api_key is None else api_key.reveal()
    )


def served_models(*, base_url: str | None, api_key: Secret | None) -> list[str] | None:
    """The base models the service at ``base_url`` says it serves (blocking), or None when it
    does not say (an older server, or the question failed: the check is only a courtesy).
    """
    import tinker

    try:
        # A session-less REST client: it opens no session and needs no closing.
        rest = tinker.RestClient(
            base_url=base_url, api_key=None if api_key is None else api_key.reveal()
        )
        capabilities = rest.get_server_capabilities().result()
        names = [m.model_name for m in capabilities.supported_models if m.model_name]
    except Exception as exc:
        log.debug("the Tinker service did not list its models: %s: %s", type(exc).__name__, exc)
        return None
    return [str(n) for n in names] or None


def create_sampling_client(
    service: Any,
    *,
    model_path: str | None,
    base_model: str | None,
    served: list[str] | None = None,
) -> Any:
    """Create a sampling client on ``service`` (blocking: call it in a worker thread, bounded
    in time) for ``model_path`` (sampler weights) or, when it is None, ``base_model``.

    Raises:
        InvalidRequestError: ``base_model`` is not among the ``served`` models (a Tinker-API
            server may accept an unknown base model here and refuse only each sample, after
            the SDK's own retries).
    """
    known = {n.lower() for n in served or ()}
    if model_path is None and base_model and served and base_model.lower() not in known:
        raise InvalidRequestError(
            f"{base_model} is not served by this Tinker service (it serves: "
            f"{', '.join(served[:10])}{', ...' if len(served) > 10 else ''})",
            status=404,
        )
    future = service.create_sampling_client(
        model_path=model_path, base_model=None if model_path else base_model
    )
    return future.result() if hasattr(future, "result") else future
