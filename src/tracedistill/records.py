"""The value records that flow through tracedistill: problems, traces, verdicts and their parts.

Every record is a frozen, slotted attrs class validated at construction. Each converts to a plain
JSON-compatible dict with :meth:`to_dict` and back with :meth:`from_dict`; the dict carries
``schema`` (:data:`SCHEMA_VERSION`) so a store written by a later version is recognised instead
of misread.
"""

from __future__ import annotations

import datetime as _dt
import enum
import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Self, TypeAlias, cast

import attrs

from tracedistill import _json
from tracedistill.errors import RecordError

__all__ = [
    "SCHEMA_VERSION",
    "CodeTests",
    "FinishReason",
    "FunctionTests",
    "JSONValue",
    "Message",
    "Problem",
    "ReasoningKind",
    "SamplingParams",
    "StdioCase",
    "TaskKind",
    "TokenUsage",
    "Trace",
    "Verdict",
    "VerdictReason",
    "content_hash",
    "request_key",
    "split_completion",
    "utcnow",
]

#: Version of the on-disk and JSON layout of every record. Bumped on incompatible changes.
SCHEMA_VERSION = 1

JSONValue: TypeAlias = (
    bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"] | tuple[Any, ...] | None
)

_HASH_CHARS = 32  # 128 bits of sha256: no collision in any realistic pool, half the index memory


def _canonical(value: object) -> bytes:
    return _json.dumps(value, sort_keys=True)


def content_hash(value: object, *, prefix: str = "") -> str:
    """Return a stable 128-bit hex digest of a JSON-serializable value (key order ignored)."""
    return prefix + hashlib.sha256(_canonical(value)).hexdigest()[:_HASH_CHARS]


def utcnow() -> _dt.datetime:
    """Return the current time as a timezone-aware UTC datetime."""
    return _dt.datetime.now(_dt.UTC)


class TaskKind(enum.StrEnum):
    """What kind of answer a problem expects, which decides how it is verified."""

    MATH = "math"
    CODE = "code"


class ReasoningKind(enum.StrEnum):
    """Whether a trace's reasoning is the model's raw chain of thought or a provider summary."""

    RAW = "raw"
    SUMMARY = "summary"
    NONE = "none"


class FinishReason(enum.StrEnum):
    """Why generation stopped."""

    STOP = "stop"
    LENGTH = "length"  # truncated at max_tokens
    CONTENT_FILTER = "content_filter"
    ERROR = "error"  # no usable response: see Trace.error
    OTHER = "other"


class VerdictReason(enum.StrEnum):
    """Why a verifier passed or failed a trace."""

    PASSED = "passed"
    WRONG_ANSWER = "wrong-answer"
    NO_ANSWER = "no-answer"
    INVALID_GOLD = "invalid-gold"
    TRUNCATED = "truncated"
    TIMEOUT = "timeout"
    TEST_FAILED = "test-failed"
    RUNTIME_ERROR = "runtime-error"
    SYNTAX_ERROR = "syntax-error"
    SANDBOX_VIOLATION = "sandbox-violation"
    MEMORY_LIMIT = "memory-limit"
    OUTPUT_LIMIT = "output-limit"
    VERIFIER_ERROR = "verifier-error"


def _check_version(cls: type, data: Mapping[str, Any]) -> None:
    found = data.get("schema", SCHEMA_VERSION)
    if not isinstance(found, int) or isinstance(found, bool) or found > SCHEMA_VERSION:
        raise RecordError(
            f"{cls.__name__} has schema version {found!r}; this tracedistill reads versions up "
            f"to {SCHEMA_VERSION}. Upgrade tracedistill."
        )


_FIELD_NAMES: dict[type, frozenset[str]] = {}


def _build(cls: type[Any], data: Mapping[str, Any], **converted: Any) -> Any:
    """Build ``cls`` from a dict, turning attrs/type errors into a RecordError that names cls."""
    _check_version(cls, data)
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = frozenset(f.name for f in attrs.fields(cls))
    unknown = data.keys() - names - {"schema", "type"}
    if unknown:
        raise RecordError(f"{cls.__name__}: unknown field(s) {sorted(unknown)}")
    kwargs = {k: v for k, v in data.items() if k in names}
    kwargs.update(converted)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, RecordError):
            raise
        raise RecordError(f"{cls.__name__}: {exc}") from exc


def _to_tuple(value: Iterable[Any]) -> tuple[Any, ...]:
    if isinstance(value, str | bytes):
        raise TypeError("expected a sequence, got a string")
    return tuple(value)


def _frozen_mapping(value: Mapping[str, Any] | None) -> dict[str, Any]:
    # Copy so the caller's later mutations never reach a stored record.
    return dict(value or {})


def _non_empty_str(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{attribute.name} must be a non-empty string, got {value!r:.80}")


def _non_negative(_inst: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and (value < 0 or (isinstance(value, float) and math.isnan(value))):
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def _parse_time(value: _dt.datetime | str | float) -> _dt.datetime:
    if isinstance(value, _dt.datetime):
        moment = value
    elif isinstance(value, str):
        moment = _dt.datetime.fromisoformat(value)
    elif isinstance(value, int | float):
        moment = _dt.datetime.fromtimestamp(value, _dt.UTC)
    else:
        raise TypeError(f"created_at must be a datetime or ISO string, got {value!r}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.UTC)
    return moment


# --- messages and sampling -----------------------------------------------------------------


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
    return content_hash(
        {
            "model": model,
            "messages": [m.to_dict() for m in messages],
            "params": None if params is None else params.to_dict(),
            "sample": sample_index,
        }
    )


# --- problems ------------------------------------------------------------------------------


@attrs.frozen(slots=True)
class StdioCase:
    """One stdin/stdout test: the program reads ``stdin`` and must print ``stdout``."""

    stdin: str = attrs.field(validator=attrs.validators.instance_of(str))
    stdout: str = attrs.field(validator=attrs.validators.instance_of(str))

    def to_dict(self) -> dict[str, str]:
        """Return a JSON-compatible dict."""
        return {"stdin": self.stdin, "stdout": self.stdout}


@attrs.frozen(slots=True, kw_only=True)
class FunctionTests:
    """Function-call tests in the evalplus style.

    The solution's ``entry_point`` is called with each argument list of ``base_inputs`` (and of
    ``plus_inputs``); its result is compared with ``expected_*`` when given, otherwise with the
    output of ``reference_solution`` on the same inputs. Floats compare within ``atol``.
    """

    entry_point: str = attrs.field(validator=attrs.validators.min_len(1))
    base_inputs: tuple[Any, ...] = attrs.field(converter=_to_tuple)
    plus_inputs: tuple[Any, ...] = attrs.field(default=(), converter=_to_tuple)
    expected_base: tuple[Any, ...] | None = attrs.field(
        default=None, converter=attrs.converters.optional(_to_tuple)
    )
    expected_plus: tuple[Any, ...] | None = attrs.field(
        default=None, converter=attrs.converters.optional(_to_tuple)
    )
    reference_solution: str | None = None
    atol: float = attrs.field(default=0.0, converter=float, validator=_non_negative)

    def __attrs_post_init__(self) -> None:
        if self.reference_solution is None and (
            self.expected_base is None or (self.plus_inputs and self.expected_plus is None)
        ):
            raise ValueError(
                f"FunctionTests for {self.entry_point!r} need expected outputs or a "
                "reference_solution to compute them"
            )
        for name, inputs, expected in (
            ("base", self.base_inputs, self.expected_base),
            ("plus", self.plus_inputs, self.expected_plus),
        ):
            if expected is not None and len(expected) != len(inputs):
                raise ValueError(
                    f"expected_{name} has {len(expected)} outputs for {len(inputs)} inputs"
                )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-compatible dict."""
        return {
            "entry_point": self.entry_point,
            "base_inputs": list(self.base_inputs),
            "plus_inputs": list(self.plus_inputs),
            "expected_base": None if self.expected_base is None else list(self.expected_base),
            "expected_plus": None if self.expected_plus is None else list(self.expected_plus),
            "reference_solution": self.reference_solution,
            "atol": self.atol,
        }


def _stdio_cases(value: Iterable[StdioCase | Mapping[str, str]]) -> tuple[StdioCase, ...]:
    return tuple(c if isinstance(c, StdioCase) else StdioCase(**c) for c in _to_tuple(value))


def _function_tests(value: FunctionTests | Mapping[str, Any] | None) -> FunctionTests | None:
    if value is None or isinstance(value, FunctionTests):
        return value
    return FunctionTests(**value)


@attrs.frozen(slots=True, kw_only=True)
class CodeTests:
    """The tests a code problem's solution must pass: any mix of the three formats.

    ``setup`` is code run before the asserts (imports, helpers). A solution passes only if it
    passes every test of every format present.
    """

    asserts: tuple[str, ...] = attrs.field(default=(), converter=_to_tuple)
    stdio: tuple[StdioCase, ...] = attrs.field(default=(), converter=_stdio_cases)
    function: FunctionTests | None = attrs.field(default=None, converter=_function_tests)
    setup: str = ""

    def __attrs_post_init__(self) -> None:
        if not (self.asserts or self.stdio or self.function):
            raise ValueError("CodeTests holds no test: give asserts, stdio cases or function tests")

    @property
    def count(self) -> int:
        """Number of individual test cases."""
        fn = self.function
        n_fn = 0 if fn is None else len(fn.base_inputs) + len(fn.plus_inputs)
        return len(self.asserts) + len(self.stdio) + n_fn

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-compatible dict."""
        return {
            "asserts": list(self.asserts),
            "stdio": [c.to_dict() for c in self.stdio],
            "function": None if self.function is None else self.function.to_dict(),
            "setup": self.setup,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Build from :meth:`to_dict`'s output."""
        return cast(Self, _build(cls, data))


def _code_tests(value: CodeTests | Mapping[str, Any] | None) -> CodeTests | None:
    if value is None or isinstance(value, CodeTests):
        return value
    return CodeTests.from_dict(value)


def _problem_id(problem: Problem) -> str:
    return content_hash(
        {
            "kind": str(problem.kind),
            "prompt": problem.prompt,
            "answer": problem.answer,
            "tests": None if problem.tests is None else problem.tests.to_dict(),
        },
        prefix=f"{problem.kind}-",
    )


@attrs.frozen(slots=True, kw_only=True)
class Problem:
    """A verifiable prompt: a math question with a gold answer, or a coding task with tests.

    ``id`` defaults to a hash of the content, so the same problem gets the same id in every run;
    give it explicitly when the source has its own stable id.
    """

    kind: TaskKind = attrs.field(converter=TaskKind)
    prompt: str = attrs.field(validator=_non_empty_str)
    answer: str | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of(str))
    )
    tests: CodeTests | None = attrs.field(default=None, converter=_code_tests)
    source: str = ""
    split: str = ""
    metadata: dict[str, Any] = attrs.field(factory=dict, converter=_frozen_mapping)
    id: str = attrs.field(validator=attrs.validators.min_len(1))

    @id.default
    def _default_id(self) -> str:
        return _problem_id(self)

    def __attrs_post_init__(self) -> None:
        if self.kind is TaskKind.MATH and self.answer is None:
            raise ValueError(f"math problem {self.id!r} needs a gold answer")
        if self.kind is TaskKind.CODE and self.tests is None:
            raise ValueError(f"code problem {self.id!r} needs tests")

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-compatible dict."""
        return {
            # A fixed header first, so a store indexes problems without a full parse.
            "schema": SCHEMA_VERSION,
            "id": self.id,
            "kind": str(self.kind),
            "source": self.source,
            "prompt": self.prompt,
            "answer": self.answer,
            "tests": None if self.tests is None else self.tests.to_dict(),
            "split": self.split,
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Build from :meth:`to_dict`'s output."""
        return cast(Self, _build(cls, data))


# --- traces --------------------------------------------------------------------------------


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

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Build from :meth:`to_dict`'s output."""
        return cast(Self, _build(cls, data))


_SLOT_SETTERS: dict[type, tuple[Any, ...]] = {}
_REASONING_KINDS = {str(k): k for k in ReasoningKind}
_FINISH_REASONS = {str(k): k for k in FinishReason}


def _trusted(cls: type[Any], *values: Any) -> Any:
    # Bypasses converters and validators: only for records this library wrote itself. Slot
    # descriptors set the (frozen) attributes directly, in field order, as attrs' __init__ does.
    setters = _SLOT_SETTERS.get(cls)
    if setters is None:
        setters = _SLOT_SETTERS[cls] = tuple(
            getattr(cls, f.name).__set__ for f in attrs.fields(cls)
        )
    inst = object.__new__(cls)
    for setter, value in zip(setters, values, strict=True):
        setter(inst, value)
    return inst


def _setters(cls: type[Any]) -> tuple[Any, ...]:
    setters = _SLOT_SETTERS.get(cls)
    if setters is None:
        setters = _SLOT_SETTERS[cls] = tuple(
            getattr(cls, f.name).__set__ for f in attrs.fields(cls)
        )
    return setters


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


# --- verdicts ------------------------------------------------------------------------------


@attrs.frozen(slots=True, kw_only=True)
class Verdict:
    """A verifier's judgement of one trace, stored beside (never inside) the trace.

    ``details`` holds what explains the verdict: the extracted answer, the failing test, the
    error output (truncated).
    """

    trace_key: str = attrs.field(validator=attrs.validators.min_len(1))
    problem_id: str = attrs.field(validator=attrs.validators.min_len(1))
    verifier: str = attrs.field(validator=attrs.validators.min_len(1))
    verifier_version: str = attrs.field(validator=attrs.validators.min_len(1))
    passed: bool = attrs.field(validator=attrs.validators.instance_of(bool))
    reason: VerdictReason = attrs.field(converter=VerdictReason)
    details: dict[str, Any] = attrs.field(factory=dict, converter=_frozen_mapping)
    elapsed_s: float = attrs.field(default=0.0, converter=float, validator=_non_negative)
    created_at: _dt.datetime = attrs.field(factory=utcnow, converter=_parse_time)

    def __attrs_post_init__(self) -> None:
        if self.passed != (self.reason is VerdictReason.PASSED):
            raise ValueError(
                f"verdict passed={self.passed} contradicts reason {str(self.reason)!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-compatible dict."""
        return {
            "schema": SCHEMA_VERSION,
            "trace_key": self.trace_key,
            "problem_id": self.problem_id,
            "verifier": self.verifier,
            "verifier_version": self.verifier_version,
            "passed": self.passed,
            "reason": str(self.reason),
            "details": self.details,
            "elapsed_s": self.elapsed_s,
            "created_at": self.created_at.isoformat(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Build from :meth:`to_dict`'s output."""
        return cast(Self, _build(cls, data))
