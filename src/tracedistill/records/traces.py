"""Traces: one teacher answer with its reasoning, usage and cost."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from typing import Any, Self, cast

import attrs
import orjson

from tracedistill import _json
from tracedistill.records.base import (
    SCHEMA_VERSION,
    FinishReason,
    ReasoningKind,
    _build,
    _frozen_mapping,
    _non_negative,
    _parse_time,
    slot_setters,
    trusted_maker,
    utcnow,
)
from tracedistill.records.messages import Message, SamplingParams, _messages, request_key


@attrs.frozen(slots=True, kw_only=True)
class TokenUsage:
    """Tokens billed for one response, as the provider counted them."""

    prompt_tokens: int = attrs.field(default=0, validator=_non_negative)
    completion_tokens: int = attrs.field(default=0, validator=_non_negative)
    reasoning_tokens: int = attrs.field(default=0, validator=_non_negative)

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens (reasoning tokens are part of the completion)."""
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def of_counts(cls, prompt: int, completion: int, reasoning: int = 0) -> TokenUsage:
        """Build from three counts, as the constructor does (same checks, same errors).

        Parsers call this once per response: counts that are plain non-negative ints (what
        providers send) skip the attrs validators; anything else goes through the constructor.
        """
        if (
            type(prompt) is int
            and type(completion) is int
            and type(reasoning) is int
            and prompt >= 0
            and completion >= 0
            and reasoning >= 0
        ):
            usage = object.__new__(cls)
            set_prompt, set_completion, set_reasoning = _setters(cls)
            set_prompt(usage, prompt)
            set_completion(usage, completion)
            set_reasoning(usage, reasoning)
            return usage
        return cls(prompt_tokens=prompt, completion_tokens=completion, reasoning_tokens=reasoning)

    def to_dict(self) -> dict[str, int]:
        """Return a JSON-compatible dict."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "reasoning_tokens": self.reasoning_tokens,
        }


def _usage(value: TokenUsage | Mapping[str, int]) -> TokenUsage:
    return value if isinstance(value, TokenUsage) else TokenUsage(**value)


def _sampling_params(value: SamplingParams | Mapping[str, Any] | None) -> SamplingParams | None:
    if value is None or isinstance(value, SamplingParams):
        return value
    return SamplingParams.from_dict(value)


THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


@attrs.frozen(slots=True, kw_only=True)
class Trace:
    """One teacher response to one problem, normalized to reasoning plus answer.

    A trace whose ``finish_reason`` is :attr:`FinishReason.ERROR` records a request that
    produced no usable response (``error`` says why); it is kept so the spend and the failure
    are not forgotten, and a later successful response for the same key supersedes it.
    """

    problem_id: str = attrs.field(validator=attrs.validators.min_len(1))
    teacher: str = attrs.field(validator=attrs.validators.min_len(1))
    model: str = attrs.field(validator=attrs.validators.min_len(1))
    prompt: tuple[Message, ...] = attrs.field(converter=_messages)
    reasoning: str = ""
    answer: str = ""
    reasoning_kind: ReasoningKind = attrs.field(default=ReasoningKind.RAW, converter=ReasoningKind)
    finish_reason: FinishReason = attrs.field(default=FinishReason.STOP, converter=FinishReason)
    usage: TokenUsage = attrs.field(factory=TokenUsage, converter=_usage)
    cost_usd: float | None = attrs.field(default=None, validator=_non_negative)
    #: True when ``cost_usd`` was computed from configured prices, False when the provider said.
    cost_estimated: bool = False
    latency_s: float = attrs.field(default=0.0, converter=float, validator=_non_negative)
    attempts: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    sample_index: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    params: SamplingParams | None = attrs.field(default=None, converter=_sampling_params)
    error: str | None = None
    created_at: _dt.datetime = attrs.field(factory=utcnow, converter=_parse_time)
    metadata: dict[str, Any] = attrs.field(factory=dict, converter=_frozen_mapping)
    key: str = attrs.field(validator=attrs.validators.min_len(1))

    @key.default
    def _default_key(self) -> str:
        return request_key(self.model, self.prompt, self.params, self.sample_index)

    def __attrs_post_init__(self) -> None:
        if not self.prompt:
            raise ValueError("a trace needs the prompt messages it answered")
        if self.finish_reason is FinishReason.ERROR and not self.error:
            raise ValueError("a trace with finish_reason 'error' needs an error message")

    @property
    def ok(self) -> bool:
        """Whether the request produced a response (possibly truncated)."""
        return self.finish_reason is not FinishReason.ERROR

    @property
    def truncated(self) -> bool:
        """Whether the response stopped at ``max_tokens``."""
        return self.finish_reason is FinishReason.LENGTH

    @property
    def completion(self) -> str:
        r"""The assistant turn as the student is trained on it.

        ``<think>\n{reasoning}\n</think>\n\n{answer}``, or the bare answer when there is no
        reasoning.
        """
        if not self.reasoning:
            return self.answer
        return f"{THINK_OPEN}\n{self.reasoning}\n{THINK_CLOSE}\n\n{self.answer}"

    def messages(self) -> tuple[Message, ...]:
        """The training view: the prompt messages followed by the assistant turn."""
        return (*self.prompt, Message("assistant", self.completion))

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-compatible dict."""
        # The first four fields are a fixed header that stores index without a full parse.
        return {
            "schema": SCHEMA_VERSION,
            "key": self.key,
            "finish_reason": str(self.finish_reason),
            "cost_usd": self.cost_usd,
            "problem_id": self.problem_id,
            "teacher": self.teacher,
            "model": self.model,
            "sample_index": self.sample_index,
            "prompt": [m.to_dict() for m in self.prompt],
            "params": None if self.params is None else self.params.to_dict(),
            "reasoning": self.reasoning,
            "answer": self.answer,
            "reasoning_kind": str(self.reasoning_kind),
            "usage": self.usage.to_dict(),
            "cost_estimated": self.cost_estimated,
            "latency_s": self.latency_s,
            "attempts": self.attempts,
            "error": self.error,
            "created_at": self.created_at.isoformat(),
            "metadata": self.metadata,
        }

    def to_jsonl(self) -> bytes:
        """:meth:`to_dict` as one line of compact JSON (newline included), as a store writes it.

        The enums and the time go to the encoder as they are (it writes them as ``to_dict``
        does), which spares building a second dict per trace on the generation hot path.
        """
        usage = self.usage
        data = {
            "schema": SCHEMA_VERSION,
            "key": self.key,
            "finish_reason": self.finish_reason,
            "cost_usd": self.cost_usd,
            "problem_id": self.problem_id,
            "teacher": self.teacher,
            "model": self.model,
            "sample_index": self.sample_index,
            "prompt": [{"role": m.role, "content": m.content} for m in self.prompt],
            "params": _params_json(self.params),
            "reasoning": self.reasoning,
            "answer": self.answer,
            "reasoning_kind": self.reasoning_kind,
            "usage": {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "reasoning_tokens": usage.reasoning_tokens,
            },
            "cost_estimated": self.cost_estimated,
            "latency_s": self.latency_s,
            "attempts": self.attempts,
            "error": self.error,
            "created_at": self.created_at,
            "metadata": self.metadata,
        }
        try:
            return orjson.dumps(data, option=_JSONL_OPTIONS)
        except orjson.JSONEncodeError:
            # Integers beyond 64 bits, a time zone the encoder does not know: the general path.
            return _json.dumps(self.to_dict(), newline=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Build from :meth:`to_dict`'s output."""
        return cast(Self, _build(cls, data))


_JSONL_OPTIONS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS

#: the last sampling parameters encoded, and their JSON: the traces of a run share one
#: ``SamplingParams``. The cache holds the object, so its identity cannot be reused.
_PARAMS_JSON: tuple[SamplingParams, orjson.Fragment] | None = None


def _params_json(params: SamplingParams | None) -> orjson.Fragment | dict[str, Any] | None:
    """``params.to_dict()`` encoded once per parameters object in a row, not once per trace
    (the dict itself when the encoder cannot write it: the caller's general path does).
    """
    global _PARAMS_JSON
    if params is None:
        return None
    cached = _PARAMS_JSON
    if cached is not None and cached[0] is params:
        return cached[1]
    data = params.to_dict()
    try:
        fragment = orjson.Fragment(orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS))
    except orjson.JSONEncodeError:
        return data
    _PARAMS_JSON = (params, fragment)
    return fragment


_now, _UTC = _dt.datetime.now, _dt.UTC  # utcnow() without its call, once per trace


_REASONING_KINDS = {str(k): k for k in ReasoningKind}
_FINISH_REASONS = {str(k): k for k in FinishReason}


def _trusted(cls: type[Any], *values: Any) -> Any:
    # Bypasses converters and validators: only for records this library wrote itself.
    return trusted_maker(cls)(*values)


_setters = slot_setters


def trace_from_stored(data: dict[str, Any]) -> Trace:
    """Rebuild a Trace from a dict that :meth:`Trace.to_dict` wrote, without re-validating.

    Reading a large store is dominated by validation that already ran when each trace was
    written; this skips it. Raises KeyError/TypeError/ValueError on a structurally wrong dict.
    """
    if data.get("schema") != SCHEMA_VERSION:
        return Trace.from_dict(data)
    new = object.__new__
    set_role, set_content = _setters(Message)
    prompt = []
    for m in data["prompt"]:
        msg = new(Message)
        set_role(msg, m["role"])
        set_content(msg, m["content"])
        prompt.append(msg)
    u = data["usage"]
    usage = new(TokenUsage)
    for setter, value in zip(
        _setters(TokenUsage),
        (u["prompt_tokens"], u["completion_tokens"], u["reasoning_tokens"]),
        strict=True,
    ):
        setter(usage, value)
    p = data["params"]
    params = None
    if p is not None:
        params = _trusted(
            SamplingParams,
            p["max_tokens"],
            float(p["temperature"]),
            float(p["top_p"]),
            p["top_k"],
            p["seed"],
            tuple(p["stop"]),
            p["extra"],
        )
    # Positional, in Trace's field order (problem_id ... key). Enum lookups by value map: the
    # same members as calling the enum, without its slow __call__.
    return cast(
        Trace,
        _trusted(
            Trace,
            data["problem_id"],
            data["teacher"],
            data["model"],
            tuple(prompt),
            data["reasoning"],
            data["answer"],
            _REASONING_KINDS[data["reasoning_kind"]],
            _FINISH_REASONS[data["finish_reason"]],
            usage,
            data["cost_usd"],
            data["cost_estimated"],
            float(data["latency_s"]),
            data["attempts"],
            data["sample_index"],
            params,
            data["error"],
            _dt.datetime.fromisoformat(data["created_at"]),
            data["metadata"],
            data["key"],
        ),
    )


def _trusted_request(
    problem_id: Any,
    teacher: Any,
    model: Any,
    key: Any,
    prompt: Any,
    params: Any,
    sample_index: Any,
) -> bool:
    """Whether a trace's request parts already have the exact types and ranges it holds."""
    return (
        type(problem_id) is str
        and type(teacher) is str
        and type(model) is str
        and type(key) is str
        and bool(problem_id and teacher and model and key)
        and type(prompt) is tuple
        and bool(prompt)
        and _all_messages(prompt)
        and (params is None or type(params) is SamplingParams)
        and type(sample_index) is int
        and sample_index >= 0
    )


def _all_messages(prompt: tuple[Any, ...]) -> bool:
    # A plain loop: no set or comprehension built per trace (most prompts hold one message).
    for m in prompt:  # noqa: SIM110 - all(genexpr) starts a generator frame per trace
        if type(m) is not Message:
            return False
    return True


def _trusted_answer(
    reasoning: Any,
    answer: Any,
    reasoning_kind: Any,
    finish_reason: Any,
    usage: Any,
    cost_usd: Any,
    cost_estimated: Any,
) -> bool:
    """Whether a trace's answer parts already have the exact types and ranges it holds."""
    return (
        type(reasoning) is str
        and type(answer) is str
        and type(reasoning_kind) is ReasoningKind
        and type(finish_reason) is FinishReason
        and finish_reason is not FinishReason.ERROR
        and type(usage) is TokenUsage
        and (cost_usd is None or (type(cost_usd) is float and cost_usd >= 0.0))
        and type(cost_estimated) is bool
    )


def _trusted_run(latency_s: float, attempts: int, metadata: Mapping[str, Any]) -> bool:
    return (
        type(latency_s) is float
        and latency_s >= 0.0  # False for NaN
        and type(attempts) is int
        and attempts >= 1
        and type(metadata) is dict
    )


def assemble_trace(
    *,
    problem_id: str,
    teacher: str,
    model: str,
    prompt: tuple[Message, ...],
    params: SamplingParams | None,
    sample_index: int,
    reasoning: str,
    answer: str,
    reasoning_kind: ReasoningKind,
    finish_reason: FinishReason,
    usage: TokenUsage,
    cost_usd: float | None,
    cost_estimated: bool,
    latency_s: float,
    attempts: int,
    metadata: Mapping[str, Any],
    key: str,
) -> Trace:
    """Build the trace of an answered request, as ``Trace(...)`` would, at a fraction of its cost.

    For the generation hot path: parts with the exact types a trace holds (a validated
    request's messages and parameters, a parser's enums and :class:`TokenUsage`), in range,
    skip attrs' converters and validators; anything else (a finish reason as a plain string, a
    NaN latency, a prompt of dicts) goes through ``Trace(...)``, which converts or rejects it.
    """
    if (
        _trusted_request(problem_id, teacher, model, key, prompt, params, sample_index)
        and _trusted_answer(
            reasoning, answer, reasoning_kind, finish_reason, usage, cost_usd, cost_estimated
        )
        and _trusted_run(latency_s, attempts, metadata)
    ):
        # Positional, in Trace's field order (no tuple built on the way); the metadata is
        # copied as the converter would.
        make = trusted_maker(Trace)
        return cast(
            Trace,
            make(
                problem_id,
                teacher,
                model,
                prompt,
                reasoning,
                answer,
                reasoning_kind,
                finish_reason,
                usage,
                cost_usd,
                cost_estimated,
                latency_s,
                attempts,
                sample_index,
                params,
                None,
                _now(_UTC),
                dict(metadata),
                key,
            ),
        )
    return Trace(
        problem_id=problem_id,
        teacher=teacher,
        model=model,
        prompt=prompt,
        params=params,
        sample_index=sample_index,
        reasoning=reasoning,
        answer=answer,
        reasoning_kind=reasoning_kind,
        finish_reason=finish_reason,
        usage=usage,
        cost_usd=cost_usd,
        cost_estimated=cost_estimated,
        latency_s=latency_s,
        attempts=attempts,
        metadata=metadata,
        key=key,
    )


def split_completion(text: str) -> tuple[str, str]:
    """Split an assistant turn into ``(reasoning, answer)`` at its ``<think>`` block.

    Text without a closed think block is all answer (an unclosed block is all reasoning).
    """
    stripped = text.lstrip()
    if not stripped.startswith(THINK_OPEN):
        return "", text
    body = stripped[len(THINK_OPEN) :]
    head, sep, tail = body.partition(THINK_CLOSE)
    if not sep:
        return body.strip("\n"), ""
    return head.strip("\n"), tail.lstrip("\n")
