"""Progress bars that work in a terminal and in Jupyter, and switch off cleanly."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from tqdm.auto import tqdm

__all__ = ["Progress"]


def _enabled(requested: bool | None) -> bool:
    if requested is not None:
        return requested
    # Off when asked through the environment (CI logs), on otherwise; tqdm.auto picks the
    # notebook widget inside Jupyter and a text bar in a terminal.
    return os.environ.get("TRACEDISTILL_PROGRESS", "1") not in ("0", "false", "no")


class Progress:
    """A progress bar with live counters shown after it (done, failed, spend, ...).

    Args:
        total: the number of items expected, if known.
        desc: the label before the bar.
        unit: what one item is.
        enabled: force the bar on or off (default: on unless ``TRACEDISTILL_PROGRESS=0``).
    """

    def __init__(
        self, total: int | None, desc: str, *, unit: str = "it", enabled: bool | None = None
    ) -> None:
        self._bar: Any = tqdm(
            total=total,
            desc=desc,
            unit=unit,
            disable=not _enabled(enabled),
            dynamic_ncols=True,
            leave=True,
        )

    def advance(self, n: int = 1, **counters: Any) -> None:
        """Move the bar forward by ``n`` and show the given counters."""
        self._bar.update(n)
        if counters:
            self.show(counters)

    def show(self, counters: Mapping[str, Any]) -> None:
        """Show counters after the bar without moving it."""
        self._bar.set_postfix({k: _fmt(v) for k, v in counters.items()}, refresh=False)

    def set_total(self, total: int | None) -> None:
        """Change the expected number of items."""
        self._bar.total = total
        self._bar.refresh()

    def close(self) -> None:
        """Close the bar (idempotent)."""
        self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}"
    return str(value)
