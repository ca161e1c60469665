"""A teacher over any model client: prompts, request keys, cost and traces around ``reply``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tracedistill.clients.base import ModelClient
from tracedistill.teachers.base import Observer, Teacher, TeacherCompletion, TeacherRequest

__all__ = ["ClientTeacher"]


class ClientTeacher(Teacher):
    """A teacher whose attempts are one :meth:`~tracedistill.clients.base.ModelClient.reply`
    each: the client talks to the model, the teacher adds prompts, request keys, retries with
    rate limiting, cost and traces.

    The teacher owns the client: closing the teacher closes it.

    Args:
        client: the model client (any backend).
        model: the model id in request keys and traces (default: the client's ``model``).
        **kwargs: the :class:`~tracedistill.teachers.base.Teacher` arguments (name, params,
            prompts, pricing, retry, timeout).
    """

    def __init__(self, client: ModelClient, *, model: str | None = None, **kwargs: Any) -> None:
        super().__init__(model=model or client.model, **kwargs)
        self.client = client

    async def complete(
        self, request: TeacherRequest, *, observe: Observer | None = None
    ) -> TeacherCompletion:
        """One attempt: the client's reply to the request's messages and parameters."""
        return await self.client.reply(request.messages, request.params, observe=observe)

    def describe(self) -> Mapping[str, Any]:
        """A JSON-compatible description (no secret), with the client's."""
        return {**super().describe(), "client": dict(self.client.describe())}

    async def aclose(self) -> None:
        """Close the client (idempotent)."""
        await self.client.aclose()
