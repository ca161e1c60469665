"""Small helpers shared by the backends that talk to Tinker through the tinker SDK."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio.to_thread

__all__ = ["resolve_future"]


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
