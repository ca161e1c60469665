"""``python -m tracedistill doctor``: check, with a few tiny requests under a hard cost cap, what
the library relies on from a provider.

It reports the rate-limit headers the provider sends (names and values, the key redacted), the
limiter's reading of them (:func:`~tracedistill.clients.ratelimit.parse_rate_headers`), where
reasoning arrives (a separate field, an inline ``<think>`` block, a summary, or nowhere), whether
each response reports its cost, the finish reasons (``stop`` and a forced ``length``), and whether
streaming works. The cap is printed before anything is sent; every request's worst case (its
prompt plus ``max_tokens`` at the model's prices) is counted against it before it starts.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import attrs
import httpx

from tracedistill._secrets import Secret, resolve_secret
from tracedistill.clients.anthropic import MessageStream
from tracedistill.clients.openai_compat import ChatStream
from tracedistill.clients.ratelimit import RateInfo, RateLimiter, parse_rate_headers
from tracedistill.errors import ConfigurationError, ProviderError
from tracedistill.prompts import PromptSet, PromptTemplate
from tracedistill.records import Problem, SamplingParams
from tracedistill.teachers.anthropic import ANTHROPIC_BASE_URL, AnthropicTeacher
from tracedistill.teachers.base import TeacherRequest
from tracedistill.teachers.openai_compat import OPENROUTER_BASE_URL, OpenAICompatTeacher

__all__ = ["DoctorConfig", "run_doctor"]

logger = logging.getLogger(__name__)

PROVIDERS = ("openrouter", "anthropic", "openai")
_KEY_ENV = {
    "openrouter": "OPENROUTER_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "openai": "OPENAI_API_KEY",
}
_BASE_URL = {
    "openrouter": OPENROUTER_BASE_URL,
    "anthropic": ANTHROPIC_BASE_URL,
    "openai": "https://api.openai.com/v1",
}
#: USD per million tokens assumed when the provider does not publish the model's prices:
#: the dearest of the common reasoning models, so the cap holds whatever the model is.
FALLBACK_PRICES = (15.0, 75.0)
PROMPT = "What is 2 + 3? Think briefly, then answer with just the number."
#: Anthropic's smallest thinking budget, and what a request with it needs in all.
THINKING_BUDGET = 1024
THINKING_NEEDS = THINKING_BUDGET + 256
#: A prompt whose answer needs far more than 16 tokens (for the truncation check).
LONG_PROMPT = "Count from 1 to 200 in words, separated by commas."
_HEADER_MARKS = ("ratelimit", "rate-limit", "retry-after")

Backend = AnthropicTeacher | OpenAICompatTeacher


@attrs.frozen(slots=True, kw_only=True)
class DoctorConfig:
    """What the doctor checks and how much it may spend."""

    provider: str = attrs.field(validator=attrs.validators.in_(PROVIDERS))
    model: str
    base_url: str | None = None
    api_key_env: str | None = None
    max_usd: float = 0.01
    price_in: float | None = None
    price_out: float | None = None
    max_tokens: int = 256


class _Spend:
    """The hard cap: worst cases are committed before a request starts."""

    def __init__(self, cap: float, price_in: float, price_out: float) -> None:
        self.cap, self.price_in, self.price_out = cap, price_in / 1e6, price_out / 1e6
        self.committed = 0.0

    def affordable(self, input_tokens: int, wanted: int) -> int:
        left = self.cap - self.committed - input_tokens * self.price_in
        return max(0, min(wanted, math.floor(left / self.price_out))) if left > 0 else 0

    def commit(self, input_tokens: int, max_tokens: int) -> float:
        worst = input_tokens * self.price_in + max_tokens * self.price_out
        self.committed += worst
        return worst


def _teacher(
    config: DoctorConfig, key: Secret, stream: bool, thinking: int | None = None
) -> Backend:
    base_url = config.base_url or _BASE_URL[config.provider]
    prompts = PromptSet(math=PromptTemplate(user="{prompt}"))
    # httpx's own transport: the doctor wants every header of the answer, not the fast path.
    options: dict[str, Any] = {
        "api_key": key,
        "base_url": base_url,
        "prompts": prompts,
        "stream": stream,
        "idle_timeout": 60.0,
        "timeout": 120.0,
        "transport": lambda: httpx.AsyncHTTPTransport(),
    }
    if config.provider == "anthropic":
        if thinking is not None:  # Anthropic: thinking needs temperature 1
            options["params"] = SamplingParams(max_tokens=thinking + 256, temperature=1.0)
        return AnthropicTeacher(config.model, thinking=thinking, **options)
    if config.provider == "openrouter":
        return OpenAICompatTeacher.openrouter(config.model, **options)
    return OpenAICompatTeacher(config.model, **options)


def _request(teacher: Backend, max_tokens: int, prompt: str = PROMPT) -> TeacherRequest:
    params = teacher.params or SamplingParams(max_tokens=max_tokens)
    teacher.params = attrs.evolve(params, max_tokens=max_tokens)
    return teacher.request(Problem(kind="math", prompt=prompt, answer="5"))


def _shown_headers(headers: httpx.Headers, key: Secret) -> list[tuple[str, str]]:
    return [
        (name, key.redact(value))
        for name, value in headers.multi_items()
        if any(mark in name.lower() for mark in _HEADER_MARKS)
    ]


def _reasoning_place(provider: str, data: Mapping[str, Any]) -> str:
    """Where a non-streamed answer put its reasoning."""
    if provider == "anthropic":
        kinds = [b.get("type") for b in data.get("content") or [] if isinstance(b, Mapping)]
        if "thinking" in kinds:
            return "separate `thinking` content blocks (summarized on Claude 4 models)"
        return (
            "none (thinking was off in this check: it needs a 1,024-token budget, "
            f"{THINKING_NEEDS:,} tokens in all; raise --max-usd)"
        )
    choices = data.get("choices") or [{}]
    message = choices[0].get("message") or {} if isinstance(choices[0], Mapping) else {}
    found = []
    for field in ("reasoning", "reasoning_content"):
        if isinstance(message.get(field), str) and message[field]:
            found.append(f"separate field `{field}`")
    details = message.get("reasoning_details")
    if isinstance(details, list) and details:
        types = sorted({str(d.get("type")) for d in details if isinstance(d, Mapping)})
        found.append(f"`reasoning_details` items ({', '.join(types)})")
        if "reasoning.summary" in types and "reasoning.text" not in types:
            found.append("a summary, not the raw chain of thought")
    content = message.get("content")
    if isinstance(content, str) and ("<think>" in content or "</think>" in content):
        found.append("inline `<think>` block in the content")
    return "; ".join(found) or "none seen (the model may not reason, or hides it)"


async def _prices(config: DoctorConfig, teacher: Backend) -> tuple[float, float, str]:
    if config.price_in is not None and config.price_out is not None:
        return config.price_in, config.price_out, "given"
    if config.provider == "openrouter":
        try:
            listing = await teacher.client.get_json("/models")
            for item in listing.get("data") or []:
                if isinstance(item, Mapping) and item.get("id") == config.model:
                    pricing = item.get("pricing") or {}
                    return (
                        float(pricing["prompt"]) * 1e6,
                        float(pricing["completion"]) * 1e6,
                        "OpenRouter's model list",
                    )
        except (ProviderError, KeyError, TypeError, ValueError) as exc:
            logger.debug("no model prices: %s", exc)
    return (*FALLBACK_PRICES, "assumed (the dearest common models); pass --price-in/--price-out")


async def run_doctor(config: DoctorConfig, out: Callable[[str], None] = print) -> int:
    """Run the checks, print what they found, and return an exit status (0 = all worked)."""
    env = config.api_key_env or _KEY_ENV[config.provider]
    key = resolve_secret(None, env)
    if key is None:
        raise ConfigurationError(f"no API key: set {env} (or name another with --api-key-env)")
    out(f"tracedistill doctor: {config.provider}, model {config.model}")
    out(
        f"  hard cost cap: ${config.max_usd:.4f} (no request starts whose worst case would pass it)"
    )
    plain, streamed = _teacher(config, key, False), _teacher(config, key, True)
    failures = 0
    try:
        price_in, price_out, source = await _prices(config, plain)
        out(f"  prices: ${price_in:g} / ${price_out:g} per million input/output tokens ({source})")
        spend = _Spend(config.max_usd, price_in, price_out)
        if config.provider == "openrouter":
            await _openrouter_key(plain, key, out)
        # The cap is shared: 16 tokens for the truncation check, the rest split between the
        # plain and the streamed check.
        input_tokens = plain.estimate_input_tokens(_request(plain, 1)) + 16
        total = spend.affordable(3 * input_tokens, 10**9)
        share = min(config.max_tokens, max(0, total - 16) // 2)
        # Anthropic: thinking on in the plain check when what is left after the other two
        # checks affords its budget (--max-tokens bounds only the answers without thinking).
        thinks = config.provider == "anthropic" and total - 16 - share >= THINKING_NEEDS
        failures += await _check_plain_maybe_thinking(
            THINKING_NEEDS if thinks else share, thinks, config, plain, key, spend, out
        )
        failures += await _check_length(plain, spend, out)
        failures += await _check_stream(share, config, streamed, spend, out)
        out(f"  worst-case spend committed: ${spend.committed:.5f} of ${config.max_usd:.4f}")
    finally:
        await plain.aclose()
        await streamed.aclose()
    out("  result: " + ("everything checked works" if not failures else f"{failures} problem(s)"))
    return 0 if not failures else 1


async def _check_plain_maybe_thinking(
    wanted: int,
    thinks: bool,
    config: DoctorConfig,
    plain: Backend,
    key: Secret,
    spend: _Spend,
    out: Callable[[str], None],
) -> int:
    """The plain check, with Anthropic's thinking on when ``thinks`` (the cap affords it), so
    where the reasoning arrives is seen, not assumed.
    """
    if not thinks:
        return await _check_plain(wanted, config, plain, key, spend, out)
    thinker = _teacher(config, key, False, thinking=THINKING_BUDGET)
    try:
        return await _check_plain(wanted, config, thinker, key, spend, out)
    finally:
        await thinker.aclose()


def _afford(
    spend: _Spend,
    teacher: Backend,
    wanted: int,
    out: Callable[[str], None],
    what: str,
    *,
    prompt: str = PROMPT,
) -> TeacherRequest | None:
    request = _request(teacher, 1, prompt)
    input_tokens = teacher.estimate_input_tokens(request) + 16
    max_tokens = spend.affordable(input_tokens, wanted)
    if max_tokens < 16:
        out(f"  {what}: skipped (its worst case would pass the cap; raise --max-usd)")
        return None
    spend.commit(input_tokens, max_tokens)
    return _request(teacher, max_tokens, prompt)


async def _openrouter_key(teacher: Backend, key: Secret, out: Callable[[str], None]) -> None:
    try:
        info = (await teacher.client.get_json("/key")).get("data") or {}
    except ProviderError as exc:
        out(f"  key limits (GET /key): unavailable ({exc})")
        return
    shown = {k: info.get(k) for k in ("limit", "limit_remaining", "usage", "is_free_tier")}
    if info.get("rate_limit") is not None:
        shown["rate_limit"] = info.get("rate_limit")
    out(f"  key limits (GET /key): {key.redact(str(shown))}")


async def _check_plain(
    wanted: int,
    config: DoctorConfig,
    teacher: Backend,
    key: Secret,
    spend: _Spend,
    out: Callable[[str], None],
) -> int:
    request = _afford(spend, teacher, wanted, out, "plain request")
    if request is None:
        return 0
    path = "/v1/messages" if config.provider == "anthropic" else "/chat/completions"
    seen: list[RateInfo] = []
    try:
        body = teacher.body(request)
        client = teacher.client
        response = await client.send("POST", path, content=_dumps(body), observe=seen.append)
        data = client.json_object(response)
        completion = teacher.parse(data)
    except ProviderError as exc:
        out(f"  plain request: FAILED: {exc}")
        return 1
    headers = _shown_headers(response.headers, key)
    out("  rate-limit headers on a normal answer:" + ("" if headers else " none"))
    for name, value in headers:
        out(f"    {name}: {value}")
    limits = {name.lower(): value for name, value in headers}
    reading = parse_rate_headers(limits)
    out(f"  limiter's reading: {_limiter_reading(reading)}")
    if not reading.empty:
        fields = {f.name: getattr(reading, f.name) for f in attrs.fields(RateInfo)}
        out(f"    parsed: { {k: v for k, v in fields.items() if v is not None} }")
    out(f"  reasoning arrives as: {_reasoning_place(config.provider, data)}")
    cost = completion.cost_usd
    out(
        "  cost per response: "
        + (f"reported (${cost:.6f})" if cost is not None else "not reported (set pricing=)")
    )
    out(f"  finish reason: {completion.finish_reason.value} (usage {completion.usage})")
    return 0


_LABELS = {"requests": "requests", "input": "input tokens", "output": "output tokens"}


def _limiter_reading(info: RateInfo) -> str:
    """What a limiter told nothing would keep to after these headers: the per-minute rates it
    paces (headroom below them), and the limits it takes for budgets and does not pace.
    """
    if info.empty:
        return "nothing (it will learn the limits from 429s)"
    limiter = RateLimiter(None)
    limiter.observe(info)
    state = limiter.state()
    below = 1.0 - limiter.limits.headroom
    paced = [
        f"{label} {rate:,.0f}/min (paced at {rate * below:,.0f}/min)"
        for label, rate in (
            ("requests", state.request_rate),
            ("input tokens", state.input_tokens_rate),
            ("output tokens", state.output_tokens_rate),
            ("tokens", state.tokens_rate),
        )
        if rate is not None
    ]
    budgets = [
        f"{_LABELS.get(name, name)} {limit:,.0f} "
        + ("(no reset sent)" if reset is None else f"(resets in {reset:,.0f} s)")
        for name, (limit, reset) in limiter.budgets.items()
    ]
    parts = ["keeps to " + ", ".join(paced) if paced else "paces nothing from these headers"]
    if budgets:
        parts.append("not per-minute, so not paced (a budget): " + ", ".join(budgets))
    if info.key_limit is not None:
        parts.append(f"per-key limit {info.key_limit:g} of unknown interval: pauses only")
    return "; ".join(parts)


async def _check_length(teacher: Backend, spend: _Spend, out: Callable[[str], None]) -> int:
    """A request cut at ``max_tokens=16``: the provider must stop there and say so.

    Truncated answers are detected (and never bought again) by their finish reason, and the
    budget's worst case assumes ``max_tokens`` holds: either failing is a problem.
    """
    request = _afford(spend, teacher, 16, out, "truncation check", prompt=LONG_PROMPT)
    if request is None:
        return 0
    try:
        completion = await teacher.complete(request)
    except ProviderError as exc:
        out(f"  truncation check (max_tokens=16): FAILED: {exc}")
        return 1
    finish, used = completion.finish_reason.value, completion.usage.completion_tokens
    line = f"  finish reason at max_tokens=16: {finish} ({used} output tokens)"
    if used > 16:
        out(f"{line}: FAILED: the provider ignored max_tokens (budgets assume it holds)")
        return 1
    if finish == "length":
        out(line)
        return 0
    if used >= 16:
        out(f"{line}: FAILED: an answer cut at max_tokens is not reported as truncated")
        return 1
    out(f"{line}: inconclusive (the model stopped before max_tokens)")
    return 0


async def _check_stream(
    wanted: int, config: DoctorConfig, teacher: Backend, spend: _Spend, out: Callable[[str], None]
) -> int:
    request = _afford(spend, teacher, wanted, out, "streaming")
    if request is None:
        return 0
    path = "/v1/messages" if config.provider == "anthropic" else "/chat/completions"
    body = teacher.body(request)
    body["stream"] = True
    sink: ChatStream | MessageStream
    if isinstance(teacher, AnthropicTeacher):
        sink = MessageStream(teacher.name, teacher.client.redact)
    else:
        assert isinstance(teacher, OpenAICompatTeacher)
        body["stream_options"] = {"include_usage": True}
        sink = ChatStream(teacher.name, teacher.client.redact)
    started = anyio.current_time()
    try:
        await teacher.client.post_stream(path, body, sink)
        whole = sink.message() if isinstance(sink, MessageStream) else sink.response()
        completion = teacher.parse(whole)
    except ProviderError as exc:
        out(f"  streaming: FAILED: {exc}")
        return 1
    events = sink.events if isinstance(sink, MessageStream) else sink.chunks
    usage = "with usage" if completion.usage.completion_tokens else "WITHOUT usage"
    cost = "" if completion.cost_usd is None else f", cost ${completion.cost_usd:.6f}"
    out(
        f"  streaming: works ({events} events in {anyio.current_time() - started:.1f}s, "
        f"finish {completion.finish_reason.value}, {usage}{cost})"
    )
    return 0


def _dumps(body: Any) -> bytes:
    import orjson

    return orjson.dumps(body)
