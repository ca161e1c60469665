"""API keys that never reach a record, a log line, a repr, an exception or a report."""

from __future__ import annotations

import os
from typing import Final

__all__ = ["Secret", "resolve_secret"]


class Secret:
    """An API key held so that printing, logging or pickling it never shows the value.

    Call :meth:`reveal` only where the key goes on the wire (an HTTP header).
    """

    __slots__ = ("_name", "_value")

    def __init__(self, value: str, *, name: str = "secret") -> None:
        if not isinstance(value, str) or not value:
            raise ValueError(f"{name} must be a non-empty string")
        self._value: Final = value
        self._name: Final = name

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
        """Return ``text`` with every occurrence of the key replaced by ``****``."""
        return text.replace(self._value, "****") if self._value in text else text


def resolve_secret(value: str | Secret | None, env_var: str) -> Secret | None:
    """Return the given key, else the one in ``env_var``, else None."""
    if isinstance(value, Secret):
        return value
    if value:
        return Secret(value, name="api_key")
    from_env = os.environ.get(env_var)
    return Secret(from_env, name=env_var) if from_env else None
