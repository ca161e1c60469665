"""Chat messages, sampling parameters and the request keys of one sample and one evaluation."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Self, cast

import attrs

from tracedistill.errors import RecordError
from tracedistill.records.base import (
    _build,
    _frozen_mapping,
    _non_negative,
    _to_tuple,
    content_hash,
)


@attrs.frozen(slots=True)
class Message:
    """One chat message."""

    role: str = attrs.field(validator=attrs.validators.in_(("system", "user", "assistant")))
    content: str = attrs.field(validator=attrs.validators.instance_of(str))

    def to_dict(self) -> dict[str, str]:
        """Return the OpenAI-style ``{"role", "content"}`` dict."""
        return {"role": self.role, "content": self.content}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Build from a ``{"role", "content"}`` dict."""
        try:
            return cls(role=data["role"], content=data["content"])
        except (KeyError, TypeError, ValueError) as exc:
            raise RecordError(f"Message: {exc!r} in {dict(data)!r:.200}") from exc

    @classmethod
    def of_text(cls, role: str, content: str) -> Self:
        """Build a message as the constructor does (same checks, same errors), at less cost.

        Prompt templates call this once per request: a plain ``str`` role among the three and
        a plain ``str`` content skip attrs' validators; anything else goes through the
        constructor, which rejects it as always.
        """
        if type(role) is str and type(content) is str and role in _ROLES:
            message = object.__new__(cls)
            _SET_ROLE(message, role)
            _SET_CONTENT(message, content)
            return message
        return cls(role, content)


_ROLES = frozenset(("system", "user", "assistant"))
# The slot descriptors' setters: how attrs' own __init__ sets a frozen slotted field.
_SET_ROLE = getattr(Message, "role").__set__  # noqa: B009 - the descriptor, not an attribute
_SET_CONTENT = getattr(Message, "content").__set__  # noqa: B009


def _messages(value: Iterable[Message | Mapping[str, Any]]) -> tuple[Message, ...]:
    return tuple(m if isinstance(m, Message) else Message.from_dict(m) for m in _to_tuple(value))


@attrs.frozen(slots=True, kw_only=True)
class SamplingParams:
    """How a model is sampled. ``temperature=0`` means greedy."""

    max_tokens: int = attrs.field(
        validator=[attrs.validators.instance_of(int), attrs.validators.gt(0)]
    )
    temperature: float = attrs.field(default=1.0, converter=float, validator=_non_negative)
    top_p: float = attrs.field(
        default=1.0, converter=float, validator=[attrs.validators.gt(0.0), attrs.validators.le(1.0)]
    )
    top_k: int | None = attrs.field(default=None)
    seed: int | None = attrs.field(default=None)
    stop: tuple[str, ...] = attrs.field(default=(), converter=_to_tuple)
    #: Backend-specific request fields (e.g. OpenRouter's ``reasoning``), part of the request key.
    extra: dict[str, Any] = attrs.field(factory=dict, converter=_frozen_mapping)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-compatible dict."""
        return {
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "seed": self.seed,
            "stop": list(self.stop),
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Build from :meth:`to_dict`'s output."""
        return cast(Self, _build(cls, data))


def request_key(
    model: str,
    messages: Sequence[Message],
    params: SamplingParams | None,
    sample_index: int = 0,
) -> str:
    """Return the key that identifies one paid request: same inputs, same key, bought once.

    The key hashes the model, the messages, the sampling parameters and the sample index, so
    asking for a second sample of the same prompt gets a new key while a rerun does not.
    """
    params_dict = None
    if params is not None:
        # A run sends one (frozen) SamplingParams with every request: its dict is built once,
        # only read here, and rebuilt when another params object comes.
        last = _LAST_PARAMS
        if last[0] is params:
            params_dict = last[1]
        else:
            params_dict = params.to_dict()
            _remember_params(params, params_dict)
    return content_hash(
        {
            "model": model,
            "messages": [m.to_dict() for m in messages],
            "params": params_dict,
            "sample": sample_index,
        }
    )


_LAST_PARAMS: tuple[SamplingParams | None, dict[str, Any] | None] = (None, None)


def _remember_params(params: SamplingParams, params_dict: dict[str, Any]) -> None:
    global _LAST_PARAMS  # one pair, replaced as a whole: safe to read from any thread
    _LAST_PARAMS = (params, params_dict)


def evaluation_request_key(
    model: str, prompt: Sequence[Message] | str, params: SamplingParams
) -> str:
    """Return the key of one evaluation request: same model, prompt and parameters, same key.

    An evaluation log matches each stored response to its request by this key, so a rerun
    samples only what is missing. Its layout differs from :func:`request_key` (a completion
    prompt is a string, and an evaluation takes one sample per problem) and never changes:
    stored evaluation logs resume on it.
    """
    rendered: Any = prompt if isinstance(prompt, str) else [m.to_dict() for m in prompt]
    return content_hash({"model": model, "prompt": rendered, "params": params.to_dict()})
