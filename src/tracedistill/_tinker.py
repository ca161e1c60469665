"""Small helpers shared by the backends that talk to Tinker through the tinker SDK."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio.to_thread

from tracedistill._secrets import Secret
from tracedistill.chat import GenerationPrompt
from tracedistill.records import SamplingParams

__all__ = [
    "chat_stop",
    "create_sampling_client",
    "resolve_future",
    "tinker_sampling_params",
]


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


def create_sampling_client(
    service: Any,
    *,
    base_url: str | None,
    api_key: Secret | None,
    model_path: str | None,
    base_model: str | None,
) -> tuple[Any, Any, bool]:
    """Create a sampling client (blocking: call it in a worker thread, bounded in time).

    Returns ``(service, client, created)``: the given ``tinker.ServiceClient`` or a new one built
    from ``base_url`` and ``api_key`` (``created`` says which), and the sampling client for
    ``model_path`` (sampler weights) or, when it is None, ``base_model``.
    """
    created = service is None
    if created:
        import tinker

        service = tinker.ServiceClient(
            base_url=base_url, api_key=None if api_key is None else api_key.reveal()
        )
    future = service.create_sampling_client(
        model_path=model_path, base_model=None if model_path else base_model
    )
    client = future.result() if hasattr(future, "result") else future
    return service, client, created
