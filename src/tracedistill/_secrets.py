"""API keys that never reach a record, a log line, a repr, an exception or a report."""

from __future__ import annotations

import os
import re
from typing import Final

__all__ = ["Secret", "resolve_secret"]

#: Keys at least this long are redacted wherever they occur, even inside a longer word. The
#: providers' keys are far longer (OpenRouter 73 characters, Anthropic about 108, OpenAI 51 and
#: up) and random, so any occurrence is the key. A shorter key (a placeholder such as "k" or
#: "sk", a local server's password) is also an ordinary run of letters: inside a word ("k" in
#: "unknown", "sk" in "task") it says nothing about the key and is left alone; where it stands
#: as a token of its own it is redacted.
WHOLE_WORD_BELOW: Final = 16
#: Characters that glue onto a key's own characters (keys are letters, digits, "-" and "_").
_WORD = r"A-Za-z0-9_\-"


class Secret:
    """An API key held so that printing, logging or pickling it never shows the value.

    Call :meth:`reveal` only where the key goes on the wire (an HTTP header).
    """

    __slots__ = ("_name", "_token", "_value")

    def __init__(self, value: str, *, name: str = "secret") -> None:
        if not isinstance(value, str) or not value:
            raise ValueError(f"{name} must be a non-empty string")
        self._value: Final = value
        self._name: Final = name
        # A short key is matched only where it stands as a token of its own.
        self._token: Final = (
            re.compile(f"(?<![{_WORD}]){re.escape(value)}(?![{_WORD}])")
            if len(value) < WHOLE_WORD_BELOW
            else None
        )

    def reveal(self) -> str:
        """Return the key itself, for the request that needs it."""
        return self._value

    @property
    def name(self) -> str:
        """What the key is (e.g. the environment variable it came from)."""
        return self._name

    def __repr__(self) -> str:
        return f"Secret({self._name}=****)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("a Secret is not pickled, so it cannot leak into a file or a process")

    def redact(self, text: str) -> str:
        """Return ``text`` with the key replaced by ``****`` wherever it occurs.

        A key shorter than :data:`WHOLE_WORD_BELOW` characters is replaced only where it is not
        part of a longer word (letters, digits, ``-``, ``_``), so that the words around it stay
        readable: with the key ``"k"``, ``"unknown key: k"`` becomes ``"unknown key: ****"``.
        """
        if self._value not in text:
            return text
        if self._token is not None:
            return self._token.sub("****", text)
        return text.replace(self._value, "****")


def resolve_secret(value: str | Secret | None, env_var: str) -> Secret | None:
    """Return the given key, else the one in ``env_var``, else None."""
    if isinstance(value, Secret):
        return value
    if value:
        return Secret(value, name="api_key")
    from_env = os.environ.get(env_var)
    return Secret(from_env, name=env_var) if from_env else None
